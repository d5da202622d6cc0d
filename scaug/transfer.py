"""Gene transfer: a pretrained :class:`~scaug.CellAutoencoder` reused on other genes.

What :meth:`scaug.CellAutoencoder.adapt` does, in the order it does it:

1. :func:`align`: the user's genes matched by name to the autoencoder's (:func:`align_genes`),
   refused below ``min_overlap``.
2. :func:`transplant`: scArches-style surgery; the trunk copied, the shared genes' rows and
   columns of the gene-specific tensors copied, new genes started at zero weights.
3. :func:`latents_of_observed`: the pretrained autoencoder's latents of the user's cells (on up
   to :data:`N_TEACHER_CELLS` cells, :func:`teacher_rows`), the genes they lack imputed.
4. :func:`teach`: the gene-specific layers trained toward those latents
   (:class:`scaug.train.AdaptPlan`), the shared genes' decoder rows kept pretrained or fitted,
   whichever makes held-out cells more likely (:func:`held_out_loglik`).

It works on the autoencoder's fitted attributes and never imports :mod:`scaug.autoencoder`,
which calls it.
"""

from __future__ import annotations

import copy
import sys

import numpy as np
import torch
from sklearn.base import clone
from sklearn.utils.validation import check_is_fitted

from . import _torch_utils, _utils
from .nn import AutoencoderModule
from .train import AdaptPlan, BalancedDraws, MinibatchData, OnDiskCells, fit_plan
from .train.calibration import match_detection
from .train.data import class_codes, default_epochs, gene_moments, validation_split
from .train.trainer import check_trainer_kwargs

#: the tensors of AutoencoderModule's state that are indexed by gene, and their gene axis
GENE_AXES = {"encoder.0.0.weight": 1, "decoder.1.weight": 0, "decoder.1.bias": 0,
              "gene_log_scale": 0, "gene_mean": 0, "gene_scale": 0, "scale_head.weight": 0,
              "scale_head.bias": 0}


def align_genes(known, names) -> tuple[np.ndarray, dict]:
    """Position of each gene of ``names`` among ``known`` (-1 where ``known`` lacks it), and the
    overlap: genes shared, missing (known but not in ``names``) and new (in ``names`` only)."""
    lookup = {g: i for i, g in enumerate(known)}
    index = np.array([lookup.get(g, -1) for g in names], dtype=np.int64)
    n_shared = int((index >= 0).sum())
    return index, {"n_genes": len(names), "n_encoder_genes": len(known), "n_shared": n_shared,
                   "n_missing": len(known) - n_shared, "n_new": len(names) - n_shared,
                   "overlap": n_shared / max(len(names), 1)}


def mean_shares(X) -> np.ndarray:
    """Per gene, its mean share of a cell's counts, computed batch by batch."""
    total = np.zeros(X.shape[1])
    for idx in _utils.iter_batches(X.shape[0], 4096):
        rows = _utils.dense_rows(X, idx).astype(np.float64)
        total += (rows / np.maximum(rows.sum(1, keepdims=True), 1.0)).sum(0)
    return total / max(X.shape[0], 1)


@torch.no_grad()
def transplant(old, new, index: np.ndarray, *, shares=None, moments=None) -> None:
    """Copy ``old``'s weights into ``new``, whose gene ``j`` is ``old``'s gene ``index[j]`` (-1:
    a gene ``old`` never saw): scArches-style surgery.

    The trunk is copied whole and the shared genes' rows and columns of the gene-specific
    tensors. A new gene gets zero input and output weights (it changes no latent and no other
    gene's output until fine-tuned), the median dispersion of the shared genes, its ``moments``
    (continuous data) and, for counts, an output bias that gives it its mean share of the counts
    (``shares``) on the scale of the shared genes' biases.
    """
    shared = index >= 0
    dst, src = torch.from_numpy(np.flatnonzero(shared)), torch.from_numpy(index[shared])
    old_state = {k: v.detach().cpu() for k, v in old.state_dict().items()}
    state = new.state_dict()
    for key, value in state.items():
        if key not in GENE_AXES:
            value.copy_(old_state[key])
            continue
        before = old_state[key]
        if key in ("encoder.0.0.weight", "decoder.1.weight"):
            value.zero_()
        elif key == "gene_log_scale":
            value.fill_(float((before[src] if len(src) else before).median()))
        elif key == "decoder.1.bias" and shares is not None:
            log_share = torch.from_numpy(np.log(np.maximum(shares, 1e-8))).float()
            known = torch.from_numpy(shares[dst.numpy()] > 0)
            offset = float((before[src][known] - log_share[dst][known]).median()) if known.any() else 0.0
            value.copy_(log_share + offset)
        elif key in ("gene_mean", "gene_scale") and moments is not None:
            value.copy_(torch.from_numpy(moments[0 if key == "gene_mean" else 1]))
        elif key == "decoder.1.bias":
            value.zero_()
        value.index_copy_(GENE_AXES[key], dst, before.index_select(GENE_AXES[key], src))
    new.load_state_dict(state)


