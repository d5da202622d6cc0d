"""AnnData entry points in scanpy's style: ``scaug.tl.augment``, ``scaug.tl.fit``, ``scaug.tl.sample``.

Each takes the data first and keyword-only options after it, reads counts from ``X`` or a layer,
and returns a new object: the AnnData given is never modified.

What :func:`augment` returns, for an input of ``n`` cells and ``m`` synthetic ones:

- the ``n`` original cells first, unchanged, then the ``m`` synthetic cells, type by type;
- the counts for all ``n + m`` cells where they were read from (``X`` or ``layers[layer]``), with
  the input's dtype and sparse format (sparse stays sparse);
- **every other per-cell matrix is dropped**, because scaug cannot derive it for synthetic cells:
  ``X`` when the counts come from a layer (it is ``None`` in the result), the other layers,
  ``obsm``, ``obsp`` and ``raw``. Their names are listed in ``uns["scaug"]["dropped"]``; the real
  cells' values are still in the input. Recompute what you need on the result, e.g.
  ``aug.X = aug.layers["counts"].copy(); sc.pp.normalize_total(aug); sc.pp.log1p(aug)``;
- ``var``, ``varm`` and ``uns`` copied unchanged (gene-level, valid for synthetic cells too);
- ``obs[labels_key]``: the type of every cell (categories kept); ``obs[key_added]``: ``False`` for
  real and ``True`` for synthetic cells; with ``batch_key``, ``obs[batch_key]``: the batch each
  synthetic cell was generated within (categories kept); every other ``obs`` column missing (NA)
  for synthetic cells, with its categories kept (boolean and integer columns become pandas' nullable
  ``boolean`` and ``Int64`` so that they can hold NA);
- unique obs names: synthetic cells are named ``"{key_added}-0"``, ``"{key_added}-1"`` ...
  (prefixed with ``"scaug-"`` while such names are taken);
- ``uns["scaug"]``: the scaug version, the parameters, the cells generated per type and the
  sampling report of :meth:`scaug.SCLD.sample`. The result can be written with ``write_h5ad``.

Cells whose label is missing (NA) in ``obs[labels_key]`` are unlabelled: SCLD learns from them
without a label (as ``-1`` in :meth:`scaug.SCLD.fit`), ``sampling_strategy`` counts only the
labelled cells, and no cell is generated without a type.
"""

from __future__ import annotations

import copy
import os
from numbers import Integral, Real

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["augment", "fit", "sample"]


# -- reading an AnnData --------------------------------------------------------------------------
def counts_of(adata, layer=None, *, stream=False):
    """The matrix scaug reads: ``adata.layers[layer]``, or ``adata.X`` when ``layer`` is None.

    A backed AnnData (``read_h5ad(path, backed="r")``, for files too big for memory) gives a
    :class:`~scaug.OnDiskCells` that streams its file when ``stream`` (what :func:`fit` does),
    and is refused otherwise, with what to do.
    """
    if getattr(adata, "isbacked", False):
        if not stream:
            raise ValueError(
                "adata is backed (opened from disk); this step needs its cells in memory: "
                "adata.to_memory(). To train on a file too big for memory, scaug.tl.fit(adata, "
                "...) streams it, then scaug.tl.sample(model, ...) draws cells.")
        from .train import OnDiskCells

        return OnDiskCells(adata.filename, layer=layer)
    if layer is None:
        if adata.X is None:
            raise ValueError("adata.X is None; pass layer= to name the layer holding the counts.")
        return adata.X
    if layer not in adata.layers:
        raise KeyError(f"layer {layer!r} is not in adata.layers; the layers are "
                       f"{list(adata.layers)}.")
    return adata.layers[layer]


def labels_of(adata, labels_key):
    """``obs[labels_key]`` as an object array, missing labels (NA) turned into -1 (unlabelled)."""
    if labels_key not in adata.obs.columns:
        raise KeyError(f"labels_key {labels_key!r} is not a column of adata.obs; the columns are "
                       f"{list(adata.obs.columns)}.")
    column = adata.obs[labels_key]
    y = column.astype(object).to_numpy(copy=True)
    missing = column.isna().to_numpy()
    y[missing] = -1
    return y, ~missing


