"""CellAutoencoder: the pretrained encoder/decoder of SCLD, usable and savable on its own."""

from __future__ import annotations

import copy
import sys
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context, clone
from sklearn.utils._param_validation import StrOptions, validate_params
from sklearn.utils.validation import check_is_fitted

from . import _utils
from .nn import AutoencoderModule
from .nn.autoencoder import TARGET_SUM  # noqa: F401  (re-exported: the encoder's input scale)
from .train import (
    AdaptPlan,
    AutoencoderPlan,
    BalancedDraws,
    ConvergenceStop,
    MinibatchData,
    OnDiskCells,
    check_trainer_kwargs,
    fit_plan,
    process_rank,
    validation_split,
)


def _gene_moments(X):
    """Per-gene mean and scale (1 where a gene is constant) of continuous input, and whether it
    is non-negative; computed without densifying sparse input."""
    mean = np.asarray(X.mean(axis=0), dtype=np.float64).ravel()
    sq = X.multiply(X).mean(axis=0) if sp.issparse(X) else (X.astype(np.float64) ** 2).mean(0)
    scale = np.sqrt(np.maximum(np.asarray(sq, dtype=np.float64).ravel() - mean**2, 0))
    scale = np.where(scale > 1e-8, scale, 1.0)
    values = X.data if sp.issparse(X) else X
    return mean.astype(np.float32), scale.astype(np.float32), bool(values.min() >= 0)


def _default_epochs(n_obs: int, batch_size: int, steps: int = 3000, low: int = 20,
                    high: int = 200) -> int:
    # about `steps` optimiser steps, between `low` and `high` passes over the data
    steps_per_epoch = max(1, int(np.ceil(n_obs / batch_size)))
    return int(np.clip(np.ceil(steps / steps_per_epoch), low, high))


#: the tensors of AutoencoderModule's state that are indexed by gene, and their gene axis
_GENE_AXES = {"encoder.0.0.weight": 1, "decoder.1.weight": 0, "decoder.1.bias": 0,
              "gene_log_scale": 0, "gene_mean": 0, "gene_scale": 0, "scale_head.weight": 0,
              "scale_head.bias": 0}


def _align_genes(known, names) -> tuple[np.ndarray, dict]:
    """Position of each gene of ``names`` among ``known`` (-1 where ``known`` lacks it), and the
    overlap: genes shared, missing (known but not in ``names``) and new (in ``names`` only)."""
    lookup = {g: i for i, g in enumerate(known)}
    index = np.array([lookup.get(g, -1) for g in names], dtype=np.int64)
    n_shared = int((index >= 0).sum())
    return index, {"n_genes": len(names), "n_encoder_genes": len(known), "n_shared": n_shared,
                   "n_missing": len(known) - n_shared, "n_new": len(names) - n_shared,
                   "overlap": n_shared / max(len(names), 1)}


def _mean_shares(X) -> np.ndarray:
    """Per gene, its mean share of a cell's counts, computed batch by batch."""
    total = np.zeros(X.shape[1])
    for idx in _utils.iter_batches(X.shape[0], 4096):
        rows = _utils.dense_rows(X, idx).astype(np.float64)
        total += (rows / np.maximum(rows.sum(1, keepdims=True), 1.0)).sum(0)
    return total / max(X.shape[0], 1)


@torch.no_grad()
def _transplant(old, new, index: np.ndarray, *, shares=None, moments=None) -> None:
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
        if key not in _GENE_AXES:
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
        value.index_copy_(_GENE_AXES[key], dst, before.index_select(_GENE_AXES[key], src))
    new.load_state_dict(state)


def _keep_pretrained(module, index: np.ndarray, finetune: str, shared_rows: bool = False):
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
        if key in _GENE_AXES and shared_rows:
            continue
        if key in _GENE_AXES and not shared.all():
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
def _held_out_loglik(module, cells, latents, rows, device, batch_size: int = 512) -> float:
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


def _teacher_rows(codes, n_cells: int, limit: int, seed: int) -> np.ndarray:
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


def _class_codes(y, n_cells: int):
    """Integer class codes of ``y`` (for class-balanced minibatches), or None without labels."""
    if y is None:
        return None
    return np.unique(_utils.check_labels(y, n_cells).astype(str), return_inverse=True)[1]


