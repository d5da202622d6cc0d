"""Sampling, as its own unit: plan a request, draw latents, screen them, decode them into cells.

:class:`scaug.SCLD` owns the fitted networks and calls these in order; nothing here trains.
What a fitted model keeps of its training cells is :class:`TypeSummaries`: per type, quantiles
of the library size and a Gaussian summary of its latents, so a model's size does not grow with
the number of cells it was trained on, and a saved model holds no cell of its training data.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from numbers import Integral

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from sklearn.covariance import LedoitWolf

from . import _utils

#: quantiles kept of each type's library sizes (an empirical distribution in 101 numbers)
N_LIBRARY_QUANTILES = 101


class TypeSummaries:
    """What sampling needs to know of each type's real cells, in a size independent of their number.

    - ``library_quantiles`` (n_types, 101): quantiles of the log library size (counts models);
      a draw is an inverse-CDF draw between them, so synthetic cells get library sizes spread as
      the type's real ones are.
    - ``mean``, ``precision`` (n_types, d[, d]): a shrunk (Ledoit-Wolf) Gaussian of the type's
      standardised latents, and ``radius``: the ``quantile`` of its real cells' Mahalanobis
      distances. Screening accepts a synthetic latent within ``radius`` times a tolerance.
      A type of fewer than 3 cells borrows the covariance of all cells.

    Examples
    --------
    >>> import numpy as np
    >>> from scaug.sampling import TypeSummaries
    >>> rng = np.random.default_rng(0)
    >>> Z, codes = rng.normal(size=(200, 3)), np.repeat([0, 1], 100)
    >>> library = np.where(codes == 0, 1000.0, 5000.0)
    >>> s = TypeSummaries.fit(Z, codes, 2, library=library)
    >>> s.draw_library(np.array([0, 1]), rng)
    array([1000., 5000.], dtype=float32)
    """

    def __init__(self, library_quantiles, mean, precision, radius):
        self.library_quantiles = library_quantiles
        self.mean = mean
        self.precision = precision
        self.radius = radius

    @classmethod
    def fit(cls, Z, codes, n_types: int, library=None, quantile: float = 0.9) -> TypeSummaries:
        d = Z.shape[1]
        overall = LedoitWolf().fit(Z)
        mean = np.zeros((n_types, d))
        precision = np.zeros((n_types, d, d))
        radius = np.zeros(n_types)
        lib_q = None if library is None else np.zeros((n_types, N_LIBRARY_QUANTILES))
        grid = np.linspace(0, 1, N_LIBRARY_QUANTILES)
        for c in range(n_types):
            Zc = Z[codes == c]
            est = LedoitWolf().fit(Zc) if len(Zc) >= 3 else overall
            mean[c] = Zc.mean(0)
            precision[c] = est.precision_
            radius[c] = np.quantile(_mahalanobis(Zc, mean[c], precision[c]), quantile)
            if lib_q is not None:
                lib_q[c] = np.quantile(np.log(np.maximum(library[codes == c], 1.0)), grid)
        return cls(lib_q, mean, precision, radius)

    def draw_library(self, codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Library sizes for cells of the given types, drawn from each type's quantiles."""
        grid = np.linspace(0, 1, N_LIBRARY_QUANTILES)
        out = np.empty(len(codes), dtype=np.float32)
        for c in np.unique(codes):
            where = codes == c
            u = rng.random(int(where.sum()))
            out[where] = np.round(np.exp(np.interp(u, grid, self.library_quantiles[c])))
        return out

    def distance_ratio(self, code: int, Z: np.ndarray) -> np.ndarray:
        """Mahalanobis distance to the type's real latents over its acceptance radius."""
        return _mahalanobis(Z, self.mean[code], self.precision[code]) / self.radius[code]

    def state(self) -> dict:
        def t(a):
            return None if a is None else torch.from_numpy(np.ascontiguousarray(a))

        return {"library_quantiles": t(self.library_quantiles), "mean": t(self.mean),
                "precision": t(self.precision), "radius": t(self.radius)}

    @classmethod
    def from_state(cls, state: dict) -> TypeSummaries:
        def a(v):
            return None if v is None else v.numpy()

        return cls(a(state["library_quantiles"]), a(state["mean"]), a(state["precision"]),
                   a(state["radius"]))


def _mahalanobis(Z, mean, precision):
    diff = np.asarray(Z, dtype=np.float64) - mean
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", diff, precision, diff), 0))