def keep_pretrained(module, index: np.ndarray, finetune: str, shared_rows: bool = False):
    """Freeze what fine-tuning with ``finetune`` must leave as transplanted; returns the call
    that unfreezes it and puts back any pretrained value that moved.

    ``"all"`` trains everything. ``"genes"`` trains the input layer, the output layer and the
    dispersions; with ``shared_rows=False`` only the rows of genes new to the pretrained
    autoencoder, the shared genes' rows staying the pretrained decoder's exactly (its softmax
    restricted to them is exact): their gradients are masked, and their values put back after
    training (AdamW's weight decay moves even parameters without gradient).
    """
    if finetune == "all":
        return lambda: None
    shared = torch.from_numpy(index >= 0)
    frozen, masked, hooks = [], {}, []
    for key, p in module.named_parameters():
        if key.startswith("encoder.0.0."):
            continue
        if key in GENE_AXES and shared_rows:
            continue
        if key in GENE_AXES and not shared.all():
            rows = shared.to(p.device)
            masked[key] = (p, rows, p.detach()[rows].clone())
            hooks.append(p.register_hook(
                lambda g, rows=rows: g.masked_fill(rows.view(-1, *[1] * (g.dim() - 1)), 0.0)))
        else:
            frozen.append(p)
            p.requires_grad_(False)

    def restore():
        for h in hooks:
            h.remove()
        for p in frozen:
            p.requires_grad_(True)
        with torch.no_grad():
            for p, rows, values in masked.values():
                p[rows] = values

    return restore


@torch.no_grad()
def held_out_loglik(module, cells, latents, rows, device, batch_size: int = 512) -> float:
    """Mean log-likelihood per gene of ``cells[rows]`` at their given latents (no latent noise)."""
    was_training = module.training
    module.eval()
    total = 0.0
    for start in range(0, len(rows), batch_size):
        idx = rows[start:start + batch_size]
        x = torch.as_tensor(_utils.dense_rows(cells, idx), device=device)
        z = torch.as_tensor(latents[idx], device=device)
        total += float(module.cells_log_likelihood(x, z).sum())
    module.train(was_training)
    return total / (len(rows) * cells.shape[1])


#: at most this many of the user's cells teach an adapted autoencoder the pretrained latents
#: (each costs a few passes of the pretrained decoder over all its genes; the input layer learned
#: from them generalised to the other cells of a data set as well as to them in development)
N_TEACHER_CELLS = 2048


def teacher_rows(codes, n_cells: int, limit: int, seed: int) -> np.ndarray:
    """At most ``limit`` cells, sorted: all when there are few; otherwise an equal share of each
    class (``codes``), classes too small for theirs giving the rest to the others, so that rare
    types are taught; a uniform draw without labels."""
    if n_cells <= limit:
        return np.arange(n_cells)
    rng = np.random.default_rng(seed)
    if codes is None:
        return np.sort(rng.choice(n_cells, limit, replace=False))
    classes, counts = np.unique(codes, return_counts=True)
    quota, left, remaining = np.zeros(len(counts), np.int64), limit, len(counts)
    for i in np.argsort(counts):  # smallest first: water-filling
        quota[i] = min(counts[i], left // remaining)
        left -= quota[i]
        remaining -= 1
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(codes == c), q, replace=False)
                                   for c, q in zip(classes, quota, strict=True)]))


def align(autoencoder, n_features, names, min_overlap) -> tuple[np.ndarray, dict]:
    """The alignment of data with gene ``names`` to ``autoencoder``'s genes; refuses data without names, with
    duplicate names, or whose overlap is below ``min_overlap``."""
    known = getattr(autoencoder, "feature_names_in_", None)
    if names is None or known is None:
        side = "X has no gene names" if names is None else "this autoencoder has no gene names"
        raise ValueError(
            f"X has {n_features} genes and this autoencoder was trained on "
            f"{autoencoder.n_features_in_} genes; aligning other genes needs their names and "
            f"{side}. Fit the autoencoder with feature_names=... (or on a DataFrame) and pass "
            "X as a DataFrame or with feature_names=... (an AnnData's var_names).")
    if len(set(names)) != len(names):
        raise ValueError("X's gene names hold duplicates; make them unique "
                         "(AnnData.var_names_make_unique()).")
    index, report = align_genes(known, names)
    report["min_overlap"] = float(min_overlap)
    if report["overlap"] < min_overlap:
        unknown = [str(g) for g, i in zip(names, index, strict=True) if i < 0][:3]
        raise ValueError(
            f"Only {report['n_shared']} of X's {report['n_genes']} genes "
            f"({100 * report['overlap']:.1f} %) are among this autoencoder's "
            f"{report['n_encoder_genes']} genes, below min_overlap={min_overlap} (genes it "
            f"does not know: {unknown} ...). Check that both use the same gene identifiers "
            "(symbols or Ensembl IDs, the same species and case), lower min_overlap, or fit "
            "a new autoencoder on X.")
    return index, report

