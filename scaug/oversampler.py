"""SCLDOverSampler: rare-cell augmentation with SCLD, as an imbalanced-learn over-sampler."""

from __future__ import annotations

import os
from collections.abc import Mapping
from numbers import Integral, Real

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from imblearn.over_sampling.base import BaseOverSampler
from imblearn.utils import check_sampling_strategy
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted

from . import _utils, sampling
from .autoencoder import CellAutoencoder
from .diffusion import SAMPLERS
from .io import load
from .model import SCLD

try:  # scikit-learn >= 1.6
    from sklearn.frozen import FrozenEstimator
except ImportError:  # pragma: no cover - older scikit-learn
    FrozenEstimator = None

#: SCLD parameters that SCLDOverSampler sets itself; scld_params may not repeat them
_OWN_PARAMS = ("autoencoder", "max_epochs", "device", "random_state", "verbose", "guidance_scale",
               "classifier_scale", "screening", "n_sample_steps", "sampler")


def check_resample_input(sampler, X, y) -> None:
    """What imbalanced-learn would only fail on deep inside (or not at all), refused up front.

    The sampler's own parameters are checked whatever scikit-learn's nested-validation setting;
    ``X`` and ``y`` must be given, and numeric ``X`` must fit float32 (what the model computes
    in); labels mixing strings with -1 and a callable ``sampling_strategy`` that returns anything
    but a mapping are refused with what to do.
    """
    _utils.validate_params(sampler)
    for name, value in (("X", X), ("y", y)):
        if value is None:
            raise ValueError(f"{name} is None; fit_resample needs the cells X and their class "
                             "labels y (one per cell).")
    labels = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y)
    if labels.ndim == 0:
        raise ValueError(f"y must be a 1-D array of class labels, one per cell; got the scalar "
                         f"{labels!r}.")
    if labels.ndim == 1:  # missing or continuous labels, and strings mixed with numbers
        labels = _utils.check_labels(labels, len(labels))
        _utils.check_sortable(labels[~_utils.unlabelled_mask(labels)])
    if labels.dtype == object and _utils.unlabelled_mask(labels).any() and any(
            isinstance(v, str) for v in labels):
        raise ValueError("y mixes string class labels with -1 for unlabelled cells. Encode "
                         "the labelled cells' classes as integers (LabelEncoder) and keep -1 "
                         "for the unlabelled ones, as scikit-learn's semi-supervised "
                         "estimators require.")
    strategy = sampler.sampling_strategy
    if isinstance(strategy, bool | np.bool_):
        raise TypeError(f"sampling_strategy={strategy!r} is a bool; give a float ratio (binary "
                        "classes), 'auto', 'minority', 'not majority', 'all', a dict {class: "
                        "cells after resampling} or a callable returning one.")
    if callable(strategy):
        request = strategy(labels)
        if not isinstance(request, Mapping):
            raise TypeError(f"sampling_strategy is a callable that returned a "
                            f"{type(request).__name__}; it must return a dict "
                            "{class: number of cells after resampling}.")
    labelled = labels[~_utils.unlabelled_mask(labels)] if labels.ndim == 1 else labels
    try:  # imbalanced-learn's own check, whose messages do not always name the parameter
        check_sampling_strategy(strategy, labelled, "over-sampling")
    except ValueError as err:
        if "sampling_strategy" in str(err):
            raise
        raise ValueError(f"sampling_strategy={strategy!r}: {err}") from None
    if not sp.issparse(X) and not hasattr(X, "dtypes"):
        values = np.asarray(X) if not isinstance(X, np.ndarray) else X
        if values.dtype.kind in "fiu":
            _utils.check_float32_range(values, "X")
    elif sp.issparse(X) and X.dtype.kind in "fiu":
        _utils.check_float32_range(X.data, "X")