class CellAutoencoder(TransformerMixin, BaseEstimator):
    """Autoencoder mapping cells to a small latent space and back to a count likelihood.

    It is trained without labels, so it can be pretrained on many more cells than are labelled,
    saved, and handed to :class:`scaug.SCLD` (``SCLD(autoencoder=...)``) so that only the latent
    diffusion part is trained on the labelled cells.

    Parameters
    ----------
    n_latent : int, default=16
        Dimension of the latent space.
    hidden : tuple of int, default=(256, 128)
        Hidden widths of the encoder; the decoder mirrors them.
    likelihood : {"auto", "nb", "gaussian"}, default="auto"
        ``"nb"`` (negative binomial) for raw counts, ``"gaussian"`` for continuous values
        (log-normalised or scaled). ``"auto"`` picks ``"nb"`` when every entry of ``X`` is a
        non-negative integer and ``"gaussian"`` for clearly continuous data; data that is almost
        counts (a few negative or non-integer entries among integers) is refused with the reason,
        rather than silently modelled as continuous.
    dispersion : {"gene", "gene-cell"}, default="gene"
        Noise of the likelihood: one NB dispersion (or standard deviation) per gene (the scVI
        default), or a per-cell correction of it predicted by the decoder, which lets each type
        have its own noise. ``docs/decoder_ceiling.md`` measures both: ``"gene-cell"`` made
        re-drawn cells more realistic on the development seeds but not clearly on the
        reporting seeds, and less so for erythrocytes and dendritic cells there.
    match_detection : bool, default=False
        After training, shift each gene's NB dispersion so that the model detects the gene (a
        nonzero count) in as many training cells as the data do, at their own latents and
        library sizes (:meth:`scaug.nn.AutoencoderModule.detection_offsets`, on up to 10,000
        cells). The likelihood's dispersion makes re-drawn cells about 10 % poorer in detected
        genes than real cells of the same library size, a tell-tale that a classifier picks up;
        ``docs/decoder_ceiling_detection/decoder_ceiling.md`` measures what matching does
        (re-drawn cells' two-sample AUC 0.817 -> 0.753 on cbmc); it is off by default because
        it lowered downstream rare-type F1 on paul15 (``docs/detection_dev/downstream``).
        :meth:`adapt` matches them again on the cells it adapts to (unless their genes are the
        same). Counts (NB) only; ignored for a Gaussian likelihood.
    max_epochs : int or None, default=None
        Training passes over the data; ``None`` picks about 3000 optimiser steps (20 to 200 epochs).
    batch_size : int, default=128
    learning_rate : float, default=1e-3
        AdamW's learning rate for training and for :meth:`adapt`. A loss or weights that stop
        being finite stop the fit with :class:`~scaug.exceptions.TrainingDivergedError`.
    latent_noise : float, default=0.1
        Standard deviation of the noise added to latents during training, together with a
        standard-normal prior penalty (a VAE with a fixed posterior spread). More noise keeps the
        decoder from memorising its training cells: at 0.1, cells it never saw come back with
        25-50 % too little expression in their lower-expressed genes, so that latents which are
        not near-copies of training latents decode into recognisably fake cells. 1.0 (with
        ``dispersion="gene-cell"``) fixes that, but blurs types that differ subtly and lowered
        SCLD's downstream rare-type F1, by up to 0.2 on paul15 and bladder (README, Evidence).
    class_balance : float, default=0.5
        Only used when :meth:`fit` gets labels: class ``c`` is drawn with probability
        ~ ``n_c ** class_balance`` (0: every type equally often, 1: every cell equally often).
    early_stopping : bool, default=True
        Hold out ``validation_fraction`` of the cells and stop training once their loss has
        stopped improving, instead of always running ``max_epochs``. Cells are held out only
        from types (with ``y``; all cells otherwise) of at least 100 cells, so rare types keep
        every cell; with no such group, for an ``OnDiskCells``, or when the budget is too short
        to be checked ``n_iter_no_change + 1`` times, training runs its full budget on every
        cell. The held-out cells are never trained on.
    validation_fraction : float in (0, 1), default=0.1
    n_iter_no_change : int, default=5
        Checks (every ``check_every`` optimiser steps) without an improvement of at least ``tol``
        (relative) after which training stops.
    tol : float, default=1e-3
    check_every : int, default=100
        Optimiser steps between two checks of the validation loss.
    trainer_kwargs : dict or None, default=None
        Extra arguments of the Lightning ``Trainer``, to scale training out, for example
        ``{"devices": 4, "strategy": "ddp", "num_nodes": 2}`` (see the user guide's atlas-scale
        section). scaug sets the number of epochs, the progress bar and logging itself.
    cpu_threads : int or None, default=1
        torch CPU threads while fitting and sampling; the caller's setting is restored after.
        SCLD's networks are small: a second thread gains little alone and costs a lot on a
        shared machine, where two busy processes fight over the cores
        (``docs/contention.md``). ``None`` keeps torch's own setting.
    device : {"auto", "cpu", "cuda", "cuda:N"} or torch.device, default="auto"
    random_state : int, RandomState instance or None, default=None
    verbose : bool, default=True
        Show a progress bar.

    Attributes
    ----------
    module_ : scaug.nn.AutoencoderModule
    likelihood_ : str
    nonnegative_ : bool
        Whether the training data were non-negative (continuous output is clipped at 0 then).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` had string column names (a DataFrame).
    history_ : list of float
        Mean training loss per epoch (of the fine-tuning, for an adapted autoencoder).
    gene_overlap_ : dict
        Only on an autoencoder made by :meth:`adapt`: how the genes it was adapted to met the
        pretrained ones (see :meth:`gene_overlap`).

    Examples
    --------
    >>> from scaug.autoencoder import CellAutoencoder
    >>> from scaug.datasets import simulate
    >>> adata = simulate(n_cells=200, n_genes=50, random_state=0)
    >>> ae = CellAutoencoder(n_latent=8, max_epochs=2, verbose=False, random_state=0)
    >>> ae.fit(adata.X).transform(adata.X).shape
    (200, 8)
    """

    _parameter_constraints: dict = {
        "n_latent": [_utils.Interval(Integral, 1, None, closed="left")],
        "hidden": [_utils.PositiveIntTuple()],
        "likelihood": [StrOptions({"auto", "nb", "gaussian"})],
        "dispersion": [StrOptions({"gene", "gene-cell"})],
        "match_detection": ["boolean"],
        "max_epochs": [_utils.Interval(Integral, 1, None, closed="left"), None],
        "batch_size": [_utils.Interval(Integral, 1, None, closed="left")],
        "learning_rate": [_utils.Interval(Real, 0, None, closed="neither")],
        "latent_noise": [_utils.Interval(Real, 0, None, closed="left")],
        "class_balance": [_utils.Interval(Real, 0, 1, closed="both")],
        "early_stopping": ["boolean"],
        "validation_fraction": [_utils.Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [_utils.Interval(Integral, 1, None, closed="left")],
        "tol": [_utils.Interval(Real, 0, 1, closed="left")],
        "check_every": [_utils.Interval(Integral, 1, None, closed="left")],
        "trainer_kwargs": [dict, None],
        "cpu_threads": [_utils.Interval(Integral, 1, None, closed="left"), None],
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "verbose": ["boolean"],
    }

    def __init__(self, *, n_latent=16, hidden=(256, 128), likelihood="auto", dispersion="gene",
                 match_detection=False, max_epochs=None, batch_size=128, learning_rate=1e-3,
                 latent_noise=0.1, class_balance=0.5, early_stopping=True, validation_fraction=0.1,
                 n_iter_no_change=5, tol=1e-3, check_every=100, trainer_kwargs=None,
                 cpu_threads=1, device="auto", random_state=None, verbose=True):
        self.n_latent = n_latent
        self.hidden = hidden
        self.likelihood = likelihood
        self.dispersion = dispersion
        self.match_detection = match_detection
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.latent_noise = latent_noise
        self.class_balance = class_balance
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.check_every = check_every
        self.trainer_kwargs = trainer_kwargs
        self.cpu_threads = cpu_threads
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _set_runtime(self, device):
        self.device_ = device
        self.module_.to(device)

    # -- fit / transform -----------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    @_utils.with_cpu_threads
    def fit(self, X, y=None, *, feature_names=None, validation_cells=None):
        """Train on cells ``X`` (cells x genes, dense or sparse).

        Labels are optional and never enter the model: when ``y`` is given, minibatches are
        drawn with class probabilities ~ ``n_c ** class_balance`` so that rare types, which a
        plain pass would barely show the decoder, are reconstructed well.

        Parameters
        ----------
        X : array-like, sparse matrix, DataFrame of shape (n_cells, n_genes), or OnDiskCells
            Integer counts or continuous expression. Sparse input is densified one minibatch at
            a time, never whole. :class:`scaug.OnDiskCells` streams the cells from AnnData files
            (the likelihood is decided on a sample of its chunks, gene names are its
            ``var_names``).
        y : array-like of shape (n_cells,), optional
            Cell types, used only to balance the minibatches (for an ``OnDiskCells``, pass
            ``y=cells.labels`` to balance by its ``labels_key``).
        feature_names : array-like of str, optional
            Gene names for input without column names (an AnnData's ``var_names``); a
            DataFrame's columns are used otherwise.
        validation_cells : array-like of bool of shape (n_cells,), optional
            The cells to hold out for ``early_stopping``, instead of the automatic choice.

        Returns
        -------
        self : CellAutoencoder
            Fitted; a fit that fails or is interrupted leaves the estimator as it was.
            ``stopped_at_`` is the optimiser step early stopping ended training at (None when
            it ran its full budget).
        """
        _utils.validate_params(self)
        device = _utils.resolve_device(self.device)
        check_trainer_kwargs(self.trainer_kwargs)
        on_disk = isinstance(X, OnDiskCells)
        names = _utils.resolve_feature_names(X.signature() if on_disk else X, feature_names)
        if not on_disk:
            X = _utils.check_matrix(X, min_rows=2)
        likelihood = _utils.decide_likelihood(X.sample() if on_disk else X, self.likelihood)
        codes = _class_codes(y, X.shape[0])
        if validation_cells is not None:
            validation_cells = _utils.check_mask(validation_cells, X.shape[0], "validation_cells")
        seed = _utils.seed_from(self.random_state)
        n_epochs = self.max_epochs or _default_epochs(X.shape[0], self.batch_size)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
                _utils.flush_denormal():
            torch.manual_seed(seed)
            module = AutoencoderModule(X.shape[1], int(self.n_latent), tuple(self.hidden),
                                       likelihood, self.dispersion)
            nonnegative = True
            if likelihood == "gaussian":
                mean, scale, nonnegative = X.gene_moments() if on_disk else _gene_moments(X)
                module.gene_mean.copy_(torch.from_numpy(mean))
                module.gene_scale.copy_(torch.from_numpy(scale))
            plan = self._train(module, X, codes, n_epochs=n_epochs, seed=seed, device=device,
                               verbose=self.verbose, validation_cells=validation_cells)
            if self.match_detection and likelihood == "nb":
                _match_detection(module, X, seed)
        # all or nothing: the fitted state is set only once training has finished
        _utils.drop_fitted_state(self)
        self.module_ = module.eval()
        self.likelihood_ = likelihood
        self.nonnegative_ = nonnegative
        self.n_features_in_ = X.shape[1]
        if names is not None:
            self.feature_names_in_ = names
        self.history_ = list(plan.history)
        self.stopped_at_ = plan.stopped_at
        self._set_runtime(device)
        return self

    def _train(self, module, X, codes, *, n_epochs, seed, device, verbose, desc="autoencoder",
               validation_cells=None):
        """Train ``module`` on ``X`` (in memory or on disk) for at most ``n_epochs``; returns the
        plan (its ``stopped_at`` set)."""
        stopping, validation, rows = None, None, None
        budget = n_epochs * max(1, int(np.ceil(X.shape[0] / self.batch_size)))
        # a stage too short to be checked n_iter_no_change + 1 times trains on every cell
        long_enough = budget >= self.check_every * (self.n_iter_no_change + 1)
        if self.early_stopping and long_enough and not isinstance(X, OnDiskCells):
            if validation_cells is None:
                groups = np.zeros(X.shape[0], np.int64) if codes is None else codes
                validation_cells = validation_split(groups, float(self.validation_fraction), seed)
            if validation_cells is not None and validation_cells.any() and not validation_cells.all():
                rows = np.flatnonzero(~validation_cells)
                validation = X[np.flatnonzero(validation_cells)]
                stopping = ConvergenceStop(patience=self.n_iter_no_change, tol=self.tol,
                                           check_every=int(self.check_every))
        if isinstance(X, OnDiskCells):
            data = X.minibatches(batch_size=int(self.batch_size), seed=seed, codes=codes,
                                 class_balance=self.class_balance)
        else:
            draw = None
            if codes is not None:
                draw = BalancedDraws(codes if rows is None else codes[rows], self.class_balance)
            data = MinibatchData([X], batch_size=int(self.batch_size), seed=seed, rows=rows,
                                 draw=draw)
        plan = AutoencoderPlan(module, latent_noise=self.latent_noise,
                               learning_rate=self.learning_rate, n_epochs=n_epochs, seed=seed,
                               validation=validation)
        fit_plan(plan, data, device=device, trainer_kwargs=self.trainer_kwargs,
                 max_epochs=n_epochs, desc=desc, verbose=verbose, stopping=stopping)
        plan.stopped_at = None if stopping is None else stopping.stopped_at
        plan.validation_history = [] if stopping is None else stopping.history
        return plan

    def check_genes(self, X) -> None:
        """Raise a clear error if ``X``'s genes differ from those the autoencoder was trained on."""
        check_is_fitted(self, "module_")
        shape = getattr(X, "shape", None) or np.shape(X)
        if len(shape) != 2:
            raise ValueError(f"X must be a 2-D cells x genes matrix; got shape {tuple(shape)}.")
        _utils.check_genes(shape[1], _utils.feature_names(X), expected_n=self.n_features_in_,
                           expected_names=getattr(self, "feature_names_in_", None),
                           what="this autoencoder")

    # -- other genes ---------------------------------------------------------------------------
    def gene_overlap(self, X, *, feature_names=None) -> dict:
        """How the genes of ``X`` (by name) meet this autoencoder's, without any training.

        Returns a dict: ``n_genes`` (of ``X``), ``n_encoder_genes``, ``n_shared``, ``n_missing``
        (the encoder's genes that ``X`` lacks), ``n_new`` (genes of ``X`` the encoder never saw)
        and ``overlap``, the fraction of ``X``'s genes the encoder knows (``n_shared /
        n_genes``), which :meth:`adapt` compares with ``min_overlap``.
        """
        check_is_fitted(self, "module_")
        signature = X.signature() if isinstance(X, OnDiskCells) else X
        names = _utils.resolve_feature_names(signature, feature_names)
        shape = getattr(signature, "shape", None) or np.shape(signature)
        report = self._align(shape[1], names, 0.0)[1]
        del report["min_overlap"]
        return report

    def _align(self, n_features, names, min_overlap) -> tuple[np.ndarray, dict]:
        """The gene alignment of data with gene ``names``; refuses data without names, with
        duplicate names, or whose overlap is below ``min_overlap``."""
        known = getattr(self, "feature_names_in_", None)
        if names is None or known is None:
            side = "X has no gene names" if names is None else "this autoencoder has no gene names"
            raise ValueError(
                f"X has {n_features} genes and this autoencoder was trained on "
                f"{self.n_features_in_} genes; aligning other genes needs their names and "
                f"{side}. Fit the autoencoder with feature_names=... (or on a DataFrame) and pass "
                "X as a DataFrame or with feature_names=... (an AnnData's var_names).")
        if len(set(names)) != len(names):
            raise ValueError("X's gene names hold duplicates; make them unique "
                             "(AnnData.var_names_make_unique()).")
        index, report = _align_genes(known, names)
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

    def _overlap_or_none(self, n_features, names, min_overlap):
        """None when X has exactly this autoencoder's genes (or must be taken to: a side without
        gene names), the overlap report of :meth:`adapt` otherwise; refuses what cannot be
        aligned, before any training."""
        known = getattr(self, "feature_names_in_", None)
        if names is None or known is None or np.array_equal(np.asarray(names, dtype=object),
                                                            np.asarray(known, dtype=object)):
            try:
                _utils.check_genes(n_features, names, expected_n=self.n_features_in_,
                                   expected_names=known, what="this autoencoder")
            except ValueError as err:
                raise ValueError(f"{err} To reuse it on other genes, give gene names to both "
                                 "(they are then aligned by name, see CellAutoencoder.adapt).") from err
            return None
        return self._align(n_features, names, min_overlap)[1]

    @validate_params({"min_overlap": [_utils.Interval(Real, 0, 1, closed="both")],
                      "max_epochs": [_utils.Interval(Integral, 0, None, closed="left"), None],
                      "finetune": [StrOptions({"genes", "all"})],
                      "random_state": ["random_state"]},
                     prefer_skip_nested_validation=True)
    @_utils.with_cpu_threads
    def adapt(self, X, y=None, *, feature_names=None, min_overlap=0.5, max_epochs=None,
              finetune="genes", random_state=None) -> CellAutoencoder:
        """A copy of this autoencoder for the genes of ``X``, aligned by name and fine-tuned.

        scArches-style surgery: the new autoencoder has exactly ``X``'s genes in ``X``'s order.
        Its trunk (every layer between the gene-specific ones) is this autoencoder's; its input
        layer keeps the columns of the shared genes and its output layer and dispersions their
        rows, so genes this autoencoder knows but ``X`` lacks leave the model (they pollute
        neither the input nor the likelihood, whose softmax runs over ``X``'s genes only), and
        genes new to it get zero weights (they start by changing nothing) and, for counts, an
        output bias giving them their mean share of the counts in ``X``.

        The transplanted encoder alone would misplace the user's cells: it sees only the shared
        genes, normalised over them. So it is then taught this autoencoder's latent space: up to
        2048 of ``X``'s cells (an equal share per type of ``y``, rare types whole) are encoded by
        this autoencoder with the genes they lack imputed from its decoder
        (:meth:`scaug.nn.AutoencoderModule.encode_observed`), and the new input layer learns to
        give those latents from ``X``'s genes, while the new genes' output rows learn to
        reconstruct ``X`` from them. The shared genes' output rows are either kept as this
        decoder's or fitted too, whichever makes held-out cells of ``X`` more likely (see
        ``adaptation_``). With ``finetune="all"`` every layer trains toward the same fixed
        latents. This autoencoder is not changed.

        Parameters
        ----------
        X : array-like, sparse matrix, DataFrame of shape (n_cells, n_genes), or OnDiskCells
            The user's cells, with gene names (DataFrame columns, ``feature_names`` or an
            ``OnDiskCells``' ``var_names``). Counts if this autoencoder models counts.
        y : array-like of shape (n_cells,), optional
            Cell types, only to choose the cells that teach the latents (every type among them)
            and to balance the minibatches, as in :meth:`fit`.
        feature_names : array-like of str, optional
            Gene names of ``X`` when it has no column names.
        min_overlap : float in [0, 1], default=0.5
            The least fraction of ``X``'s genes that this autoencoder must know; less is refused
            before any training (the report is :meth:`gene_overlap`).
        max_epochs : int or None, default=None
            Fine-tuning passes over the teaching cells. ``None`` is about 1000 optimiser steps
            (5 to 50 epochs), or none at all when ``X`` has exactly this autoencoder's genes in
            another order (the surgery is then exact). 0 only transplants the weights.
        finetune : {"genes", "all"}, default="genes"
            Train only the gene-specific layers (the input layer, and the new genes' rows of
            the output layer and dispersions), keeping the pretrained trunk and decoder, or
            every layer. Either way the latents taught are this autoencoder's.
        random_state : int, RandomState instance or None, default=None
            ``None`` uses this autoencoder's ``random_state``.

        Returns
        -------
        CellAutoencoder
            Fitted, on this autoencoder's device, with ``feature_names_in_`` the genes of ``X``,
            ``history_`` the fine-tuning losses, ``gene_overlap_`` the overlap report and
            ``adaptation_`` what the fine-tuning did (None without it): the numbers of teaching
            and held-out cells, which decoder rows of the shared genes were kept
            (``"pretrained"``, ``"fitted"``, or ``"all"`` with ``finetune="all"``) and the
            held-out log-likelihood per gene of each.
            With ``verbose``, the overlap is printed (to stderr).
        """
        check_is_fitted(self, "module_")
        _utils.validate_params(self)
        check_trainer_kwargs(self.trainer_kwargs)
        on_disk = isinstance(X, OnDiskCells)
        names = _utils.resolve_feature_names(X.signature() if on_disk else X, feature_names)
        index, report = self._align(X.shape[1], names, min_overlap)
        if not on_disk:
            X = _utils.check_matrix(X, min_rows=2)
        sample = X.sample() if on_disk else X
        _utils.decide_likelihood(sample, self.likelihood_)  # an NB encoder needs counts
        codes = _class_codes(y, X.shape[0])
        exact = report["n_new"] == 0 and report["n_missing"] == 0
        if max_epochs is None:
            max_epochs = 0 if exact else _default_epochs(min(X.shape[0], N_TEACHER_CELLS),
                                                         self.batch_size, 1000, 5, 50)
        seed = _utils.seed_from(self.random_state if random_state is None else random_state)
        if self.verbose:
            print(f"scaug: adapting the autoencoder to {report['n_genes']} genes: "
                  f"{report['n_shared']} shared, {report['n_new']} new, {report['n_missing']} of "
                  f"its {report['n_encoder_genes']} genes missing from X (overlap "
                  f"{100 * report['overlap']:.1f} %, min_overlap {100 * min_overlap:g} %)",
                  file=sys.stderr)
        device = self.device_
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
                _utils.flush_denormal():
            torch.manual_seed(seed)
            module = AutoencoderModule(len(names), int(self.n_latent), tuple(self.hidden),
                                       self.likelihood_, self.dispersion)
            nonnegative, moments = self.nonnegative_, None
            if self.likelihood_ == "gaussian":
                mean, scale, nonnegative = X.gene_moments() if on_disk else _gene_moments(X)
                moments = (mean, scale)
            _transplant(self.module_, module, index, moments=moments,
                        shares=_mean_shares(sample) if self.likelihood_ == "nb" else None)
            history, adaptation = [], None
            if max_epochs:
                rows = _teacher_rows(codes, X.shape[0], N_TEACHER_CELLS, seed) if not on_disk \
                    else None
                # sparse cells stay sparse: densified one batch at a time
                cells = X[rows] if not on_disk else sample[:N_TEACHER_CELLS]
                latents = self._latents_of_observed(cells, index, seed)
                cell_codes = None if codes is None or rows is None else codes[rows]
                history, adaptation = self._teach(module, index, cells, latents, cell_codes,
                                                  finetune=finetune, n_epochs=max_epochs,
                                                  seed=seed, device=device)
                if self.match_detection and self.likelihood_ == "nb":
                    _match_detection(module, X, seed)  # on the cells it now models
        new = clone(self)
        new.module_ = module.eval()
        new.likelihood_ = self.likelihood_
        new.nonnegative_ = bool(nonnegative)
        new.n_features_in_ = len(names)
        new.feature_names_in_ = np.asarray(names, dtype=object)
        new.history_ = history
        new.stopped_at_ = None
        new.gene_overlap_ = report
        new.adaptation_ = adaptation
        new._set_runtime(device)
        return new

    def _teach(self, module, index, cells, latents, codes, *, finetune, n_epochs, seed, device):
        """Train the transplanted ``module`` toward the pretrained ``latents`` of ``cells``
        (:class:`AdaptPlan`); returns ``(history, adaptation report)``.

        With ``finetune="genes"`` the shared genes' output rows are trained once kept at the
        pretrained decoder's values and once fitted to the cells, and the version under which
        held-out teaching cells (``validation_fraction`` of the types of at least 100 cells) are
        more likely is kept: on new cells of the pretraining data set the pretrained rows were
        better, on another data set (another preparation, other capture efficiencies) fitted
        ones, in development (transfer benchmark, seeds 0-1). Without held-out cells the
        pretrained rows are kept.
        """
        groups = np.zeros(len(latents), np.int64) if codes is None else codes
        held = validation_split(groups, float(self.validation_fraction), seed)
        fit_rows = np.arange(len(latents)) if held is None else np.flatnonzero(~held)
        options = ["all"] if finetune == "all" else \
            ["pretrained"] + ([] if held is None else ["fitted"])
        start = copy.deepcopy(module.state_dict())
        found = {}
        for decoder in options:
            module.load_state_dict(start)
            keep = _keep_pretrained(module, index, finetune, shared_rows=decoder != "pretrained")
            try:
                draw = None if codes is None else BalancedDraws(codes[fit_rows], self.class_balance)
                data = MinibatchData([cells, latents], batch_size=int(self.batch_size), seed=seed,
                                     rows=fit_rows, draw=draw)
                plan = AdaptPlan(module, latent_noise=self.latent_noise,
                                 learning_rate=self.learning_rate, n_epochs=n_epochs, seed=seed)
                fit_plan(plan, data, device=device, trainer_kwargs=self.trainer_kwargs,
                         max_epochs=n_epochs, desc="adapting", verbose=self.verbose)
            finally:
                keep()
            loglik = None if held is None else \
                _held_out_loglik(module, cells, latents, np.flatnonzero(held), device)
            found[decoder] = (copy.deepcopy(module.state_dict()), list(plan.history), loglik)
        # with two options there are held-out cells, so both have a log-likelihood
        chosen = max(found, key=lambda k: found[k][2]) if len(found) > 1 else options[0]
        module.load_state_dict(found[chosen][0])
        report = {"n_teaching_cells": int(len(fit_rows)),
                  "n_validation_cells": 0 if held is None else int(held.sum()),
                  "decoder": chosen,
                  "validation_loglik": {k: v[2] for k, v in found.items() if v[2] is not None}}
        if self.verbose and len(found) > 1:
            print(f"scaug: kept the {chosen} decoder rows of the shared genes (held-out "
                  "log-likelihood per gene: " + ", ".join(
                      f"{k} {v:.4f}" for k, v in report["validation_loglik"].items()) + ")",
                  file=sys.stderr)
        return found[chosen][1], report

    def _latents_of_observed(self, cells: np.ndarray, index: np.ndarray, seed: int,
                             batch_size: int = 256) -> np.ndarray:
        """This autoencoder's latents of ``cells`` (on the genes of an alignment ``index``),
        its genes that the cells lack imputed (:meth:`AutoencoderModule.encode_observed`)."""
        columns = np.flatnonzero(index >= 0)
        genes = torch.from_numpy(index[columns])
        generator = torch.Generator(device=self.device_).manual_seed(seed)
        out = np.empty((cells.shape[0], int(self.n_latent)), dtype=np.float32)
        for idx in _utils.iter_batches(cells.shape[0], batch_size):
            x = torch.as_tensor(_utils.dense_rows(cells, idx)[:, columns], device=self.device_)
            out[idx] = self.module_.encode_observed(x, genes, generator=generator).cpu().numpy()
        return out

    def transform(self, X, batch_size: int = 4096) -> np.ndarray:
        """Latent representation of the cells ``X``, computed batch by batch."""
        check_is_fitted(self, "module_")
        if isinstance(X, OnDiskCells):  # one sequential pass over the files
            self.check_genes(X.signature())
            return X.encode(self, batch_size)[0]
        self.check_genes(X)
        return self._latents(_utils.check_matrix(X), batch_size)

    @torch.no_grad()
    def _latents(self, X, batch_size: int = 4096) -> np.ndarray:
        """Latents of a checked matrix whose genes are known to match."""
        out = np.empty((X.shape[0], self.module_.encoder[-1].out_features), dtype=np.float32)
        # dense blocks of at most 2**24 values (64 MB), whatever the number of genes
        rows = max(1, min(batch_size, 2**24 // max(X.shape[1], 1)))
        for idx in _utils.iter_batches(X.shape[0], rows):
            x = torch.as_tensor(_utils.dense_rows(X, idx), device=self.device_)
            out[idx] = self.module_.encode(self.module_.transform_input(x)).cpu().numpy()
        return out

    @torch.no_grad()
    def generate(self, Z, library=None, *, generator: torch.Generator, sparse: bool = False):
        """Expression drawn from the decoder's likelihood at latents ``Z``.

        ``library`` (total counts per cell) is required for the NB likelihood. Returns counts for
        ``"nb"`` and values in the input's scale for ``"gaussian"`` (clipped at 0 when the
        training data were non-negative, as log-normalised data are), float32: an ndarray, or a
        CSR matrix when ``sparse`` (NB counts are then drawn sparse, never as a dense matrix).
        """
        check_is_fitted(self, "module_")
        Z, library = self._check_generate_input(Z, library)
        z = torch.as_tensor(Z, device=self.device_)
        lib = None if library is None else torch.as_tensor(library, device=self.device_)
        if sparse and self.likelihood_ == "nb":
            return self.module_.sample_counts(z, lib, generator=generator).astype(np.float32)
        x = self.module_.sample_expression(z, lib, generator=generator).cpu().numpy()
        if self.likelihood_ == "gaussian" and self.nonnegative_:
            x = np.maximum(x, 0)
        x = x.astype(np.float32)
        return sp.csr_matrix(x) if sparse else x

    def _check_generate_input(self, Z, library):
        """``Z`` and ``library`` as float32 arrays of the right shapes, or a clear error."""
        Z = np.asarray(Z, dtype=np.float64)
        if Z.ndim != 2 or Z.shape[1] != int(self.n_latent):
            raise ValueError(f"Z must be a (cells, {self.n_latent}) array of latents (this "
                             f"autoencoder's n_latent); got shape {Z.shape}.")
        if not np.all(np.isfinite(Z)):
            raise ValueError(f"Z holds {int((~np.isfinite(Z)).sum())} NaN or infinite "
                             "value(s); latents must be finite (a model whose training diverged "
                             "gives such latents: refit it with a lower learning_rate).")
        _utils.check_float32_range(Z, "Z")
        if self.likelihood_ == "nb":
            if library is None:
                raise ValueError("library is required for a counts (negative binomial) "
                                 "autoencoder: the total counts of each cell to generate, e.g. "
                                 "drawn from real cells' totals (X.sum(axis=1)).")
            library = np.asarray(library, dtype=np.float64)
            if library.shape != (Z.shape[0],):
                raise ValueError(f"library must hold one total per row of Z ({Z.shape[0]}); got "
                                 f"shape {library.shape}.")
            if not np.all(np.isfinite(library)) or (library < 0).any():
                raise ValueError("library must hold finite, non-negative total counts.")
            _utils.check_float32_range(library, "library")
            library = library.astype(np.float32)
        elif library is not None:
            library = np.asarray(library, dtype=np.float32)
        return Z.astype(np.float32), library

    # -- persistence ---------------------------------------------------------------------------
    def _state(self) -> dict:
        check_is_fitted(self, "module_")
        names = getattr(self, "feature_names_in_", None)
        return {
            "params": _utils.plain_params(self, exclude=("device", "random_state", "trainer_kwargs",
                                                         "cpu_threads")),
            "likelihood": self.likelihood_,
            "nonnegative": bool(self.nonnegative_),
            "n_features_in": int(self.n_features_in_),
            "feature_names_in": None if names is None else _utils.to_plain_list(names),
            "module": {k: v.detach().cpu() for k, v in self.module_.state_dict().items()},
            "history": [float(v) for v in self.history_],
            "stopped_at": self.stopped_at_,
            "gene_overlap": getattr(self, "gene_overlap_", None),
            "adaptation": getattr(self, "adaptation_", None),
        }

    @classmethod
    def _from_state(cls, state: dict, device="auto") -> CellAutoencoder:
        params = dict(state["params"])
        params["hidden"] = tuple(params["hidden"])
        ae = cls(**params, device=device)
        ae.likelihood_ = state["likelihood"]
        ae.nonnegative_ = state["nonnegative"]
        ae.n_features_in_ = state["n_features_in"]
        if state["feature_names_in"] is not None:
            ae.feature_names_in_ = np.asarray(state["feature_names_in"], dtype=object)
        ae.module_ = AutoencoderModule(ae.n_features_in_, int(ae.n_latent), ae.hidden, ae.likelihood_,
                                       ae.dispersion)
        ae.module_.load_state_dict(state["module"])
        ae.module_.eval()
        ae.history_ = state["history"]
        ae.stopped_at_ = state.get("stopped_at")
        if state.get("gene_overlap") is not None:  # an adapted autoencoder (see adapt)
            ae.gene_overlap_ = dict(state["gene_overlap"])
            ae.adaptation_ = state.get("adaptation")
        ae._set_runtime(_utils.resolve_device(device))
        return ae

    def save(self, path, overwrite: bool = False) -> None:
        """Write the fitted autoencoder to one file (atomically): weights, genes, settings and
        provenance, no per-cell data.

        In a distributed run (DDP), only the process of rank 0 writes: the model is the same on
        every process, and the others return at once (without waiting for the file).
        """
        if process_rank()[0] != 0:
            return
        state = self._state()
        state.update(_utils.provenance(n_obs=None, n_features=self.n_features_in_))
        state.update(format_version=_utils.FORMAT_VERSION, **{"class": "CellAutoencoder"})
        _utils.atomic_save(state, path, overwrite=overwrite)

    @classmethod
    def load(cls, path, device="auto") -> CellAutoencoder:
        """Read an autoencoder written by :meth:`save`; ``device`` picks where it runs."""
        state = _utils.checked_load(path, expected_class="CellAutoencoder", required=STATE_FIELDS)
        with _utils.damaged_file(path):
            return cls._from_state(state, device)

    def __getstate__(self):
        # weights travel on the CPU, so a model fitted on a GPU unpickles on a machine without one
        state = self.__dict__.copy()
        if "module_" in state:
            state["module_"] = copy.deepcopy(self.module_).cpu()
            state["device_"] = torch.device("cpu") if self.device_.type != "cpu" else self.device_
            state["_fitted_device"] = str(self.device_)
        return state

    def __setstate__(self, state):
        fitted_device = state.pop("_fitted_device", None)
        self.__dict__.update(state)
        if fitted_device is not None and fitted_device.startswith("cuda") and torch.cuda.is_available():
            self._set_runtime(torch.device(fitted_device))


#: what a saved autoencoder's state must hold (see ``_state``)
STATE_FIELDS = ("params", "likelihood", "nonnegative", "n_features_in", "feature_names_in",
                "module", "history")

#: at most this many values of counts held at once to match detection (128 MiB of float32)
_DETECTION_VALUES = 2**25


@torch.no_grad()
def _match_detection(module, X, seed: int, max_cells: int = 10_000) -> None:
    """Shift ``module``'s gene dispersions in place so that it detects each gene in as many of
    (up to ``max_cells`` of) the cells ``X`` as they do (``match_detection``)."""
    n = min(max_cells, max(1, _DETECTION_VALUES // X.shape[1]))
    if isinstance(X, OnDiskCells):
        cells = _utils.dense_rows(X.sample(seed=seed), slice(None))[:n]
    else:
        rows = np.sort(np.random.default_rng(seed).choice(X.shape[0], min(n, X.shape[0]),
                                                          replace=False))
        cells = _utils.dense_rows(X, rows)
    x = torch.as_tensor(cells, device=module.gene_log_scale.device)
    module.gene_log_scale.add_(module.detection_offsets(x))