def _gene_names(adata):
    return np.asarray(adata.var_names.astype(str), dtype=object)


def _scld():
    from .model import SCLD

    return SCLD


def batch_keys(batch_key) -> list:
    """``batch_key`` as a list of obs columns (a str, or a list of them for several attributes)."""
    if batch_key is None:
        return []
    keys = [batch_key] if isinstance(batch_key, str) else list(batch_key) if isinstance(
        batch_key, list | tuple) else None
    if not keys or not all(isinstance(k, str) and k for k in keys) or len(set(keys)) != len(keys):
        raise ValueError("batch_key must be an obs column name, or a list of distinct ones; got "
                         f"{batch_key!r}.")
    return keys


def conditions_of(adata, batch_key, labels_key=None):
    """``{key: obs[key] values}`` for the batch keys (None without them), checked."""
    keys = batch_keys(batch_key)
    for key in keys:
        if key not in adata.obs.columns:
            raise KeyError(f"batch_key {key!r} is not a column of adata.obs; the columns are "
                           f"{list(adata.obs.columns)}.")
        if key == labels_key:
            raise ValueError(f"batch_key {key!r} is the labels_key; the batch is another "
                             "column (donor, batch, sample).")
    return {k: adata.obs[k].astype(object).to_numpy() for k in keys} if keys else None


def _fit_scld(X, y, names, params, conditions=None):
    return _scld()(**params).fit(X, y, conditions=conditions, feature_names=names)


def fit(adata, labels_key=None, *, batch_key=None, layer=None, **params):
    """Fit an :class:`~scaug.SCLD` on the counts of an AnnData; it remembers ``var_names``.

    Parameters
    ----------
    adata : AnnData
        Cells x genes, integer counts (preferred) or continuous expression in ``X`` or ``layer``.
        A backed AnnData (``anndata.read_h5ad(path, backed="r")``) is streamed from its file
        (:class:`~scaug.OnDiskCells`), never loaded whole.
    labels_key : str or None, default=None
        Column of ``adata.obs`` with the cell types; cells where it is missing (NA) are learned
        from without a label. ``None`` fits a model without labels (holistic synthesis only).
    batch_key : str, list of str or None, default=None
        Column(s) of ``adata.obs`` with the batch, donor or sample of each cell (no missing
        values): the model learns the types within each (``conditions`` of
        :meth:`scaug.SCLD.fit`, named by the columns), and :meth:`~scaug.SCLD.sample` can
        generate a type within a chosen batch.
    layer : str or None, default=None
        Layer holding the counts; ``None`` reads ``X``.
    **params
        Parameters of :class:`~scaug.SCLD` (``random_state``, ``device``, ``max_epochs``,
        ``verbose``, ``autoencoder`` for a pretrained encoder ...).

    Returns
    -------
    model : SCLD
        The fitted model, with ``feature_names_in_`` set to ``adata.var_names``, so that
        :func:`sample` names the genes and a reused model refuses other genes.

    See Also
    --------
    augment : Fit (or reuse) a model and add synthetic cells to an AnnData in one call.

    Examples
    --------
    >>> import scaug
    >>> adata = scaug.datasets.simulate(n_cells=120, n_genes=20, n_types=2, n_markers=5,
    ...                                 random_state=0)
    >>> tiny = dict(n_latent=4, ae_hidden=(16,), width=16, depth=1, diffusion_steps=10,
    ...             max_epochs=1, n_sample_steps=3, verbose=False, random_state=0)
    >>> model = scaug.tl.fit(adata, "cell_type", **tiny)
    >>> list(model.feature_names_in_[:2]) == list(adata.var_names[:2])
    True
    """
    X = counts_of(adata, layer, stream=True)
    y = None if labels_key is None else labels_of(adata, labels_key)[0]
    return _fit_scld(X, y, _gene_names(adata), params, conditions_of(adata, batch_key, labels_key))