def labelled_request(sampler, y) -> dict:
    """``{class: cells to generate}`` of an over-sampler, -1 (unlabelled) being no class.

    Sets ``sampler.sampling_strategy_`` from the labelled cells only when some are unlabelled,
    and refuses a strategy that asks for part of a cell (never truncated).
    """
    unlabelled = _utils.unlabelled_mask(np.asarray(y))
    if unlabelled.any():
        sampler.sampling_strategy_ = check_sampling_strategy(
            sampler.sampling_strategy, y[~unlabelled], sampler._sampling_type)
    fractional = {c: n for c, n in sampler.sampling_strategy_.items() if not float(n).is_integer()}
    if fractional:
        raise ValueError(f"sampling_strategy asks for a number of cells that is not whole "
                         f"({fractional} to generate); give whole numbers of cells per class.")
    return {c: int(n) for c, n in sampler.sampling_strategy_.items() if n > 0}


class SCLDOverSampler(BaseOverSampler):
    """Over-sample rare cell types with cells synthesized by SCLD (single-cell latent diffusion).

    A drop-in imbalanced-learn sampler: ``fit_resample(X, y)`` returns the original cells followed
    by synthetic cells of the classes that ``sampling_strategy`` asks for, generated by a
    :class:`scaug.SCLD` model conditioned on the cell type (pre-guidance) and steered and screened
    by its latent classifier (post-guidance). The model is fitted on the cells given to
    ``fit_resample`` (so inside a cross-validation it only sees the training folds), or an already
    fitted model is reused.

    Integer counts give integer counts and continuous input (e.g. log-normalised) gives
    continuous output: SCLD detects which and picks its likelihood. Put the normalisation
    *after* the sampler in the pipeline when you start from counts.

    Cells labelled ``-1`` are unlabelled (scikit-learn's semi-supervised convention, as for
    :class:`~sklearn.semi_supervised.SelfTrainingClassifier`, with integer labels): a new model
    learns from them without a label (see :meth:`SCLD.fit`), ``sampling_strategy`` counts only
    the labelled cells, and they are returned unchanged, never oversampled.

    Parameters
    ----------
    sampling_strategy : float, str, dict or callable, default='auto'
        Sampling information to resample the data set.

        - When ``float``, it corresponds to the desired ratio of the number of samples in the
          minority class over the number of samples in the majority class after resampling
          (binary classification only).
        - When ``str``, the classes to resample, each brought up to the size of the majority
          class: ``'minority'``, ``'not minority'``, ``'not majority'``, ``'all'``, or
          ``'auto'`` (same as ``'not majority'``).
        - When ``dict``, the keys are the targeted classes and the values the desired number of
          samples of each class after resampling.
        - When callable, a function taking ``y`` and returning such a ``dict``.

    random_state : int, RandomState instance or None, default=None
        Seeds the training of a new model and the sampling. With an int the output is the same
        on every call on the CPU, whatever the container of ``X`` (array, sparse, DataFrame,
        list).
    model : None, SCLD, CellAutoencoder, str or path-like, default=None
        - ``None``: fit a new :class:`~scaug.SCLD` on the data given to ``fit_resample``.
        - A fitted ``SCLD``: reuse it as is (no training); ``X`` must have its genes and the
          classes to generate must be among its ``classes_``. The object is not modified, except
          that sampling sets its ``sampling_report_``.
        - The path of a model saved with :meth:`SCLD.save`: load it (on ``device``) and reuse it.
        - A fitted :class:`~scaug.CellAutoencoder` (or the path of a saved one): train a new SCLD
          on top of it; only the diffusion part is trained, the autoencoder stays frozen. On a
          DataFrame with other gene columns, a copy of it is first adapted to them by name
          (:meth:`CellAutoencoder.adapt`; ``scld_params={"min_gene_overlap": ...}``), and the
          synthetic cells have exactly ``X``'s columns.

        scikit-learn's :func:`~sklearn.base.clone` (used by ``cross_val_score``,
        ``GridSearchCV`` ...) replaces an estimator parameter by an *unfitted* copy; to reuse a
        fitted model there, pass its saved path or wrap it in
        :class:`sklearn.frozen.FrozenEstimator`.
    max_epochs : int or None, default=None
        Caps the epochs of every training stage of a new model; ``None`` uses SCLD's tuned
        defaults (minutes on a CPU for a few thousand cells).
    device : {"auto", "cpu", "cuda", "cuda:N"} or torch.device, default="auto"
        Where a new or loaded model runs; ``"auto"`` uses a GPU when there is one.
    verbose : bool, default=False
        Progress bars while training and sampling. Off by default because a sampler usually runs
        once per fold inside a cross-validation.
    guidance_scale : float, default=1.0
        Classifier-free guidance weight: 1 is plain conditional sampling, above 1 pushes cells
        toward what is typical of their type.
    classifier_scale : float, default=0.0
        Classifier-guidance scale; 0 switches classifier guidance off.
    screening : bool, default=False
        Keep only synthetic cells that the latent classifier assigns to their type and that lie
        near the real cells of the type (redrawing the others).

        The defaults give the most realistic cells measured (``docs/archive/fidelity_10shot.md``);
        ``guidance_scale=2.0, classifier_scale=1.0, screening=True`` give more prototypical
        ones.
    n_sample_steps : int, default=10
        Steps of the diffusion sampler.
    sampler : {"dpm-solver++", "ddim", "ancestral"}, default="dpm-solver++"
        The diffusion sampler (see :class:`~scaug.SCLD`); DDIM needs about 50 steps to match
        DPM-Solver++ at 10.
    scld_params : dict or None, default=None
        Further keyword arguments of a new :class:`~scaug.SCLD` (e.g. ``n_latent``,
        ``ae_hidden``, ``width``, ``depth``, ``diffusion_steps``, ``batch_size``,
        ``screening_threshold``). The parameters above are set through the sampler and may not
        be repeated here. Ignored when a fitted or saved SCLD is reused.
    condition_spread : {"proportional", "uniform"} or callable, default="proportional"
        With ``conditions`` (the batch, donor or sample of each cell, given to
        ``fit_resample``): how a class's synthetic cells are spread over the values.
        ``"proportional"`` keeps the batch make-up of the class: its synthetic cells go to the
        batches (combinations of values) of its real cells, in their proportions.
        ``"uniform"`` spreads them equally over every batch in the data, those without a real
        cell of the class included (SCLD warns about those). A callable ``rule(class, counts)``
        gets the class's real cells per batch (a pandas Series indexed by every batch in the
        data; tuples of values for several attributes) and returns non-negative weights (a
        Series or dict). Numbers are whole (largest remainders, ties to the first batch), see
        :func:`scaug.sampling.spread_request`.

    Attributes
    ----------
    sampling_strategy_ : dict
        The number of samples generated for each class.
    model_ : SCLD or None
        The model that generated the cells: the given one, a loaded one or a newly fitted one.
        ``None`` when there was nothing to generate and no model was given (no model is trained
        for nothing).
    n_synthetic_ : int
        Number of synthetic cells in the last output.
    synthetic_mask_ : ndarray of bool of shape (n_samples_resampled,)
        True for the synthetic rows of the last output (they follow the original rows).
    sampling_report_ : dict
        A copy of ``model_.sampling_report_``: per class, cells requested, candidates drawn,
        accepted, and the acceptance rate of the screening.
    synthetic_conditions_ : DataFrame of shape (n_synthetic, n_attributes) or None
        With ``conditions``: the attribute values each synthetic cell was generated within, in
        the order of the synthetic rows (the original cells keep theirs:
        ``pd.concat([conditions, sampler.synthetic_conditions_], ignore_index=True)`` is aligned
        with the output); each column keeps the dtype of the given one where it can. ``None``
        without ``conditions``.
    n_features_in_ : int
        Number of features (genes) in the input.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during ``fit_resample``. Defined only when `X` has feature names
        that are all strings.

    See Also
    --------
    scaug.SCLD : The generative model; fit it once and pass it as ``model`` to reuse it.
    imblearn.over_sampling.SMOTE : Interpolation between neighbouring cells.

    Notes
    -----
    The output holds all original rows first, unchanged, then the synthetic rows class by class.
    ``X``'s dtype and container are kept: sparse input gives sparse output and is never
    densified whole; a DataFrame gives a DataFrame with the same columns.

    XGBoost's ``XGBClassifier`` needs the labels ``0 .. K-1``: encode them with
    :class:`~sklearn.preprocessing.LabelEncoder` before the pipeline and decode predictions with
    its ``inverse_transform``::

        from imblearn.pipeline import Pipeline
        from sklearn.preprocessing import LabelEncoder
        from xgboost import XGBClassifier
        from scaug.oversampler import SCLDOverSampler
        from scaug.preprocessing import NormalizeLog1p

        encoder = LabelEncoder()
        y_enc = encoder.fit_transform(y)          # cell-type names -> 0 .. K-1
        pipe = Pipeline([("aug", SCLDOverSampler()), ("norm", NormalizeLog1p()),
                         ("clf", XGBClassifier())])
        pipe.fit(X_counts, y_enc)
        cell_types = encoder.inverse_transform(pipe.predict(X_new))

    The sampler only runs while fitting the pipeline; prediction sees real cells only.

    **Batches, donors, samples.** ``fit_resample(X, y, conditions=batches)`` fits SCLD on the
    type *within* each batch and spreads the synthetic cells of a class over the batches as
    ``condition_spread`` says (by default keeping the class's batch make-up), recording them in
    ``synthetic_conditions_``. ``conditions`` is a 1-D array-like (one attribute, named by a
    Series' name, else ``"batch"``; for a reused model of one attribute, that attribute), a
    mapping ``{name: values}`` or a DataFrame with one column per attribute. imbalanced-learn's
    ``fit_resample(X, y)`` carries no such argument through a pipeline, so it travels by
    scikit-learn's metadata routing, which imbalanced-learn's :class:`~imblearn.pipeline.Pipeline`
    supports for samplers::

        import sklearn
        sklearn.set_config(enable_metadata_routing=True)
        sampler = SCLDOverSampler().set_fit_resample_request(conditions=True)
        pipe = Pipeline([("aug", sampler), ("norm", NormalizeLog1p()), ("clf", clf)])
        pipe.fit(X, y, conditions=batches)
        cross_val_score(pipe, X, y, params={"conditions": batches})   # sliced per fold

    Examples
    --------
    >>> from collections import Counter
    >>> from scaug.datasets import simulate
    >>> from scaug.oversampler import SCLDOverSampler
    >>> adata = simulate(n_cells=200, n_genes=30, n_types=3, n_markers=5, rare_sizes=(15,),
    ...                  random_state=0)
    >>> X, y = adata.X, adata.obs["cell_type"].to_numpy()
    >>> sorted(Counter(y).items())
    [('type_0', 93), ('type_1', 92), ('type_2', 15)]

    Small settings keep this example fast; leave them out (``SCLDOverSampler()``) for real use.

    >>> small = dict(max_epochs=2, n_sample_steps=5, screening=False, random_state=0,
    ...              scld_params={"n_latent": 4, "ae_hidden": (32,), "width": 32, "depth": 1})
    >>> sampler = SCLDOverSampler(sampling_strategy={"type_2": 60}, **small)
    >>> X_res, y_res = sampler.fit_resample(X, y)
    >>> sorted(Counter(y_res).items())
    [('type_0', 93), ('type_1', 92), ('type_2', 60)]
    >>> sampler.n_synthetic_, int(sampler.synthetic_mask_.sum())
    (45, 45)

    In a pipeline (labels encoded for classifiers such as XGBoost):

    >>> from imblearn.pipeline import Pipeline
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.preprocessing import LabelEncoder
    >>> from scaug.preprocessing import NormalizeLog1p
    >>> y_enc = LabelEncoder().fit_transform(y)
    >>> pipe = Pipeline([("aug", SCLDOverSampler(**small)), ("norm", NormalizeLog1p()),
    ...                  ("clf", LogisticRegression(max_iter=1000))])
    >>> pipe.fit(X, y_enc).predict(X[:3]).shape
    (3,)

    Keeping the batch make-up of what is added (the batch travels by metadata routing):

    >>> import pandas as pd, sklearn
    >>> batched = simulate(n_cells=200, n_genes=30, n_types=3, n_markers=5, rare_sizes=(15,),
    ...                    n_batches=2, random_state=0)
    >>> Xb, yb = batched.X, batched.obs["cell_type"].to_numpy()
    >>> batch = batched.obs["batch"].to_numpy()
    >>> pd.Series(batch[yb == "type_2"]).value_counts().sort_index().to_dict()
    {'batch_0': 10, 'batch_1': 5}
    >>> sampler = SCLDOverSampler(sampling_strategy={"type_2": 25}, **small)
    >>> _ = sampler.fit_resample(Xb, yb, conditions=batch)
    >>> sampler.synthetic_conditions_["batch"].value_counts().sort_index().to_dict()
    {'batch_0': 7, 'batch_1': 3}
    >>> with sklearn.config_context(enable_metadata_routing=True):
    ...     aug = SCLDOverSampler(**small).set_fit_resample_request(conditions=True)
    ...     pipe = Pipeline([("aug", aug), ("norm", NormalizeLog1p()),
    ...                      ("clf", LogisticRegression(max_iter=1000))])
    ...     pipe = pipe.fit(Xb, LabelEncoder().fit_transform(yb), conditions=batch)
    >>> pipe.named_steps["aug"].model_.conditions_
    {'batch': array(['batch_0', 'batch_1'], dtype=object)}
    """

    _parameter_constraints: dict = {
        **BaseOverSampler._parameter_constraints,
        "model": [None, SCLD, CellAutoencoder, str, os.PathLike]
        + ([FrozenEstimator] if FrozenEstimator is not None else []),
        "max_epochs": [_utils.Interval(Integral, 1, None, closed="left"), None],
        "device": [str, torch.device],
        "verbose": ["boolean"],
        "guidance_scale": [_utils.Interval(Real, 0, None, closed="left")],
        "classifier_scale": [_utils.Interval(Real, 0, None, closed="left")],
        "screening": ["boolean"],
        "n_sample_steps": [_utils.Interval(Integral, 1, None, closed="left")],
        "sampler": [StrOptions(set(SAMPLERS))],
        "scld_params": [dict, None],
        "condition_spread": [StrOptions({"proportional", "uniform"}), callable],
    }

    def __init__(self, *, sampling_strategy="auto", random_state=None, model=None,
                 max_epochs=None, device="auto", verbose=False, guidance_scale=1.0,
                 classifier_scale=0.0, screening=False, n_sample_steps=10, sampler="dpm-solver++",
                 scld_params=None, condition_spread="proportional"):
        super().__init__(sampling_strategy=sampling_strategy)
        self.random_state = random_state
        self.model = model
        self.max_epochs = max_epochs
        self.device = device
        self.verbose = verbose
        self.guidance_scale = guidance_scale
        self.classifier_scale = classifier_scale
        self.screening = screening
        self.n_sample_steps = n_sample_steps
        self.sampler = sampler
        self.scld_params = scld_params
        self.condition_spread = condition_spread

    # -- the model -----------------------------------------------------------------------------
    def _new_scld(self, seed, autoencoder=None) -> SCLD:
        params = {} if self.scld_params is None else dict(self.scld_params)
        repeated = sorted(set(params) & set(_OWN_PARAMS))
        if repeated:
            raise ValueError(f"scld_params may not set {repeated}; set them on SCLDOverSampler "
                             "(or pass a pretrained autoencoder as model).")
        unknown = sorted(set(params) - set(SCLD().get_params()))
        if unknown:
            raise ValueError(f"scld_params has keys {unknown} that are not SCLD parameters; "
                             f"valid ones: {sorted(set(SCLD().get_params()) - set(_OWN_PARAMS))}.")
        # the sampling settings too: a model fitted for post-guidance trains its latent classifier
        model = SCLD(autoencoder=autoencoder, max_epochs=self.max_epochs, device=self.device,
                     random_state=seed, verbose=self.verbose, guidance_scale=self.guidance_scale,
                     classifier_scale=self.classifier_scale, screening=self.screening,
                     n_sample_steps=self.n_sample_steps, sampler=self.sampler, **params)
        try:  # scikit-learn skips nested validation inside fit_resample; scaug does not
            _utils.validate_params(model)
        except ValueError as err:
            raise type(err)(f"scld_params: {err}") from None
        return model

    def _resolve_model(self, X, y, seed, n_generate, conditions=None):
        """The SCLD that will generate cells (fitting or loading it if needed), or None."""
        model = self.model
        if FrozenEstimator is not None and isinstance(model, FrozenEstimator):
            model = model.estimator
        if isinstance(model, str | os.PathLike):
            model = load(model, device=self.device)  # an SCLD or a pretrained autoencoder
        elif isinstance(model, SCLD | CellAutoencoder):
            attr = "denoiser_" if isinstance(model, SCLD) else "module_"
            if not hasattr(model, attr):
                raise ValueError(
                    f"model is an unfitted {type(model).__name__}. Fit it first. Inside "
                    "cross_val_score, GridSearchCV or clone(), scikit-learn replaces an estimator "
                    "parameter by an unfitted copy: pass the path of the saved model instead "
                    "(model.save(path); SCLDOverSampler(model=path)) or wrap it in "
                    "sklearn.frozen.FrozenEstimator. To configure a new SCLD, use scld_params.")
        elif model is not None:
            raise TypeError("model must be None, a fitted SCLD or CellAutoencoder, or the path "
                            f"of a saved one; got {type(model).__name__}.")

        if isinstance(model, SCLD):
            check_is_fitted(model, "denoiser_")
            try:
                model.check_genes(_utils.GeneSignature(X.shape, getattr(self, "feature_names_in_", None)))
            except ValueError as err:
                raise ValueError(f"{err} To reuse its autoencoder on X's genes instead, pass "
                                 "model=<the SCLD>.autoencoder_: a new SCLD is then trained on a "
                                 "copy of it adapted to X's genes (docs/transfer.md).") from err
            if model.classes_ is None:
                raise ValueError("The given SCLD was fitted without labels; it cannot generate "
                                 "cells of chosen classes. Fit it with y.")
            known = {_utils.plain_label(c) for c in model.classes_}
            missing = [c for c in self.sampling_strategy_ if self.sampling_strategy_[c] > 0
                       and _utils.plain_label(c) not in known]
            if missing:
                raise ValueError(f"The given SCLD cannot generate the classes {missing}: it knows "
                                 f"{list(model.classes_)}. Fit it on data with these classes.")
            if model.counts_ and not _utils.is_count_matrix(X):
                raise ValueError("The given SCLD generates integer counts, but X is not integer "
                                 "counts (log-normalised?); reuse a model fitted on data like X.")
            return model
        if n_generate == 0:  # nothing to generate: do not train a model for nothing
            return None
        # the gene names, so that a saved model_ refuses other genes
        return self._new_scld(seed, autoencoder=model).fit(
            X, y, conditions=conditions, feature_names=getattr(self, "feature_names_in_", None))

    # -- resampling ----------------------------------------------------------------------------
    def fit_resample(self, X, y, *, conditions=None):
        """Resample ``X, y``: the original cells, then synthetic cells of the classes to grow.

        Parameters
        ----------
        X : {array-like, dataframe, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Class labels; ``-1`` marks unlabelled cells (integer labels only).
        conditions : array-like, mapping or DataFrame, optional
            The batch (donor, sample ...) of each cell: a 1-D array-like of one attribute, a
            mapping ``{name: values}`` or a DataFrame with one column per attribute. SCLD then
            generates each synthetic cell within a batch, spread as ``condition_spread`` says;
            see ``synthetic_conditions_``. In a pipeline, pass it by metadata routing
            (``set_fit_resample_request(conditions=True)``, see the class's Notes).

        Returns
        -------
        X_resampled, y_resampled
        """
        check_resample_input(self, X, y)
        if not isinstance(self.model, SCLD | str | os.PathLike) and not (
                FrozenEstimator is not None and isinstance(self.model, FrozenEstimator)):
            self._new_scld(0)  # scld_params checked before any work
        if conditions is None:
            return super().fit_resample(X, y)
        return super().fit_resample(X, y, conditions=conditions)

    @staticmethod
    def _conditions(conditions, n_cells):
        """``fit_resample``'s conditions as ``{name: values}``, checked; their dtypes; and
        whether they are one unnamed attribute (named ``"batch"`` until a model says otherwise)."""
        if conditions is None:
            return None, {}, False
        unnamed = False
        if not isinstance(conditions, pd.DataFrame | Mapping):  # one attribute
            name = getattr(conditions, "name", None)
            unnamed = not isinstance(name, str) or not name
            conditions = {"batch" if unnamed else name: conditions}
        dtypes = {k: getattr(v, "dtype", None) for k, v in conditions.items()}
        return sampling.check_conditions(conditions, n_cells), dtypes, unnamed

    def _check_reused_conditions(self, conditions, spread, dtypes, unnamed):
        """The conditions under the reused model's names (one unnamed attribute takes the name
        of a model's only one), or a clear error for names it was not fitted with."""
        known = list(self.model_._condition_values())
        if unnamed and len(known) == 1:
            conditions = {known[0]: conditions.pop("batch")}
            spread = spread.rename(columns={"batch": known[0]})
            dtypes = {known[0]: dtypes.pop("batch")}
        unknown = sorted(set(conditions) - set(known))
        if unknown:
            raise ValueError(f"The given SCLD was not fitted with the conditions {unknown} (it "
                             f"knows {known or 'none'}); fit it with them, or leave them out of "
                             "fit_resample.")
        return conditions, spread, dtypes

    def _fit_resample(self, X, y, conditions=None):
        conditions, dtypes, unnamed = self._conditions(conditions, len(y))
        request = labelled_request(self, y)
        rng = check_random_state(self.random_state)
        fit_seed, sample_seed = (int(s) for s in rng.randint(0, 2**31 - 1, size=2))
        n_generate = sum(request.values())
        spread = None
        if conditions:  # before any training: a bad rule fails at once
            spread = sampling.spread_request(request, y, pd.DataFrame(conditions),
                                             self.condition_spread)
        self.model_ = self._resolve_model(X, y, fit_seed, n_generate, conditions)
        if conditions and self.model_ is not None:
            conditions, spread, dtypes = self._check_reused_conditions(conditions, spread, dtypes,
                                                                       unnamed)

        if n_generate == 0:
            X_new = X[:0]
            y_new = y[:0]
            self.sampling_report_ = {}
        else:
            X_syn, y_syn = self.model_.sample(
                request, random_state=sample_seed, guidance_scale=self.guidance_scale,
                classifier_scale=self.classifier_scale, screening=self.screening,
                n_sample_steps=self.n_sample_steps, sampler=self.sampler,
                conditions=None if spread is None else {k: spread[k].to_numpy() for k in spread})
            self.sampling_report_ = {k: dict(v) for k, v in self.model_.sampling_report_.items()}
            # SCLD returns the classes in the order asked, each as one block
            y_new = np.concatenate([np.full(n, c, dtype=y.dtype) for c, n in request.items()])
            same = (_utils.plain_label(a) == _utils.plain_label(b) for a, b in zip(y_syn, y_new, strict=True))
            if X_syn.shape[0] != len(y_new) or not all(same):
                raise RuntimeError("SCLD returned cells in an unexpected order.")
            if sp.issparse(X):
                X_new = sp.csr_matrix(X_syn, dtype=X.dtype)
            else:
                X_new = X_syn.toarray() if sp.issparse(X_syn) else X_syn
                X_new = np.asarray(X_new, dtype=X.dtype)

        if sp.issparse(X):
            X_res = sp.vstack([X, X_new], format=X.format, dtype=X.dtype)
        else:
            X_res = np.concatenate([X, X_new])
        y_res = np.concatenate([y, y_new])
        self.n_synthetic_ = int(n_generate)
        self.synthetic_mask_ = np.r_[np.zeros(len(y), dtype=bool), np.ones(n_generate, dtype=bool)]
        self.synthetic_conditions_ = None if spread is None else _with_dtypes(spread, dtypes)
        return X_res, y_res


def _with_dtypes(frame, dtypes):
    """``frame``'s columns in the dtypes of the conditions given (categories kept), where the
    values fit them; object columns otherwise."""
    out = frame.copy()
    for name, dtype in dtypes.items():
        if dtype is not None:
            try:
                out[name] = out[name].astype(dtype)
            except (TypeError, ValueError):
                pass  # e.g. a value beyond the given categories: kept as objects
    return out
