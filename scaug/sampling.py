"""Sampling, as its own unit: plan a request, draw latents, screen them, decode them into cells.

:class:`scaug.SCLD` owns the fitted networks and calls these in order (:func:`draw_plan`, then
:func:`decode_cells`); nothing here trains.
What a fitted model keeps of its training cells is :class:`TypeSummaries`: per type, quantiles
of the library size and a Gaussian summary of its latents, so a model's size does not grow with
the number of cells it was trained on, and a saved model holds no cell of its training data.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from numbers import Integral

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.covariance import LedoitWolf
from tqdm.auto import tqdm

from . import _utils, conditions
from .conditions import (  # noqa: F401  (scaug.sampling's names in 0.1)
    RESERVED_CONDITION_NAMES,
    check_conditions,
    resolve_conditions,
    spread_request,
)

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


def smoothed_bootstrap(Z: np.ndarray, codes: np.ndarray, strength: float):
    """Per cell: its latent shrunk toward its group's mean, and the sd of the noise to add.

    Silverman's smoothed bootstrap with variance correction: a group (a type, ``codes``) of
    ``n`` cells gets Gaussian noise of ``f = min(1, strength / sqrt(n))`` times its
    per-dimension sd, and its cells are shrunk toward the group mean by ``1 / sqrt(1 + f**2)``
    so the group keeps its variance. A denoiser trained on ten cells of a type otherwise learns
    those ten points and samples them back (copies, in latent space); the noise fades as a type
    grows. Cells of code -1 are kept as they are, without noise.

    Examples
    --------
    >>> import numpy as np
    >>> from scaug.sampling import smoothed_bootstrap
    >>> Z = np.array([[0.0], [2.0], [5.0]])
    >>> shrunk, sd = smoothed_bootstrap(Z, np.array([0, 0, -1]), strength=1.0)
    >>> [round(float(v), 3) for v in shrunk.ravel()], [round(float(v), 3) for v in sd.ravel()]
    ([0.184, 1.816, 5.0], [0.577, 0.577, 0.0])
    """
    shrunk = Z.copy()
    sd = np.zeros_like(Z)
    for c in np.unique(codes[codes >= 0]):  # unlabelled cells (code -1) are learned as they are
        where = codes == c
        n = int(where.sum())
        f = min(1.0, strength / np.sqrt(n))
        if n < 2 or f == 0:
            continue
        mean, scale = Z[where].mean(0), Z[where].std(0)
        shrunk[where] = mean + (Z[where] - mean) / np.sqrt(1 + f**2)
        sd[where] = f * scale / np.sqrt(1 + f**2)
    return shrunk.astype(np.float32), sd.astype(np.float32)


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
            "or screening_tolerance, or lower screening_threshold.", UserWarning, stacklevel=5)
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


# -- a fitted SCLD's request, end to end -------------------------------------------------------
def latent_drawer(model, opts: dict, scales: list, batch_size: int, gen):
    """``draw(code, attribute codes, m)``: ``m`` standardised latents of type ``code`` from a
    fitted SCLD's diffusion sampler, refined when ``opts["refinement"]`` asks, with the type's
    mean added back for a model fitted with ``latent_centering="type"``."""
    labelled = model.classes_ is not None
    null = len(model.classes_) if labelled else 0
    n_latent = len(model.latent_mean_)
    steps, sampler = int(opts["n_sample_steps"]), opts["sampler"]

    def draw(code, attrs, m):
        offset = (model.type_summaries_.mean[code].astype(np.float32)
                  if model.latent_centering == "type" else 0.0)
        Z = draw_latents(
            model.diffusion_, model.denoiser_, model.classifier_, code=code, n=m,
            n_latent=n_latent, labelled=labelled, null=null, gen=gen, device=model.device_,
            guidance_scale=float(opts["guidance_scale"]),
            classifier_scale=float(opts["classifier_scale"]), n_sample_steps=steps,
            sampler=sampler, batch_size=batch_size, attributes=attrs, attribute_scales=scales)
        if opts["refinement"] > 0:
            Z = refine_latents(
                model.diffusion_, model.denoiser_, Z, strength=float(opts["refinement"]),
                null=null, attributes=attrs, gen=gen, device=model.device_,
                n_sample_steps=steps, sampler=sampler, batch_size=batch_size)
        return offset + Z

    return draw


def _draw_type(model, draw, code, label, rows, opts):
    """The latents of one type's ``len(rows)`` cells (``rows``: their attribute codes), one run
    of the sampler per combination of values, in a fixed order; screened when ``opts`` asks.
    Returns ``(latents, candidates drawn, candidates accepted)``."""
    values = conditions.values_of(model)
    names, k = list(values), len(rows)
    if names:
        combos, inverse = np.unique(rows, axis=0, return_inverse=True)
        groups = [(combo, np.flatnonzero(inverse.ravel() == g)) for g, combo in enumerate(combos)]
    else:
        groups = [(None, np.arange(k))]
    Zc = np.empty((k, len(model.latent_mean_)), dtype=np.float32)
    drawn = accepted = 0
    for combo, idx in groups:
        if not opts["screening"]:
            Zg, d, a = draw(code, combo, len(idx)), len(idx), len(idx)
        else:
            def accept(Z, code=code):
                return screen(model.type_summaries_, model.classifier_, model.diffusion_, code, Z,
                              threshold=opts["screening_threshold"],
                              tolerance=model.screening_tolerance, device=model.device_)

            where = "" if combo is None else "".join(
                f" {n}={_utils.plain_label(values[n][c])!r}"
                for n, c in zip(names, combo, strict=True) if c < len(values[n]))
            Zg, d, a = screened_latents(
                lambda m, code=code, combo=combo: draw(code, combo, m), accept, len(idx),
                max_rounds=model.max_rounds,
                label=("cells" if label is None else str(label)) + where)
        Zc[idx] = Zg
        drawn, accepted = drawn + d, accepted + a
    return Zc, drawn, accepted


def draw_plan(model, plan, attribute_codes, draw, opts: dict):
    """The standardised latents of a request ``plan`` (``[(type code, cells)]``) of a fitted
    SCLD, type by type; returns ``(latents, type codes, report)`` where the report is
    ``sampling_report_``. Warns about (type, value) pairs without training cells."""
    labelled = model.classes_ is not None
    values = conditions.values_of(model)
    pairs = conditions.pair_counts(model) if values else {}
    report, blocks_z, blocks_y, unseen = {}, [], [], []
    bar = tqdm(total=sum(k for _, k in plan), desc="sampling", disable=not model.verbose,
               leave=False)
    offset = 0
    for code, k in plan:
        if k == 0:
            continue
        label = _utils.plain_label(model.classes_[code]) if labelled else None
        rows = attribute_codes[offset:offset + k]
        offset += k
        Zc, drawn, accepted = _draw_type(model, draw, code, label, rows, opts)
        report[label] = {"requested": k, "drawn": drawn, "accepted": accepted,
                         "acceptance_rate": accepted / drawn if drawn else float("nan")}
        if values:
            report[label]["conditions"] = conditions.condition_report(
                rows, values, pairs, code if labelled else 0, label, unseen)
        blocks_z.append(Zc)
        blocks_y.append(np.full(k, code))
        bar.update(k)
    bar.close()
    if unseen:
        listed = ", ".join(f"{'' if t is None else f'{t!r} in '}{n}={v!r} ({m} cells)"
                           for t, n, v, m in unseen)
        warnings.warn(
            f"No training cell had these (type, value) pairs: {listed}. SCLD composes such "
            "cells from what it learned of the type and of the value apart; check them "
            "before use (sampling_report_[type]['conditions']).", UserWarning, stacklevel=4)
    n_latent = len(model.latent_mean_)
    Zs = np.concatenate(blocks_z) if blocks_z else np.zeros((0, n_latent), np.float32)
    codes = np.concatenate(blocks_y) if blocks_y else np.zeros(0, np.int64)
    return Zs, codes, report


def decode_cells(model, Z, codes, attribute_codes, rng, gen):
    """A fitted SCLD's cells at latents ``Z`` of types ``codes``: library sizes drawn from the
    type's real cells (shifted by each given value's library-size shift), then decoded, in the
    input's container and a dtype wide enough for the counts."""
    library = model.type_summaries_.draw_library(codes, rng) if model.counts_ else None
    shifts = getattr(model, "library_shifts_", None)
    if library is not None and shifts:
        # each given value's library-size shift (a marginalised attribute shifts nothing)
        rows = codes if model.classes_ is not None else np.zeros_like(codes)
        shift = sum(np.pad(shifts[n], ((0, 0), (0, 1)))[rows, attribute_codes[:, j]]
                    for j, n in enumerate(conditions.values_of(model)))
        library = np.round(library * np.exp(shift)).astype(np.float32)
    # about 64 MB of float32 per decoded block, whatever the number of genes
    cells_per_batch = max(1, min(4096, 2**24 // model.n_features_in_))
    X = decode(model.autoencoder_, Z, library, gen, sparse=model.sparse_input_,
               cells_per_batch=cells_per_batch)
    if model.counts_ and np.issubdtype(np.dtype(model.input_dtype_), np.integer):
        X = X.astype(output_dtype(model.input_dtype_, X.max() if X.shape[0] else 0))
    return X