# -- the result ----------------------------------------------------------------------------------
def _plain(value):
    """A value that ``write_h5ad`` can store in ``uns`` (None values are left out by the caller)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str | bool | Integral | Real):
        return value
    return repr(value)


def _model_params(model):
    return _plain({k: v for k, v in model.get_params(deep=False).items() if k != "autoencoder"})


def _synthetic_names(key_added, m, taken):
    prefix = str(key_added)
    while True:
        names = pd.Index([f"{prefix}-{i}" for i in range(m)])
        if not names.isin(taken).any():
            return names
        prefix = f"scaug-{prefix}"


def _with_na(column, m):
    """``column`` followed by ``m`` missing values, its dtype (and categories) kept if it can be."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        tail = pd.Categorical.from_codes(np.full(m, -1), dtype=column.dtype)
        return pd.Categorical(np.r_[column.astype(object).to_numpy(), tail.astype(object)],
                              dtype=column.dtype)
    if column.dtype.kind == "b":
        column = column.astype("boolean")
    elif column.dtype.kind in "iu":
        column = column.astype("Int64")
    nullable = isinstance(column.dtype, pd.api.extensions.ExtensionDtype)
    tail = pd.Series([pd.NA if nullable else np.nan] * m, dtype=column.dtype)
    return pd.concat([column.reset_index(drop=True), tail], ignore_index=True).array