def resolve_request(n, classes, class_counts, rng, max_cells: int):
    """``[(type code, number of cells), ...]`` for a request of :meth:`scaug.SCLD.sample`."""
    def check_count(label, count):
        if not (isinstance(count, Integral) and not isinstance(count, bool) and count >= 0):
            raise ValueError(f"The number of cells for {label!r} must be an int >= 0; got "
                             f"{count!r}.")
        return int(count)

    if isinstance(n, Mapping):
        if classes is None:
            raise ValueError("This SCLD was fitted without labels; ask for an int number of "
                             "cells (holistic synthesis), or fit with y to synthesize types.")
        lookup = {_utils.plain_label(c): i for i, c in enumerate(classes)}
        plan = []
        for label, count in n.items():
            if _utils.plain_label(label) not in lookup:
                raise ValueError(f"Unknown cell type {label!r}; the model knows {list(classes)}.")
            plan.append((lookup[_utils.plain_label(label)], check_count(label, count)))
    elif isinstance(n, Integral) and not isinstance(n, bool) and n >= 0:
        drawn = rng.multinomial(int(n), class_counts / class_counts.sum())
        plan = [(c, int(k)) for c, k in enumerate(drawn)]
    else:
        raise ValueError("n must be an int >= 0 (holistic synthesis) or a mapping {cell type: "
                         f"number of cells}} (pre-guidance); got {n!r}.")
    total = sum(k for _, k in plan)
    if total > max_cells:
        raise ValueError(f"The request asks for {total} cells, more than max_cells={max_cells}; "
                         "raise max_cells to generate that many (time and memory grow with it).")
    return plan


@torch.no_grad()
def draw_latents(diffusion, denoiser, classifier, *, code, n, n_latent, labelled, null, gen,
                 device, guidance_scale, classifier_scale, n_sample_steps, sampler, batch_size,
                 attributes=None, attribute_scales=None):
    """``n`` standardised latents of type ``code`` from the reverse diffusion, batch by batch.

    ``attributes`` (one code per attribute of the denoiser, its null code to marginalise; None
    for a type-only denoiser) conditions every latent on those values, through
    :func:`scaug.diffusion.composed_guidance` with ``guidance_scale`` for the type and
    ``attribute_scales`` for the attributes. The start noise and the ancestral sampler's step
    noise come from the CPU generator ``gen``, so CPU and GPU runs see the same noise.
    """
    from .diffusion import composed_guidance

    out = []
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        noise = torch.randn((m, n_latent), generator=gen).to(device)
        y = torch.full((m,), code if labelled else null, device=device, dtype=torch.long)
        model, scale = denoiser, guidance_scale if labelled else 1.0
        if attributes is not None:
            rows = torch.as_tensor(np.asarray(attributes, dtype=np.int64),
                                   device=device).expand(m, -1)
            model = composed_guidance(denoiser, rows, null_label=null,
                                      attribute_nulls=denoiser.n_values, guidance_scale=scale,
                                      attribute_scales=attribute_scales)
            scale = 1.0  # the wrapper guides; the sampling loop stays plain
        z = diffusion.sample(
            model, y, noise, null_label=null, guidance_scale=scale,
            classifier=classifier if labelled else None, classifier_scale=classifier_scale,
            n_sample_steps=n_sample_steps, method=sampler,
            step_noise=lambda shape: torch.randn(shape, generator=gen))
        out.append(z.cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, n_latent), np.float32)