def overlap_or_none(autoencoder, n_features, names, min_overlap):
    """None when X has exactly ``autoencoder``'s genes (or must be taken to: a side without
    gene names), the overlap report of :meth:`adapt` otherwise; refuses what cannot be
    aligned, before any training."""
    known = getattr(autoencoder, "feature_names_in_", None)
    if names is None or known is None or np.array_equal(np.asarray(names, dtype=object),
                                                        np.asarray(known, dtype=object)):
        try:
            _utils.check_genes(n_features, names, expected_n=autoencoder.n_features_in_,
                               expected_names=known, what="this autoencoder")
        except ValueError as err:
            raise ValueError(f"{err} To reuse it on other genes, give gene names to both "
                             "(they are then aligned by name, see CellAutoencoder.adapt).") from err
        return None
    return align(autoencoder, n_features, names, min_overlap)[1]


def adapt(autoencoder, X, y=None, *, feature_names=None, min_overlap=0.5, max_epochs=None,
          finetune="genes", random_state=None):
    """A copy of the fitted ``autoencoder`` for the genes of ``X``, aligned by name and taught
    its latent space: :meth:`scaug.CellAutoencoder.adapt`, which validates the arguments and
    documents them."""
    check_is_fitted(autoencoder, "module_")
    _utils.validate_params(autoencoder)
    check_trainer_kwargs(autoencoder.trainer_kwargs)
    on_disk = isinstance(X, OnDiskCells)
    names = _utils.resolve_feature_names(X.signature() if on_disk else X, feature_names)
    index, report = align(autoencoder, X.shape[1], names, min_overlap)
    if not on_disk:
        X = _utils.check_matrix(X, min_rows=2)
    sample = X.sample() if on_disk else X
    _utils.decide_likelihood(sample, autoencoder.likelihood_)  # an NB encoder needs counts
    codes = class_codes(y, X.shape[0])
    exact = report["n_new"] == 0 and report["n_missing"] == 0
    if max_epochs is None:
        max_epochs = 0 if exact else default_epochs(min(X.shape[0], N_TEACHER_CELLS),
                                                     autoencoder.batch_size, 1000, 5, 50)
    seed = _utils.seed_from(autoencoder.random_state if random_state is None else random_state)
    if autoencoder.verbose:
        print(f"scaug: adapting the autoencoder to {report['n_genes']} genes: "
              f"{report['n_shared']} shared, {report['n_new']} new, {report['n_missing']} of "
              f"its {report['n_encoder_genes']} genes missing from X (overlap "
              f"{100 * report['overlap']:.1f} %, min_overlap {100 * min_overlap:g} %)",
              file=sys.stderr)
    device = autoencoder.device_
    with _torch_utils.seeded(seed, device):
        module = AutoencoderModule(len(names), int(autoencoder.n_latent),
                                   tuple(autoencoder.hidden), autoencoder.likelihood_,
                                   autoencoder.dispersion)
        nonnegative, moments = autoencoder.nonnegative_, None
        if autoencoder.likelihood_ == "gaussian":
            mean, scale, nonnegative = X.gene_moments() if on_disk else gene_moments(X)
            moments = (mean, scale)
        transplant(autoencoder.module_, module, index, moments=moments,
                   shares=mean_shares(sample) if autoencoder.likelihood_ == "nb" else None)
        history, adaptation = [], None
        if max_epochs:
            rows = teacher_rows(codes, X.shape[0], N_TEACHER_CELLS, seed) if not on_disk \
                else None
            # sparse cells stay sparse: densified one batch at a time
            cells = X[rows] if not on_disk else sample[:N_TEACHER_CELLS]
            latents = latents_of_observed(autoencoder, cells, index, seed)
            cell_codes = None if codes is None or rows is None else codes[rows]
            history, adaptation = teach(autoencoder, module, index, cells, latents, cell_codes,
                                        finetune=finetune, n_epochs=max_epochs, seed=seed,
                                        device=device)
            if autoencoder.match_detection and autoencoder.likelihood_ == "nb":
                match_detection(module, X, seed)  # on the cells it now models
    new = clone(autoencoder)
    new.module_ = module.eval()
    new.likelihood_ = autoencoder.likelihood_
    new.nonnegative_ = bool(nonnegative)
    new.n_features_in_ = len(names)
    new.feature_names_in_ = np.asarray(names, dtype=object)
    new.history_ = history
    new.stopped_at_ = None
    new.gene_overlap_ = report
    new.adaptation_ = adaptation
    new.to(device)
    return new