def _with_values(column, values):
    """``column`` followed by the synthetic cells' ``values`` (its categories kept, the new
    values added to them)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        new = [v for v in pd.unique(np.asarray(values, dtype=object))
               if v not in set(column.cat.categories)]
        dtype = pd.CategoricalDtype(list(column.cat.categories) + new, ordered=column.cat.ordered)
        return pd.Categorical(np.r_[column.astype(object).to_numpy(), values], dtype=dtype)
    joined = pd.Series(np.r_[column.to_numpy(dtype=object), np.asarray(values, dtype=object)])
    try:
        return joined.astype(column.dtype).array
    except (TypeError, ValueError):
        return joined.array


def _stack_obs(obs, y_syn, labels_key, key_added, names, batches=None):
    m = len(names)
    batches = {} if batches is None else batches
    data = {col: _with_na(obs[col], m) for col in obs.columns
            if col not in (labels_key, key_added, *batches)}
    for col, values in batches.items():
        data[col] = _with_values(obs[col], values)
    data[labels_key] = _with_values(obs[labels_key], y_syn)
    data[key_added] = np.r_[np.zeros(len(obs), dtype=bool), np.ones(m, dtype=bool)]
    out = pd.DataFrame(data, index=obs.index.append(names))
    return out[[c for c in obs.columns if c != key_added] + [key_added]]


def _report(model):
    return {str(k): dict(v) for k, v in getattr(model, "sampling_report_", {}).items()}


def augment(adata, labels_key, *, batch_key=None, layer=None, sampling_strategy="auto", model=None,
            key_added="synthetic", condition_spread="proportional", condition_scales=None,
            random_state=None, device="auto", verbose=True, **params):
    """Add synthetic cells of the rare types to an AnnData, as an imbalanced-learn sampler would.

    Fits an :class:`~scaug.SCLD` on the cells (or reuses ``model``), generates the cells that
    ``sampling_strategy`` asks for and returns a new AnnData of the original cells followed by
    the synthetic ones. What the result holds, and which matrices are dropped because they
    cannot be derived for synthetic cells, is listed in :mod:`scaug.tl`.

    Parameters
    ----------
    adata : AnnData
        Cells x genes; integer counts in ``X`` or ``layer``. Never modified.
    labels_key : str
        Column of ``adata.obs`` with the cell types. Cells where it is missing (NA) are
        unlabelled: a new model learns from them, and they are not counted or generated.
    batch_key : str, list of str or None, default=None
        Column(s) of ``adata.obs`` with the batch, donor or sample of each cell. A new model
        learns the types within each batch (see :func:`fit`); each synthetic cell is generated
        within a batch, spread as ``condition_spread`` says, and gets it in
        ``obs[batch_key]``. A reused model must have been fitted with these columns.
        ``None``: the synthetic cells are an average over batches, and their
        ``obs[batch_key]`` missing.
    layer : str or None, default=None
        Layer holding the counts, which also receives the synthetic counts; ``None``: ``X``.
    sampling_strategy : str, float, dict or callable, default="auto"
        As in imbalanced-learn: ``"auto"`` / ``"not majority"``, ``"minority"``,
        ``"not minority"``, ``"all"`` bring those types up to the size of the largest; a dict
        ``{type: n}`` gives the number of cells of each type *after* augmentation; a callable
        takes the labels and returns such a dict.
    model : None, SCLD, CellAutoencoder or path, default=None
        ``None`` fits a new SCLD on ``adata`` (``**params`` configure it). A fitted SCLD, or
        the path of a saved one, is reused without training; it must know ``adata``'s genes
        and the types to generate. A fitted CellAutoencoder (or the path of a saved one) is a
        pretrained encoder for the new SCLD.
    key_added : str, default="synthetic"
        ``obs`` column marking synthetic cells (True) and real ones (False); also the prefix of
        the synthetic cells' obs names.
    condition_spread : {"proportional", "uniform"} or callable, default="proportional"
        With ``batch_key``: ``"proportional"`` spreads a type's synthetic cells over the batches
        of its real cells in their proportions (the batch make-up of the type is kept);
        ``"uniform"`` equally over every batch of ``adata``; a callable ``rule(type, counts)``
        returns weights over the batches (see :func:`scaug.sampling.spread_request`).
    condition_scales : dict or None, default=None
        With ``batch_key``: guidance weight of each batch key (see :meth:`scaug.SCLD.sample`);
        ``None`` is 1 for all (exact sampling of the type within the batch).
    random_state : int, RandomState instance or None, default=None
        Seeds training and sampling; the same seed gives the same cells on the CPU.
    device : {"auto", "cpu", "cuda", "cuda:N"}, default="auto"
        Where a new or loaded model runs.
    verbose : bool, default=True
        Progress bars while training and sampling.
    **params
        For a new model, parameters of :class:`~scaug.SCLD` (e.g. ``max_epochs``,
        ``n_latent``). For a reused one, only the sampling options ``guidance_scale``,
        ``classifier_scale``, ``refinement``, ``screening``, ``screening_threshold``,
        ``n_sample_steps`` and ``sampler``.

    Returns
    -------
    AnnData
        The original cells, then the synthetic ones; see :mod:`scaug.tl` for what it holds.

    See Also
    --------
    scaug.SCLDOverSampler : The same augmentation on arrays, inside scikit-learn pipelines.
    scaug.pl.real_vs_synthetic : Plot real and synthetic cells of chosen types.

    Examples
    --------
    >>> import scaug
    >>> adata = scaug.datasets.simulate(n_cells=120, n_genes=20, n_types=2, n_markers=5,
    ...                                 rare_sizes=(10,), random_state=0)
    >>> tiny = dict(n_latent=4, ae_hidden=(16,), width=16, depth=1, diffusion_steps=10,
    ...             max_epochs=1, n_sample_steps=3)
    >>> aug = scaug.tl.augment(adata, "cell_type", sampling_strategy={"type_1": 30},
    ...                        random_state=0, verbose=False, **tiny)
    >>> aug.n_obs - adata.n_obs, int(aug.obs["synthetic"].sum())
    (20, 20)
    >>> aug.obs.loc[aug.obs["synthetic"], "cell_type"].unique().tolist()
    ['type_1']

    Within batches, keeping each type's batch make-up:

    >>> batched = scaug.datasets.simulate(n_cells=120, n_genes=20, n_types=2, n_markers=5,
    ...                                   rare_sizes=(10,), n_batches=2, random_state=0)
    >>> aug = scaug.tl.augment(batched, "cell_type", batch_key="batch",
    ...                        sampling_strategy={"type_1": 30}, random_state=0, verbose=False,
    ...                        **tiny)
    >>> real = ~aug.obs["synthetic"] & (aug.obs["cell_type"] == "type_1")
    >>> aug.obs.loc[real, "batch"].value_counts().sort_index().tolist()
    [3, 7]
    >>> aug.obs.loc[aug.obs["synthetic"], "batch"].value_counts().sort_index().tolist()
    [6, 14]
    """
    from ._version import __version__

    if not isinstance(key_added, str) or not key_added or key_added == labels_key:
        raise ValueError(f"key_added must be a non-empty column name other than labels_key; got "
                         f"{key_added!r}.")
    X = counts_of(adata, layer)
    y, _ = labels_of(adata, labels_key)
    conditions = conditions_of(adata, batch_key, labels_key)
    if conditions is not None and key_added in conditions:
        raise ValueError(f"key_added {key_added!r} is a batch_key; name the synthetic-cell "
                         "marker otherwise.")
    source, model, reused = _model_source(model, device)
    sampler = _oversampler(model, reused, params, sampling_strategy=sampling_strategy,
                           random_state=random_state, device=device, verbose=verbose,
                           condition_spread=condition_spread, condition_scales=condition_scales)
    # the core validates, resolves the request, fits or reuses the model and draws the cells
    X_res, y_res = sampler.resample(X, y, conditions=conditions, feature_names=_gene_names(adata))
    y_syn = np.asarray(y_res[adata.n_obs:], dtype=object)
    model = sampler.model_
    spread = sampler.synthetic_conditions_

    import anndata as ad

    names = _synthetic_names(key_added, len(y_syn), adata.obs_names)
    dropped = ([] if layer is None else ["X"]) + [f"layers/{k}" for k in adata.layers if k != layer]
    dropped += [f"obsm/{k}" for k in adata.obsm] + [f"obsp/{k}" for k in adata.obsp]
    dropped += ["raw"] if adata.raw is not None else []
    uns = copy.deepcopy(dict(adata.uns))
    uns["scaug"] = _plain({
        "version": __version__,
        "params": {"labels_key": labels_key, "batch_key": batch_key, "layer": layer,
                   "key_added": key_added,
                   "condition_spread": (condition_spread if not callable(condition_spread)
                                        else getattr(condition_spread, "__name__", "callable")),
                   "condition_scales": condition_scales,
                   "sampling_strategy": (sampling_strategy if not callable(sampling_strategy)
                                         else getattr(sampling_strategy, "__name__", "callable")),
                   "random_state": random_state if isinstance(random_state, Integral) else None,
                   "model": source,
                   "scld": None if model is None else _model_params(model)},
        "n_synthetic": len(y_syn),
        "n_generated": {c: int(n) for c, n in sampler.sampling_strategy_.items() if n > 0},
        "sampling_report": sampler.sampling_report_,
        "dropped": dropped,
    })
    return ad.AnnData(
        X=None if layer is not None else X_res,
        obs=_stack_obs(adata.obs, y_syn, labels_key, key_added, names,
                       None if spread is None else {k: spread[k].to_numpy() for k in spread}),
        var=adata.var.copy(),
        varm={k: np.array(v, copy=True) if not sp.issparse(v) else v.copy()
              for k, v in adata.varm.items()},
        uns=uns,
        layers=None if layer is None else {layer: X_res},
    )


def _model_source(model, device):
    """How ``uns["scaug"]`` names the model, the model (a saved file read once, its saved class
    deciding what it is) and whether it is an SCLD reused as it is."""
    from .autoencoder import CellAutoencoder

    if model is None:
        return "new", None, False
    if isinstance(model, str | os.PathLike):
        from .io import load

        source, model = os.fspath(model), load(model, device)
    elif isinstance(model, CellAutoencoder):
        source = "given CellAutoencoder"
    else:
        source = "given SCLD"  # or anything else: the core says what is wrong
    return source, model, isinstance(model, _scld())


def _oversampler(model, reused, params, **settings):
    """The SCLDOverSampler that ``augment``'s flat ``**params`` describe: sampling options as
    its own settings, the other SCLD parameters as ``scld_params`` (a reused SCLD takes none)."""
    from .oversampler import SAMPLING_OPTIONS, SCLDOverSampler

    own = {k: v for k, v in params.items() if k in (*SAMPLING_OPTIONS, "max_epochs")}
    rest = {k: v for k, v in params.items() if k not in own}
    if reused and (rest or "max_epochs" in own):
        extra = sorted([*rest, *(["max_epochs"] if "max_epochs" in own else [])])
        raise ValueError(f"A reused model is not trained again, so {extra} cannot apply; only "
                         f"the sampling options {list(SAMPLING_OPTIONS)} can.")
    return SCLDOverSampler(model=model, scld_params=rest or None, **own, **settings)


def sample(model, n, *, conditions=None, random_state=None, labels_key="cell_type",
           key_added="synthetic", device="auto", **options):
    """Synthesize cells with a fitted SCLD and return them as an AnnData named by its genes.

    Parameters
    ----------
    model : SCLD or path
        A fitted model (from :func:`fit` it knows the gene names) or the path of a saved one.
    n : dict or int
        ``{cell type: number of cells}`` (pre-guidance), or an int: that many cells in the
        training proportions of the types.
    conditions : dict or None, default=None
        For a model fitted with ``batch_key``: ``{key: batch}`` generates the cells within that
        batch (or one value per cell; see :meth:`scaug.SCLD.sample`); each such key becomes
        an ``obs`` column (categorical, the model's values as categories).
    random_state : int, RandomState instance or None, default=None
        Seeds the sampling; ``None`` falls back to the model's ``random_state``.
    labels_key : str, default="cell_type"
        ``obs`` column receiving each cell's type (categorical, categories ``model.classes_``);
        absent when the model was fitted without labels.
    key_added : str, default="synthetic"
        ``obs`` column set to True for every cell (so that the result can be concatenated with
        real cells), and the prefix of the obs names ``"{key_added}-0"``, ...
    device : {"auto", "cpu", "cuda", "cuda:N"}, default="auto"
        Where a model read from a path samples.
    **options
        Sampling options of :meth:`scaug.SCLD.sample` (``guidance_scale``, ``classifier_scale``,
        ``screening``, ``n_sample_steps`` ...).

    Returns
    -------
    AnnData
        The synthetic cells in ``X`` (integer counts if the model was trained on counts; CSR if
        it was trained on sparse data), ``var_names`` the model's genes (``"0"``, ``"1"``, ...
        when it knows none), and the parameters, the sampling report and the scaug version in
        ``uns["scaug"]``.

    Examples
    --------
    >>> import scaug
    >>> adata = scaug.datasets.simulate(n_cells=120, n_genes=20, n_types=2, n_markers=5,
    ...                                 rare_sizes=(10,), random_state=0)
    >>> model = scaug.tl.fit(adata, "cell_type", n_latent=4, ae_hidden=(16,), width=16, depth=1,
    ...                      diffusion_steps=10, max_epochs=1, n_sample_steps=3, verbose=False)
    >>> syn = scaug.tl.sample(model, {"type_1": 5}, random_state=0)
    >>> syn.shape, syn.obs["cell_type"].tolist()[0], syn.var_names.equals(adata.var_names)
    ((5, 20), 'type_1', True)
    """
    from ._version import __version__

    if isinstance(model, str | os.PathLike):
        model = _scld().load(model, device=device)
    X_syn, y_syn = model.sample(n, conditions=conditions, random_state=random_state, **options)
    import anndata as ad

    m = X_syn.shape[0]
    names = getattr(model, "feature_names_in_", None)
    var = pd.DataFrame(index=pd.Index(
        [str(g) for g in (names if names is not None else range(model.n_features_in_))]))
    obs = pd.DataFrame(index=pd.Index([f"{key_added}-{i}" for i in range(m)]))
    if y_syn is not None:
        obs[labels_key] = pd.Categorical(y_syn, categories=model.classes_)
    for key in conditions or {}:
        obs[key] = pd.Categorical(model.sample_conditions_[key].to_numpy(),
                                  categories=model.conditions_[key])
    obs[key_added] = np.ones(m, dtype=bool)
    uns = {"scaug": _plain({
        "version": __version__,
        "params": {"n": n if isinstance(n, dict) else int(n), "labels_key": labels_key,
                   "conditions": {k: v if np.ndim(v) == 0 else "one value per cell"
                                  for k, v in (conditions or {}).items()},
                   "key_added": key_added, "options": options,
                   "random_state": random_state if isinstance(random_state, Integral) else None,
                   "scld": _model_params(model)},
        "n_synthetic": m,
        "sampling_report": _report(model),
    })}
    return ad.AnnData(X=X_syn, obs=obs, var=var, uns=uns)


# -- evaluate: will augmentation help a classifier on this data? --------------------------------------
def evaluate(adata, labels_key, *, layer=None, classifier="xgboost", rare=3, types=None, cap=None,
             seeds=5, samplers=None, random_state=0, verbose=True, test_size=0.3,
             sampling_strategy="auto", sampler_params=None, realism=True, device="auto", n_jobs=1,
             estimate=False):
    """Will augmentation help my classifier? Run scaug's protocol on an AnnData's counts.

    Per seed: a stratified split holds out ``test_size`` of every type; the chosen rare types
    keep at most ``cap`` training cells; each sampler augments the training split only; the
    classifier learns from log-normalised cells and is scored on the held-out real cells. The
    protocol is that of scaug's downstream benchmark (:mod:`scaug.evaluation` describes it in
    full). Turn the result into an answer with :func:`scaug.evaluation.verdict` or
    :func:`scaug.evaluation.report`.

    Every check runs before any model is fitted: unknown key, layer, types, samplers or
    classifier; only one class; non-count data (the protocol log-normalises counts, and the
    count samplers model them); a chosen type too small to keep 1 held-out and 2 training cells.

    Parameters
    ----------
    adata : AnnData
        Cells x genes; integer counts in ``X`` or ``layers[layer]``. Never modified.
    labels_key : str
        ``obs`` column with the cell types; cells with a missing label are left out.
    layer : str or None, default=None
        Layer holding the counts; None reads ``X``.
    classifier : str, path, estimator or callable, default="xgboost"
        ``"xgboost"``, ``"logreg"`` (logistic regression), ``"rf"`` (random forest) or ``"knn"``
        (5 nearest neighbours); the path of a Python file defining
        ``make_classifier(random_state)`` (or a ``classifier`` estimator) that returns an
        unfitted scikit-learn classifier; a scikit-learn classifier (cloned per seed, its
        ``random_state`` set to the seed); or a callable ``f(random_state)``. It is fitted on
        labels encoded ``0 .. K-1`` and log-normalised cells (CSR when the counts are sparse).
    rare : int, default=3
        Focus on the ``rare`` rarest types (ties broken by name).
    types : list of str or None, default=None
        Focus on these types instead of the rarest.
    cap : int or None, default=None
        Keep at most ``cap`` training cells of each chosen type (at least 2), to see what
        augmentation does for a type with a handful of cells; None keeps them all.
    seeds : int or list of int, default=5
        Number of splits (seeds ``random_state``, ``random_state + 1``, ...) or the seeds
        themselves. Intervals need at least 2; 5 give useful ones.
    samplers : list of str or None, default=None
        Names from :data:`scaug.evaluation.SAMPLERS`: ``"none"``, ``"RandomOverSampler"``,
        ``"SMOTE"``, ``"BorderlineSMOTE"``, ``"ADASYN"``, ``"LatentOverSampler"``,
        ``"SCLDOverSampler"``, ``"scVI"``. None runs them all (scVI only when scvi-tools is
        installed; a note says when it is left out). ``"none"`` is always added: it is the
        baseline of every comparison.
    random_state : int, default=0
        The first seed when ``seeds`` is a number; the same call gives the same scores.
    verbose : bool, default=True
        A progress bar and the time estimate after the first split, on stderr.
    test_size : float, default=0.3
        Fraction of every type held out.
    sampling_strategy : {"auto", "rare"}, default="auto"
        Raise every type (``"auto"``, imbalanced-learn's default) or only the chosen types
        (``"rare"``) to the size of the largest training type.
    sampler_params : dict or None, default=None
        ``{sampler name: keyword arguments}`` for a sampler's constructor (for ``"scVI"``:
        ``{"model": {...}, "train": {...}}``), and ``"autoencoder"``: the
        :class:`~scaug.CellAutoencoder` settings of the autoencoder fitted once per split that
        ``LatentOverSampler`` and ``SCLDOverSampler`` decode through.
        :data:`scaug.evaluation.QUICK` holds tiny models for a smoke test.
    realism : bool, default=True
        Score the realism of the synthetic rare cells (a classifier two-sample AUC against the
        held-out real cells of each type, :func:`scaug.metrics.c2st_auc`).
    device : {"auto", "cpu", "cuda", "cuda:N"}, default="auto"
        Where scaug's and scVI's models train.
    n_jobs : int, default=1
        Threads of XGBoost and the random forest.
    estimate : bool, default=False
        Print the time estimate after the first split even when ``verbose=False``.

    Returns
    -------
    DataFrame
        One row per seed and sampler (``seeds x samplers`` rows, in that order), the metrics as
        columns, as pandas users aggregate them (``res.groupby("sampler")["rare_f1"].mean()``):
        ``seed``, ``sampler``, ``status`` (``"ok"``, ``"skipped"`` or ``"failed"``), ``note`` (why),
        ``rare_f1`` (the mean F1 of the chosen types), ``macro_f1``, ``balanced_accuracy``,
        ``realism_auc`` (0.5: indistinguishable from held-out real cells; NaN without synthetic
        rare cells, or when no chosen type has 5 held-out cells), ``augment_s`` (fit and
        sampling seconds), ``classify_s``, ``n_train``, ``n_synthetic``.
        ``attrs["scaug_evaluate"]`` holds the settings, the chosen types and their counts, the
        per-type F1, notes and the coordinates of the figure's embedding.

    See Also
    --------
    scaug.evaluation.verdict : Which sampler to use, if any.
    scaug.evaluation.report : The answer as markdown, with figures.

    Examples
    --------
    >>> import scaug
    >>> from scaug.evaluation import verdict
    >>> adata = scaug.datasets.simulate(n_cells=300, n_genes=40, n_types=3, n_markers=5,
    ...                                 rare_sizes=(20,), random_state=0)
    >>> res = scaug.tl.evaluate(adata, "cell_type", classifier="logreg", rare=1, cap=8, seeds=3,
    ...                         samplers=["none", "RandomOverSampler", "SMOTE"], verbose=False)
    >>> res[["seed", "sampler", "status"]].head(3)
       seed            sampler status
    0     0               none     ok
    1     0  RandomOverSampler     ok
    2     0              SMOTE     ok
    >>> verdict(res)["answer"] in ("use", "none of them", "no difference shown")
    True

    Every sampler with scaug's default models takes minutes per seed on a CPU (not run here):

    >>> res = scaug.tl.evaluate(adata, "cell_type", seeds=5)  # doctest: +SKIP
    >>> print(scaug.evaluation.report(res, "evaluate-report/"))  # doctest: +SKIP
    """
    from . import evaluation

    X = counts_of(adata, layer)
    y, labelled = labels_of(adata, labels_key)
    y = np.asarray(y, dtype=object)
    y[~labelled] = None
    return evaluation.evaluate(X, y, classifier=classifier, rare=rare, types=types, cap=cap,
                               seeds=seeds, samplers=samplers, test_size=test_size,
                               sampling_strategy=sampling_strategy, sampler_params=sampler_params,
                               realism=realism, random_state=random_state, device=device,
                               n_jobs=n_jobs, estimate=estimate, verbose=verbose)


__all__ += ["evaluate"]
