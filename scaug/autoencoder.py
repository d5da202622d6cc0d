"""CellAutoencoder: the pretrained encoder/decoder of SCLD, usable and savable on its own."""

from __future__ import annotations

import copy
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import StrOptions, validate_params
from sklearn.utils.validation import check_is_fitted

from . import _torch_utils, _utils, transfer
from .nn import AutoencoderModule
from .nn.autoencoder_module import TARGET_SUM  # noqa: F401  (re-exported: the encoder's input scale)
from .train import (
    AutoencoderPlan,
    BalancedDraws,
    ConvergenceStop,
    MinibatchData,
    OnDiskCells,
    check_trainer_kwargs,
    class_codes,
    default_epochs,
    fit_plan,
    gene_moments,
    match_detection,
    process_rank,
    validation_split,
)


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

    def to(self, device) -> CellAutoencoder:
        """Move the fitted network to ``device`` (a ``torch.device``); returns ``self``."""
        self.device_ = device
        self.module_.to(device)
        return self

    # -- fit / transform -----------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    @_torch_utils.with_cpu_threads
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
        device = _torch_utils.resolve_device(self.device)
        check_trainer_kwargs(self.trainer_kwargs)
        on_disk = isinstance(X, OnDiskCells)
        names = _utils.resolve_feature_names(X.signature() if on_disk else X, feature_names)
        if not on_disk:
            X = _utils.check_matrix(X, min_rows=2)
        likelihood = _utils.decide_likelihood(X.sample() if on_disk else X, self.likelihood)
        codes = class_codes(y, X.shape[0])
        if validation_cells is not None:
            validation_cells = _utils.check_mask(validation_cells, X.shape[0], "validation_cells")
        seed = _utils.seed_from(self.random_state)
        n_epochs = self.max_epochs or default_epochs(X.shape[0], self.batch_size)
        with _torch_utils.seeded(seed, device):
            module = AutoencoderModule(X.shape[1], int(self.n_latent), tuple(self.hidden),
                                       likelihood, self.dispersion)
            nonnegative = True
            if likelihood == "gaussian":
                mean, scale, nonnegative = X.gene_moments() if on_disk else gene_moments(X)
                module.gene_mean.copy_(torch.from_numpy(mean))
                module.gene_scale.copy_(torch.from_numpy(scale))
            plan = self._train(module, X, codes, n_epochs=n_epochs, seed=seed, device=device,
                               verbose=self.verbose, validation_cells=validation_cells)
            if self.match_detection and likelihood == "nb":
                match_detection(module, X, seed)
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
        self.to(device)
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
        report = transfer.align(self, shape[1], names, 0.0)[1]
        del report["min_overlap"]
        return report

    @validate_params({"min_overlap": [_utils.Interval(Real, 0, 1, closed="both")],
                      "max_epochs": [_utils.Interval(Integral, 0, None, closed="left"), None],
                      "finetune": [StrOptions({"genes", "all"})],
                      "random_state": ["random_state"]},
                     prefer_skip_nested_validation=True)
    @_torch_utils.with_cpu_threads
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
        return transfer.adapt(self, X, y, feature_names=feature_names, min_overlap=min_overlap,
                              max_epochs=max_epochs, finetune=finetune, random_state=random_state)

    def transform(self, X, batch_size: int = 4096) -> np.ndarray:
        """Latent representation of the cells ``X``, computed batch by batch."""
        check_is_fitted(self, "module_")
        if isinstance(X, OnDiskCells):  # one sequential pass over the files
            self.check_genes(X.signature())
            return X.encode(self, batch_size)[0]
        self.check_genes(X)
        return self.encode(_utils.check_matrix(X), batch_size)

    @torch.no_grad()
    def encode(self, X, batch_size: int = 4096) -> np.ndarray:
        """Latents of a checked matrix (:func:`scaug._utils.check_matrix`) whose genes the
        caller knows to be this autoencoder's: :meth:`transform` without the checks."""
        out = np.empty((X.shape[0], self.module_.encoder[-1].out_features), dtype=np.float32)
        # dense blocks of at most 2**24 values (64 MB), whatever the number of genes
        rows = max(1, min(batch_size, 2**24 // max(X.shape[1], 1)))
        for idx in _utils.iter_batches(X.shape[0], rows):
            x = torch.as_tensor(_utils.dense_rows(X, idx), device=self.device_)
            out[idx] = self.module_.encode(self.module_.transform_input(x)).cpu().numpy()
        return out

    _latents = encode  # 0.1's name; scaug.baselines calls it until it switches to encode

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
    def state(self) -> dict:
        """The fitted autoencoder as plain values and tensors (what :meth:`save` writes,
        and what a saved SCLD holds of its autoencoder)."""
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
    def from_state(cls, state: dict, device="auto") -> CellAutoencoder:
        """The fitted autoencoder that :meth:`state` describes, on ``device``."""
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
        ae.to(_torch_utils.resolve_device(device))
        return ae

    def save(self, path, overwrite: bool = False) -> None:
        """Write the fitted autoencoder to one file (atomically): weights, genes, settings and
        provenance, no per-cell data.

        In a distributed run (DDP), only the process of rank 0 writes: the model is the same on
        every process, and the others return at once (without waiting for the file).
        """
        if process_rank()[0] != 0:
            return
        state = self.state()
        state.update(_torch_utils.provenance(n_obs=None, n_features=self.n_features_in_))
        state.update(format_version=_utils.FORMAT_VERSION, **{"class": "CellAutoencoder"})
        _torch_utils.atomic_save(state, path, overwrite=overwrite)

    @classmethod
    def load(cls, path, device="auto") -> CellAutoencoder:
        """Read an autoencoder written by :meth:`save`; ``device`` picks where it runs."""
        state = _torch_utils.checked_load(path, expected_class="CellAutoencoder", required=STATE_FIELDS)
        with _utils.damaged_file(path):
            return cls.from_state(state, device)

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
            self.to(torch.device(fitted_device))


#: what a saved autoencoder's state must hold (see ``state``)
STATE_FIELDS = ("params", "likelihood", "nonnegative", "n_features_in", "feature_names_in",
                "module", "history")


def is_fitted_autoencoder(obj) -> bool:
    """Whether ``obj`` is a fitted :class:`CellAutoencoder` (a pretrained one, not a template)."""
    return isinstance(obj, CellAutoencoder) and hasattr(obj, "module_")