def refine_latents(diffusion, denoiser, Z, *, strength, null, attributes, gen, device,
                   n_sample_steps, sampler, batch_size=4096):
    """Post-guidance by the unconditional model: ``Z`` (standardised latents) noised to time
    ``strength * T`` and run back to time 0 without their type (SDEdit, Meng et al. 2022).

    The null label's model learned where every training cell lies, the unlabelled ones included;
    what ``strength`` of the noise covers is redrawn toward that, the rest of each latent kept.
    ``attributes`` (one code per attribute, or None) stay as they were drawn. The noise comes
    from the CPU generator ``gen``; the sampler runs ``max(3, ceil(strength * n_sample_steps))``
    steps, ``batch_size`` latents at a time.
    """
    if not 0 < strength < 1:
        raise ValueError(f"strength must be in (0, 1); got {strength!r}.")
    start = max(1, int(round(strength * diffusion.n_steps)))
    steps = max(3, int(np.ceil(strength * n_sample_steps)))
    out = []
    for first in range(0, len(Z), batch_size):
        z0 = torch.as_tensor(Z[first:first + batch_size], device=device)
        m = len(z0)
        t = torch.full((m,), start, device=device, dtype=torch.long)
        z_t = diffusion.q_sample(z0, t, torch.randn((m, z0.shape[1]), generator=gen).to(device))
        y = torch.full((m,), null, device=device, dtype=torch.long)
        if attributes is not None:
            codes = torch.as_tensor(np.asarray(attributes, dtype=np.int64), device=device)
            y = torch.cat([y[:, None], codes.expand(m, -1)], dim=1)
        z = diffusion.sample(denoiser, y, z_t, null_label=null, n_sample_steps=steps,
                             method=sampler, start_step=start,
                             step_noise=lambda shape: torch.randn(shape, generator=gen))
        out.append(z.cpu().numpy())
    return np.concatenate(out) if out else np.asarray(Z, dtype=np.float32)


# -- conditions: donor, batch, sample ... ---------------------------------------------------------
#: column names of :attr:`scaug.SCLD.condition_counts_` that an attribute may not take
RESERVED_CONDITION_NAMES = ("cell_type", "n_cells")


def _is_missing(v) -> bool:
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    try:
        return bool(v != v)  # NaN
    except (TypeError, ValueError):
        return False


def check_conditions(conditions, n_cells: int) -> dict:
    """``{name: 1-D ndarray of n_cells values}`` from a mapping or a DataFrame, checked.

    Refuses (before any work) what :meth:`scaug.SCLD.fit` cannot learn from: names that are not
    non-empty strings or clash with :data:`RESERVED_CONDITION_NAMES`, values of another length,
    missing values, values mixing strings and numbers, and columns that are not 1-D.
    """
    if conditions is None:
        return {}
    if isinstance(conditions, pd.DataFrame):
        items = [(c, conditions[c]) for c in conditions.columns]
        if conditions.columns.duplicated().any():
            raise ValueError("conditions has duplicate column names; give each attribute one "
                             "column.")
    elif isinstance(conditions, Mapping):
        items = list(conditions.items())
    else:
        raise TypeError("conditions must be a mapping {name: one value per cell} or a pandas "
                        "DataFrame with one column per attribute (e.g. {'batch': batches} or "
                        f"adata.obs[['donor']]); got {type(conditions).__name__}.")
    out = {}
    for name, values in items:
        if not isinstance(name, str) or not name:
            raise ValueError(f"conditions names must be non-empty strings; got {name!r}.")
        if name in RESERVED_CONDITION_NAMES:
            raise ValueError(f"conditions may not be named {name!r} (reserved for "
                             "condition_counts_: the type is y, not a condition); rename it.")
        if isinstance(values, pd.Series | pd.Index | pd.Categorical):
            values = np.asarray(values.astype(object))
        else:
            values = np.asarray(values)
        if values.ndim != 1 or len(values) != n_cells:
            raise ValueError(f"conditions[{name!r}] must be 1-D with one value per cell of X "
                             f"({n_cells}); got shape {values.shape}.")
        if values.dtype.kind == "f" and np.isnan(values).any() or values.dtype == object and any(
                _is_missing(v) for v in values):
            raise ValueError(f"conditions[{name!r}] has missing values (NaN/None/NA); every cell "
                             "needs a value (give the cells without one a value of their own, "
                             "e.g. 'unknown', or drop them).")
        if values.dtype == object:
            kinds = {isinstance(v, str) for v in values}
            if len(kinds) > 1:
                raise ValueError(f"conditions[{name!r}] mixes strings with other values; give "
                                 "the values of one kind, e.g. values.astype(str).")
        out[name] = values
    return out