def teach(autoencoder, module, index, cells, latents, codes, *, finetune, n_epochs, seed, device):
    """Train the transplanted ``module`` toward the pretrained ``latents`` of ``cells``, with
    ``autoencoder``'s settings (:class:`AdaptPlan`); returns ``(history, adaptation report)``.

    With ``finetune="genes"`` the shared genes' output rows are trained once kept at the
    pretrained decoder's values and once fitted to the cells, and the version under which
    held-out teaching cells (``validation_fraction`` of the types of at least 100 cells) are
    more likely is kept: on new cells of the pretraining data set the pretrained rows were
    better, on another data set (another preparation, other capture efficiencies) fitted
    ones, in development (transfer benchmark, seeds 0-1). Without held-out cells the
    pretrained rows are kept.
    """
    groups = np.zeros(len(latents), np.int64) if codes is None else codes
    held = validation_split(groups, float(autoencoder.validation_fraction), seed)
    fit_rows = np.arange(len(latents)) if held is None else np.flatnonzero(~held)
    options = ["all"] if finetune == "all" else \
        ["pretrained"] + ([] if held is None else ["fitted"])
    start = copy.deepcopy(module.state_dict())
    found = {}
    for decoder in options:
        module.load_state_dict(start)
        keep = keep_pretrained(module, index, finetune, shared_rows=decoder != "pretrained")
        try:
            draw = None if codes is None else BalancedDraws(codes[fit_rows], autoencoder.class_balance)
            data = MinibatchData([cells, latents], batch_size=int(autoencoder.batch_size), seed=seed,
                                 rows=fit_rows, draw=draw)
            plan = AdaptPlan(module, latent_noise=autoencoder.latent_noise,
                             learning_rate=autoencoder.learning_rate, n_epochs=n_epochs, seed=seed)
            fit_plan(plan, data, device=device, trainer_kwargs=autoencoder.trainer_kwargs,
                     max_epochs=n_epochs, desc="adapting", verbose=autoencoder.verbose)
        finally:
            keep()
        loglik = None if held is None else \
            held_out_loglik(module, cells, latents, np.flatnonzero(held), device)
        found[decoder] = (copy.deepcopy(module.state_dict()), list(plan.history), loglik)
    # with two options there are held-out cells, so both have a log-likelihood
    chosen = max(found, key=lambda k: found[k][2]) if len(found) > 1 else options[0]
    module.load_state_dict(found[chosen][0])
    report = {"n_teaching_cells": int(len(fit_rows)),
              "n_validation_cells": 0 if held is None else int(held.sum()),
              "decoder": chosen,
              "validation_loglik": {k: v[2] for k, v in found.items() if v[2] is not None}}
    if autoencoder.verbose and len(found) > 1:
        print(f"scaug: kept the {chosen} decoder rows of the shared genes (held-out "
              "log-likelihood per gene: " + ", ".join(
                  f"{k} {v:.4f}" for k, v in report["validation_loglik"].items()) + ")",
              file=sys.stderr)
    return found[chosen][1], report


def latents_of_observed(autoencoder, cells: np.ndarray, index: np.ndarray, seed: int,
                         batch_size: int = 256) -> np.ndarray:
    """``autoencoder``'s latents of ``cells`` (on the genes of an alignment ``index``),
    its genes that the cells lack imputed (:meth:`AutoencoderModule.encode_observed`)."""
    columns = np.flatnonzero(index >= 0)
    genes = torch.from_numpy(index[columns])
    generator = torch.Generator(device=autoencoder.device_).manual_seed(seed)
    out = np.empty((cells.shape[0], int(autoencoder.n_latent)), dtype=np.float32)
    for idx in _utils.iter_batches(cells.shape[0], batch_size):
        x = torch.as_tensor(_utils.dense_rows(cells, idx)[:, columns], device=autoencoder.device_)
        out[idx] = autoencoder.module_.encode_observed(x, genes, generator=generator).cpu().numpy()
    return out