def resolve_conditions(conditions, values: dict, n_total: int, *, per_cell: bool) -> np.ndarray:
    """Per requested cell, the code of each attribute (its null code when marginalised).

    ``conditions`` maps attribute names to a value for every cell (a scalar), or to an
    array-like with one value per requested cell (``per_cell``: only where the order of the
    cells is known); ``None`` (as the value, or an entry of the array) marginalises the
    attribute for those cells. Attributes not named are marginalised.
    """
    names = list(values)
    codes = np.array([[len(values[k]) for k in names]] * n_total, dtype=np.int64).reshape(
        n_total, len(names))
    if conditions is None:
        return codes
    if not isinstance(conditions, Mapping):
        raise TypeError("conditions must be a mapping {attribute: value or one value per "
                        f"requested cell}}; got {type(conditions).__name__}.")
    for name, given in conditions.items():
        if name not in values:
            known = names or "none: it was fitted without conditions"
            raise ValueError(f"Unknown condition {name!r}; the model knows {known}.")
        j = names.index(name)
        lookup = {_utils.plain_label(v): i for i, v in enumerate(values[name])}
        if isinstance(given, pd.Series | pd.Index | pd.Categorical):
            given = np.asarray(given.astype(object))
        if np.ndim(given) == 0:
            entries = None if _is_missing(given) else [given]
        else:
            given = np.asarray(given, dtype=object)
            if not per_cell:
                raise ValueError(f"conditions[{name!r}] is an array, but the order of the cells "
                                 "is known only for a request {cell type: number}; give one "
                                 "value for every cell, or ask per type.")
            if given.ndim != 1 or len(given) != n_total:
                raise ValueError(f"conditions[{name!r}] must be one value, or one per requested "
                                 f"cell ({n_total}, in the order of the request); got shape "
                                 f"{given.shape}.")
            entries = list(given)
        if entries is None:
            continue
        column = []
        for v in entries:
            if _is_missing(v):
                column.append(len(values[name]))
                continue
            key = _utils.plain_label(v)
            if key not in lookup:
                raise ValueError(f"Unknown value {v!r} of condition {name!r}; the model was "
                                 f"trained on {list(values[name])}.")
            column.append(lookup[key])
        codes[:, j] = column if len(column) == n_total else column[0]
    return codes


def spread_request(request: dict, labels, frame: pd.DataFrame, rule="proportional") -> pd.DataFrame:
    """The condition values of each cell of ``request``, spread over the values of ``frame``.

    Parameters
    ----------
    request : dict
        ``{cell type: number of cells}``; the cells come type by type, in this order.
    labels : array-like of shape (n_cells,)
        The type of each real cell.
    frame : DataFrame of shape (n_cells, n_attributes)
        The attribute values of each real cell (one column per attribute).
    rule : {"proportional", "uniform"} or callable, default="proportional"
        ``"proportional"``: a type's cells go to the combinations of values of its real cells,
        in their proportions (a type absent from a batch gets none there). ``"uniform"``:
        equally to every combination present in ``frame`` (absent ones included: SCLD warns
        about them). A callable ``rule(cell_type, counts)`` gets the type's real cells per
        combination (a Series indexed by every combination in ``frame``: values, or tuples for
        several attributes) and returns non-negative weights (a Series or dict over
        combinations).

    Returns
    -------
    DataFrame of shape (sum(request.values()), n_attributes)
        Counts are whole: largest-remainder rounding of the weights, ties to the first
        combination, so the same input gives the same spread.

    Examples
    --------
    >>> import pandas as pd
    >>> from scaug.sampling import spread_request
    >>> frame = pd.DataFrame({"batch": ["a", "a", "a", "b", "b", "b"]})
    >>> labels = ["T", "T", "T", "T", "B", "B"]
    >>> spread_request({"T": 4, "B": 2}, labels, frame)["batch"].tolist()
    ['a', 'a', 'a', 'b', 'b', 'b']
    """
    labels = np.asarray(labels, dtype=object)
    names = list(frame.columns)
    combos = pd.MultiIndex.from_frame(frame.astype(object)).unique().sort_values()
    if len(names) == 1:
        combos = pd.Index(combos.get_level_values(0), dtype=object)
    parts = []
    for label, n in request.items():
        members = frame[labels == label].astype(object)
        key = members.iloc[:, 0] if len(names) == 1 else pd.MultiIndex.from_frame(members)
        counts = pd.Series(1, index=key).groupby(level=list(range(len(names)))).sum()
        counts = counts.reindex(combos, fill_value=0)
        if rule == "proportional":
            weights = counts.astype(float)
        elif rule == "uniform":
            weights = pd.Series(1.0, index=combos)
        elif callable(rule):
            weights = pd.Series(rule(label, counts.copy()), dtype=float)
        else:
            raise ValueError(f"The spread rule must be 'proportional', 'uniform' or a callable "
                             f"(cell type, counts) -> weights; got {rule!r}.")
        if (weights < 0).any() or not np.isfinite(weights).all() or weights.sum() <= 0:
            raise ValueError(f"The spread weights for {label!r} must be finite, non-negative and "
                             f"not all 0; got {dict(weights)}.")
        share = weights.to_numpy() * int(n) / weights.sum()
        k = np.floor(share).astype(np.int64)
        rest = np.argsort(-(share - k), kind="stable")[: int(n) - int(k.sum())]
        k[rest] += 1
        for combo, m in zip(weights.index, k, strict=True):
            parts += [combo if len(names) > 1 else (combo,)] * int(m)
    return pd.DataFrame(parts if parts else np.zeros((0, len(names)), dtype=object),
                        columns=names, dtype=object)


@torch.no_grad()
def screen(summaries, classifier, diffusion, code, Z, *, threshold, tolerance, device):
    """Acceptance of latents for type ``code``, and a score (lower is better) for fallbacks."""
    ratio = summaries.distance_ratio(code, Z) / tolerance
    ok = ratio <= 1.0
    if classifier is not None:
        z = torch.as_tensor(Z, device=device)
        t = torch.zeros(len(Z), device=device, dtype=torch.long)
        conf = torch.softmax(classifier(z, diffusion.time_input(t)), -1)[:, code].cpu().numpy()
        ok &= conf >= threshold
        ratio = ratio + (conf < threshold)
    return ok, ratio


def screened_latents(draw, accept, k, *, max_rounds, label):
    """``k`` latents that pass ``accept``, drawn in rounds; returns (latents, drawn, accepted).

    The first round draws just the quota (most candidates pass, so a margin up front would waste
    up to half the sampling time); later rounds scale by the observed rate. After ``max_rounds``
    the quota is filled with the best rejected latents, with a warning.
    """
    kept, pool, pool_score = [], [], []
    n_kept, n_passed, drawn, rate = 0, 0, 0, 1.0
    for _ in range(int(max_rounds)):
        need = k - n_kept
        m = int(min(max(need / max(rate, 0.02), 16), 10 * need + 64))
        Zc = draw(m)
        ok, score = accept(Zc)
        drawn += m
        n_passed += int(ok.sum())
        kept.append(Zc[ok][:need])
        n_kept += min(int(ok.sum()), need)
        pool.append(Zc[~ok])
        pool_score.append(score[~ok])
        rate = max(n_passed, 1) / drawn
        if n_kept >= k:
            break
    if n_kept < k:
        best = np.argsort(np.concatenate(pool_score), kind="stable")[: k - n_kept]
        kept.append(np.concatenate(pool)[best])
        warnings.warn(
            f"Screening accepted {n_kept} of {drawn} candidates for {label!r} in {max_rounds} "
            f"rounds; the remaining {k - n_kept} are the closest rejected ones. Raise max_rounds "
            "or screening_tolerance, or lower screening_threshold.", UserWarning, stacklevel=4)
    return np.concatenate(kept)[:k], drawn, n_passed


def output_dtype(input_dtype, max_value):
    """The input's dtype if it holds the generated values, else a wider integer, with a warning."""
    dtype = np.dtype(input_dtype)
    if not np.issubdtype(dtype, np.integer) or max_value <= np.iinfo(dtype).max:
        return dtype
    wider = np.dtype(np.int32) if max_value <= np.iinfo(np.int32).max else np.dtype(np.int64)
    warnings.warn(f"A synthetic count ({int(max_value)}) does not fit the input's dtype {dtype}; "
                  f"the synthetic cells are returned as {wider}.", UserWarning, stacklevel=4)
    return wider


def decode(autoencoder, Z, library, gen, *, sparse: bool, cells_per_batch: int):
    """Cells drawn from the decoder's likelihood at latents ``Z``, ``cells_per_batch`` at a time.

    Memory is bounded by the batch beyond the output itself: when ``sparse``, NB counts are
    drawn straight into CSR (no dense count block); dense output is filled in place.
    """
    n_genes = autoencoder.n_features_in_
    if sparse:
        parts = [autoencoder.generate(Z[idx], None if library is None else library[idx],
                                      generator=gen, sparse=True)
                 for idx in _utils.iter_batches(len(Z), cells_per_batch)]
        return sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, n_genes), dtype=np.float32)
    out = np.empty((len(Z), n_genes), dtype=np.float32)
    for idx in _utils.iter_batches(len(Z), cells_per_batch):
        out[idx[0]:idx[-1] + 1] = autoencoder.generate(
            Z[idx], None if library is None else library[idx], generator=gen)
    return out
