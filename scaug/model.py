"""SCLD: single-cell latent diffusion with pre-guidance and post-guidance."""

from __future__ import annotations

import copy
import os
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, _fit_context, clone
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from . import _utils, sampling
from .autoencoder import CellAutoencoder
from .diffusion import SAMPLERS, GaussianDiffusion
from .nn import Denoiser, LatentClassifier
from .train import (
    BalancedDraws,
    ClassifierPlan,
    DenoiserPlan,
    MinibatchData,
    OnDiskCells,
    fit_plan,
    process_rank,
)


def _smoothed_bootstrap(Z: np.ndarray, codes: np.ndarray, strength: float):
    """Per cell: its latent shrunk toward its type's mean, and the sd of the noise to add.

    Silverman's smoothed bootstrap with variance correction: a type of ``n`` cells gets Gaussian
    noise of ``f = min(1, strength / sqrt(n))`` times its per-dimension sd, and its cells are
    shrunk toward the type mean by ``1 / sqrt(1 + f**2)`` so the type keeps its variance. A
    denoiser trained on ten cells of a type otherwise learns those ten points and samples them
    back (copies, in latent space); the noise fades as a type grows.
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


def _default_steps(n_obs: int, base: int) -> int:
    # more data wants more steps, but even 100 cells need enough steps to learn the latents
    return int(np.clip(base * (1 + np.log10(max(n_obs, 10) / 1000) / 2), base // 2, 3 * base))


class SCLD(BaseEstimator):
    """Single-Cell Latent Diffusion: synthesize cells of chosen types.

    An autoencoder (:class:`scaug.autoencoder.CellAutoencoder`) maps cells to a latent space; a
    diffusion model learns the distribution of the latents, conditioned on the cell type
    (**pre-guidance**, trained with label dropout and sampled with classifier-free guidance);
    **post-guidance** steers sampling with a classifier on noisy latents and screens finished
    samples by type confidence and closeness to the real cells of the type. Synthetic latents are
    decoded into the space of the training data: integer counts (negative binomial, library sizes
    drawn from the target type's real cells) or continuous values.

    Parameters
    ----------
    autoencoder : None, CellAutoencoder or path, default=None
        ``None`` trains a new autoencoder in :meth:`fit`. A fitted ``CellAutoencoder`` (or the path
        of a saved one) is reused as is, frozen: only the diffusion part is trained. An unfitted
        ``CellAutoencoder`` is a template: :meth:`fit` trains a clone of it (its own settings, with
        this model's ``random_state``, ``device`` and ``verbose``, and ``max_epochs`` capped by
        this model's).

        A pretrained autoencoder whose genes (by name) differ from ``X``'s is adapted to them
        first (:meth:`CellAutoencoder.adapt`: shared genes' weights copied, the trunk kept, the
        gene-specific layers fine-tuned on ``X`` for ``max_epochs`` or its default), so the model
        generates exactly ``X``'s genes in ``X``'s order; ``X`` in the same genes in another
        order is only reordered. See ``docs/transfer.md``.
    min_gene_overlap : float in [0, 1], default=0.5
        For a pretrained autoencoder with other genes: the least fraction of ``X``'s genes it
        must know; less is refused before any training.
    n_latent : int, default=16
        Latent dimension of an autoencoder trained from scratch (``autoencoder=None``).
    ae_hidden : tuple of int, default=(256, 128)
        Hidden widths of an autoencoder trained from scratch (``autoencoder=None``).
    width, depth : int, default=128, 3
        Width and number of residual blocks of the denoiser.
    max_epochs : int or None, default=None
        Caps the epochs of every training stage (an epoch of the diffusion and classifier stages
        is as many class-balanced minibatches as one pass over the cells takes). ``None`` uses
        the tuned defaults.
    diffusion_steps : int or None, default=None
        Optimiser steps for the denoiser (the latent classifier gets half as many); ``None``
        scales with the number of cells (3000 for 1000 cells, 4500 for 10000).
    batch_size : int, default=256
    learning_rate : float, default=1e-3
    label_dropout : float, default=0.15
        Fraction of training steps that see the null label (classifier-free guidance).
    latent_smoothing : float, default=4.0
        The denoiser learns each type's latents with Gaussian noise of ``latent_smoothing /
        sqrt(n)`` times the type's sd (``n`` its cells; at most 1), the type's variance kept (a
        smoothed bootstrap). Without it (0), a type of a few cells is learned as those few points
        and sampled back as near-copies of them (``docs/fidelity_10shot.md``); the noise fades as
        a type grows (a 1600-cell type gets 10 % of its sd).
    guidance_scale : float, default=1.0
        Classifier-free guidance weight ``w`` in ``eps_u + w * (eps_c - eps_u)``; 1 is plain
        conditional sampling (the default: on 10-shot types, ``w=2`` made cells easier to tell
        from real ones), above 1 pushes cells toward what is typical of the type, 0 ignores the
        label. Ignored when fitted without labels.
    classifier_scale : float, default=0.0
        Classifier-guidance scale (post-guidance); 0, the default, switches it off. It steers
        samples toward the type's decision region and away from realistic cells
        (``docs/fidelity_10shot.md``).
    screening : bool, default=False
        Post-guidance screening: keep a synthetic cell only if the latent classifier gives the
        target type at least ``screening_threshold`` and its nearest real latent of the type is
        within the ``screening_quantile`` of the type's real nearest-neighbour distances (times
        ``screening_tolerance``); redraw up to ``max_rounds`` times.
    screening_threshold : float, default=0.5
    screening_quantile : float, default=0.9
    screening_tolerance : float, default=1.0
    max_rounds : int, default=10
    n_sample_steps : int, default=50
        Steps of the sampler.
    sampler : {"ddim", "ancestral", "dpm-solver++"}, default="ddim"
        DDIM (deterministic), the stochastic DDPM sampler, or DPM-Solver++(2M), a second-order
        solver that needs fewer steps (``docs/sampling_speed.md`` compares them).
    trainer_kwargs : dict or None, default=None
        Extra arguments of the Lightning ``Trainer`` for every training stage, to scale out:
        ``{"devices": 4, "strategy": "ddp", "num_nodes": 2}``. An autoencoder trained inside
        :meth:`fit` gets them too.
    cpu_threads : int or None, default=1
        torch CPU threads while fitting and sampling; the caller's setting is restored after.
        SCLD's networks are small: a second thread gains little alone and costs a lot on a
        shared machine, where two busy processes fight over the cores
        (``docs/contention.md``). ``None`` keeps torch's own setting.
    device : {"auto", "cpu", "cuda", "cuda:N"} or torch.device, default="auto"
    random_state : int, RandomState instance or None, default=None
        Seeds everything (numpy and torch); the same seed and data give the same cells on CPU.
    verbose : bool, default=True
        Progress bars for each training stage and for sampling.

    Attributes
    ----------
    autoencoder_ : CellAutoencoder
    gene_overlap_ : dict or None
        How ``X``'s genes met those of the given pretrained autoencoder (``n_shared``,
        ``n_missing``, ``n_new``, ``overlap``; see :meth:`CellAutoencoder.gene_overlap`) when
        :meth:`fit` adapted it to them; None otherwise.
    denoiser_ : scaug.nn.Denoiser
        EMA weights of the denoiser.
    classifier_ : scaug.nn.LatentClassifier or None
        Classifier on noisy latents (None when fitted without labels).
    classes_ : ndarray
        The cell types, in the order of the label embedding: ``classes_[i]`` is label ``i``.
    class_counts_ : ndarray of int
        Labelled training cells of each type.
    n_unlabelled_ : int
        Training cells labelled ``-1`` (unlabelled).
    counts_ : bool
        Whether the model was fitted on (and generates) integer counts.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when fitted on a DataFrame with string columns, or given ``feature_names``.
    type_summaries_ : scaug.sampling.TypeSummaries
        Per type: library-size quantiles and a Gaussian summary of its latents (for library
        draws and screening). The model keeps no per-cell data.
    sampling_report_ : dict
        Set by :meth:`sample`: per type, cells requested, candidates drawn, candidates that
        passed screening (`accepted`) and the acceptance rate.
    sample_latents_ : ndarray of shape (n_total, n_latent)
        Set by :meth:`sample`: the autoencoder latents its cells were decoded from, comparable
        with ``autoencoder_.transform(X)`` (for example to check that samples are not copies of
        training cells, which the count noise hides).

    Examples
    --------
    >>> from scaug import SCLD
    >>> from scaug.datasets import simulate
    >>> adata = simulate(n_cells=300, n_genes=50, rare_sizes=(20,), random_state=0)
    >>> model = SCLD(max_epochs=2, verbose=False, random_state=0)
    >>> model = model.fit(adata.X, adata.obs["cell_type"].to_numpy())
    >>> X_syn, y_syn = model.sample({"type_3": 5}, random_state=0)
    >>> X_syn.shape
    (5, 50)
    """

    _parameter_constraints: dict = {
        "autoencoder": [None, CellAutoencoder, str, os.PathLike],
        "min_gene_overlap": [_utils.Interval(Real, 0, 1, closed="both")],
        "n_latent": [_utils.Interval(Integral, 1, None, closed="left")],
        "ae_hidden": [_utils.PositiveIntTuple()],
        "width": [_utils.Interval(Integral, 1, None, closed="left")],
        "depth": [_utils.Interval(Integral, 1, None, closed="left")],
        "max_epochs": [_utils.Interval(Integral, 1, None, closed="left"), None],
        "diffusion_steps": [_utils.Interval(Integral, 1, None, closed="left"), None],
        "batch_size": [_utils.Interval(Integral, 1, None, closed="left")],
        "learning_rate": [_utils.Interval(Real, 0, None, closed="neither")],
        "label_dropout": [_utils.Interval(Real, 0, 1, closed="left")],
        "latent_smoothing": [_utils.Interval(Real, 0, None, closed="left")],
        "guidance_scale": [_utils.Interval(Real, 0, None, closed="left")],
        "classifier_scale": [_utils.Interval(Real, 0, None, closed="left")],
        "screening": ["boolean"],
        "screening_threshold": [_utils.Interval(Real, 0, 1, closed="left")],
        "screening_quantile": [_utils.Interval(Real, 0, 1, closed="right")],
        "screening_tolerance": [_utils.Interval(Real, 0, None, closed="neither")],
        "max_rounds": [_utils.Interval(Integral, 1, None, closed="left")],
        "n_sample_steps": [_utils.Interval(Integral, 1, None, closed="left")],
        "sampler": [StrOptions(set(SAMPLERS))],
        "trainer_kwargs": [dict, None],
        "cpu_threads": [_utils.Interval(Integral, 1, None, closed="left"), None],
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "verbose": ["boolean"],
    }

    def __init__(self, *, autoencoder=None, min_gene_overlap=0.5, n_latent=16, ae_hidden=(256, 128),
                 width=128, depth=3,
                 max_epochs=None, diffusion_steps=None, batch_size=256, learning_rate=1e-3,
                 label_dropout=0.15, latent_smoothing=4.0, guidance_scale=1.0, classifier_scale=0.0,
                 screening=False, screening_threshold=0.5, screening_quantile=0.9,
                 screening_tolerance=1.0, max_rounds=10, n_sample_steps=50, sampler="ddim",
                 trainer_kwargs=None, cpu_threads=1, device="auto", random_state=None,
                 verbose=True):
        self.autoencoder = autoencoder
        self.min_gene_overlap = min_gene_overlap
        self.n_latent = n_latent
        self.ae_hidden = ae_hidden
        self.width = width
        self.depth = depth
        self.max_epochs = max_epochs
        self.diffusion_steps = diffusion_steps
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.label_dropout = label_dropout
        self.latent_smoothing = latent_smoothing
        self.guidance_scale = guidance_scale
        self.classifier_scale = classifier_scale
        self.screening = screening
        self.screening_threshold = screening_threshold
        self.screening_quantile = screening_quantile
        self.screening_tolerance = screening_tolerance
        self.max_rounds = max_rounds
        self.n_sample_steps = n_sample_steps
        self.sampler = sampler
        self.trainer_kwargs = trainer_kwargs
        self.cpu_threads = cpu_threads
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_clone__(self):
        # a fitted autoencoder is a pretrained artefact, not a template: a clone reuses it (SCLD
        # never modifies it) instead of replacing it by an unfitted copy that would be retrained
        params = self.get_params(deep=False)
        pretrained = _is_fitted_autoencoder(params["autoencoder"])
        return type(self)(**{k: v if (k == "autoencoder" and pretrained) else clone(v, safe=False)
                             for k, v in params.items()})

    # -- the autoencoder -----------------------------------------------------------------------
    def _pretrained_autoencoder(self, device):
        """A private copy of the given fitted autoencoder (the user's object is never changed),
        or None when one must be trained."""
        ae = self.autoencoder
        if isinstance(ae, str | os.PathLike):
            return CellAutoencoder.load(ae, device=device)
        if _is_fitted_autoencoder(ae):
            ae = copy.deepcopy(ae)
            ae._set_runtime(device)
            return ae
        return None

    def _new_autoencoder(self, device, seed) -> CellAutoencoder:
        if isinstance(self.autoencoder, CellAutoencoder):  # a template
            ae = clone(self.autoencoder)
            epochs = ae.max_epochs
            if self.max_epochs is not None:
                epochs = self.max_epochs if epochs is None else min(epochs, self.max_epochs)
            return ae.set_params(max_epochs=epochs, device=device, random_state=seed,
                                 verbose=self.verbose, trainer_kwargs=self.trainer_kwargs,
                                 cpu_threads=None)
        # cpu_threads=None: this model's setting is already in force
        return CellAutoencoder(n_latent=int(self.n_latent), hidden=tuple(self.ae_hidden),
                               max_epochs=self.max_epochs, device=device, random_state=seed,
                               verbose=self.verbose, trainer_kwargs=self.trainer_kwargs,
                               cpu_threads=None)

    # -- fit -----------------------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    @_utils.with_cpu_threads
    def fit(self, X, y=None, *, feature_names=None):
        """Fit the autoencoder (unless given) and the latent diffusion model.

        Parameters
        ----------
        X : array-like, sparse matrix, DataFrame of shape (n_cells, n_genes), or OnDiskCells
            Integer counts (preferred) or continuous expression. Sparse input is densified one
            minibatch at a time, never whole. For an AnnData use :func:`scaug.tl.fit`.
            :class:`scaug.OnDiskCells` streams the cells from AnnData files on disk: the
            autoencoder trains from disk, one sequential pass encodes the cells, and the latent
            stages train in memory on the latents.
        y : array-like of shape (n_cells,), optional
            Cell-type labels (any hashable values); for an ``OnDiskCells`` without ``y``, its
            ``labels`` (``labels_key``). Without labels only holistic synthesis is
            possible. Cells labelled ``-1`` are unlabelled (scikit-learn's semi-supervised
            convention; for string labels use ``np.where(annotated, labels.astype(object), -1)``,
            as the string ``"-1"`` is refused as ambiguous): they train the autoencoder and the
            diffusion model under the null label, but not the latent classifier, and ``-1`` is
            not a type that can be generated. Many unlabelled cells beside a few labelled ones of
            a rare type are what lets the autoencoder render that type's unseen cells
            (``docs/fidelity_10shot.md``).
        feature_names : array-like of str, optional
            Gene names for input without column names (an AnnData's ``var_names``); a saved
            model then refuses data with other genes, and a pretrained ``autoencoder`` with other
            genes is aligned to these by name (see ``min_gene_overlap``).

        Returns
        -------
        self : SCLD
            Fitted. A fit that fails or is interrupted leaves the model as it was (an unfitted
            model stays unfitted, a fitted one keeps its previous state).
        """
        device = _utils.resolve_device(self.device)
        _utils.check_trainer_kwargs(self.trainer_kwargs)
        on_disk = isinstance(X, OnDiskCells)
        names = _utils.resolve_feature_names(X.signature() if on_disk else X, feature_names)
        if on_disk:
            y = X.labels if y is None else y
        else:
            X = _utils.check_matrix(X, min_rows=2)
        unlabelled = np.zeros(X.shape[0], dtype=bool)
        if y is not None:
            y = _utils.check_labels(y, X.shape[0])
            unlabelled = _utils.unlabelled_mask(y)
            if unlabelled.all():
                raise ValueError("Every label in y is -1 (unlabelled); fit with y=None for a "
                                 "model without labels, or label some cells.")
            _utils.check_sortable(y[~unlabelled])
        ae = self._pretrained_autoencoder(device)
        overlap = None
        if ae is not None:
            # other genes (by name) are aligned, or refused before any training
            overlap = ae._overlap_or_none(X.shape[1], names, float(self.min_gene_overlap))
            if ae.likelihood_ == "nb" and not _utils.is_count_matrix(X.sample() if on_disk else X):
                raise ValueError("The given autoencoder models counts, but X is not integer counts.")

        seed = _utils.seed_from(self.random_state)
        if ae is None:
            ae = self._new_autoencoder(device, seed).fit(X, feature_names=names)
        elif overlap is not None:  # a private copy, so its settings may change
            reordered = overlap["n_new"] == 0 and overlap["n_missing"] == 0
            ae = ae.set_params(verbose=self.verbose, trainer_kwargs=self.trainer_kwargs,
                               cpu_threads=None).adapt(
                X, feature_names=names, min_overlap=float(self.min_gene_overlap),
                max_epochs=0 if reordered else self.max_epochs, random_state=seed)
        Z, library = X.encode(ae) if on_disk else (ae._latents(X), _utils.row_sums(X))
        if y is None:
            classes = None
            codes = np.zeros(X.shape[0], dtype=np.int64)
        else:
            classes, labelled_codes = np.unique(y[~unlabelled], return_inverse=True)
            # unlabelled cells get the null label's index: the diffusion model learns them under it
            codes = np.full(X.shape[0], len(classes), dtype=np.int64)
            codes[~unlabelled] = labelled_codes
        n_classes = 1 if classes is None else len(classes)
        counts = ae.likelihood_ == "nb"
        latent_mean = Z.mean(0)
        latent_scale = Z.std(0) + 1e-6
        Zs = ((Z - latent_mean) / latent_scale).astype(np.float32)
        labelled = ~unlabelled
        summaries = sampling.TypeSummaries.fit(
            Zs[labelled], codes[labelled], n_classes,
            library=library[labelled] if counts else None,
            quantile=float(self.screening_quantile))

        n_steps = self.diffusion_steps or _default_steps(X.shape[0], 3000)
        if self.max_epochs is not None:
            n_steps = min(n_steps, self.max_epochs * max(1, int(np.ceil(X.shape[0] / self.batch_size))))
        diffusion = GaussianDiffusion()
        null = n_classes if classes is not None else 0
        shrunk, spread = _smoothed_bootstrap(Zs, np.where(unlabelled, -1, codes),
                                             float(self.latent_smoothing))
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
                _utils.flush_denormal():
            torch.manual_seed(seed + 1)
            denoiser = Denoiser(Zs.shape[1], n_classes, int(self.width), int(self.depth))
            plan = DenoiserPlan(denoiser, diffusion, null_label=null,
                                label_dropout=self.label_dropout, conditional=classes is not None,
                                learning_rate=self.learning_rate, n_steps=n_steps, seed=seed + 1)
            data = MinibatchData([shrunk, spread, codes], batch_size=int(self.batch_size),
                                 seed=seed + 1, n_batches=n_steps, draw=BalancedDraws(codes))
            fit_plan(plan, data, device=device, trainer_kwargs=self.trainer_kwargs,
                     max_steps=n_steps, desc="diffusion", verbose=self.verbose)
            denoiser_ema, diffusion_history = plan.averaged.eval(), list(plan.history)
            classifier, classifier_history = None, []
            if classes is not None and n_classes > 1:
                clf = LatentClassifier(Zs.shape[1], n_classes)
                n_clf = max(1, n_steps // 2)
                cplan = ClassifierPlan(clf, diffusion, learning_rate=self.learning_rate,
                                       n_steps=n_clf, seed=seed + 2)
                cdata = MinibatchData([Zs[labelled], codes[labelled]],
                                      batch_size=int(self.batch_size), seed=seed + 2,
                                      n_batches=n_clf, draw=BalancedDraws(codes[labelled]))
                fit_plan(cplan, cdata, device=device, trainer_kwargs=self.trainer_kwargs,
                         max_steps=n_clf, desc="classifier", verbose=self.verbose)
                classifier, classifier_history = cplan.averaged.eval(), list(cplan.history)

        # all or nothing: the fitted state is set only once every stage has finished
        _utils.drop_fitted_state(self)
        self.autoencoder_ = ae
        self.gene_overlap_ = overlap
        self.counts_ = counts
        self.n_features_in_ = X.shape[1]
        if names is not None:
            self.feature_names_in_ = names
        self.input_dtype_ = str(X.dtype)
        self.sparse_input_ = X.sparse if on_disk else sp.issparse(X)
        self.n_train_ = int(X.shape[0])
        self.classes_ = classes
        self.class_counts_ = np.bincount(codes[labelled], minlength=n_classes)
        self.n_unlabelled_ = int(unlabelled.sum())
        self.latent_mean_ = latent_mean
        self.latent_scale_ = latent_scale
        self.type_summaries_ = summaries
        self.diffusion_ = diffusion
        self.classifier_ = None if classifier is None else classifier.to(device)
        self.classifier_history_ = classifier_history
        self.diffusion_history_ = diffusion_history
        self.device_ = device
        self.denoiser_ = denoiser_ema.to(device)  # last: check_is_fitted looks for it
        return self

    # -- sampling ------------------------------------------------------------------------------
    @_utils.with_cpu_threads
    def sample(self, n, *, random_state=None, guidance_scale=None, classifier_scale=None,
               screening=None, screening_threshold=None, n_sample_steps=None, sampler=None,
               batch_size=4096, max_cells=1_000_000):
        """Synthesize cells.

        Parameters
        ----------
        n : int or mapping
            ``{cell type: number}`` synthesizes those types (pre-guidance); an int synthesizes the
            whole population, with types drawn in the training proportions.
        random_state : int, RandomState instance or None, default=None
            Seeds the sampling noise; ``None`` falls back to the model's ``random_state``.
        guidance_scale, classifier_scale, screening, screening_threshold, n_sample_steps, sampler
            Override the model's settings for this call (``None`` keeps them).
        batch_size : int, default=4096
            Cells per batch on the device (memory is bounded by it).
        max_cells : int, default=1_000_000
            Larger requests are refused before any work; raise it to generate more.

        Returns
        -------
        X_syn : ndarray or CSR matrix of shape (n_total, n_genes)
            Integer counts if the model was fitted on counts, continuous values otherwise; CSR
            when the model was fitted on sparse input. The input's dtype, or a wider integer
            dtype (with a warning) when a count would not fit it.
        y_syn : ndarray of shape (n_total,) or None
            The cell type each cell was generated for (None when fitted without labels).
        """
        check_is_fitted(self, "denoiser_")
        opts = {k: getattr(self, k) if v is None else v for k, v in dict(
            guidance_scale=guidance_scale, classifier_scale=classifier_scale, screening=screening,
            screening_threshold=screening_threshold, n_sample_steps=n_sample_steps,
            sampler=sampler).items()}
        _utils.validate_against(self, opts)
        for name, v in (("batch_size", batch_size), ("max_cells", max_cells)):
            if not (isinstance(v, Integral) and not isinstance(v, bool) and v >= 1):
                raise ValueError(f"{name} must be a positive int; got {v!r}.")
        seed = _utils.seed_from(self.random_state if random_state is None else random_state)
        rng = np.random.default_rng(seed)
        gen = _utils.cpu_generator(seed)
        plan = sampling.resolve_request(n, self.classes_, self.class_counts_, rng, int(max_cells))
        with _utils.flush_denormal():
            return self._sample(plan, opts, int(batch_size), rng, gen)

    def _sample(self, plan, opts, batch_size, rng, gen):
        labelled = self.classes_ is not None
        null = len(self.classes_) if labelled else 0

        def draw(code, m):
            return sampling.draw_latents(
                self.diffusion_, self.denoiser_, self.classifier_, code=code, n=m,
                n_latent=len(self.latent_mean_), labelled=labelled, null=null, gen=gen,
                device=self.device_, guidance_scale=float(opts["guidance_scale"]),
                classifier_scale=float(opts["classifier_scale"]),
                n_sample_steps=int(opts["n_sample_steps"]), sampler=opts["sampler"],
                batch_size=batch_size)

        report, blocks_z, blocks_y = {}, [], []
        bar = tqdm(total=sum(k for _, k in plan), desc="sampling", disable=not self.verbose,
                   leave=False)
        for code, k in plan:
            if k == 0:
                continue
            label = _utils.plain_label(self.classes_[code]) if labelled else None
            if not opts["screening"]:
                Zc, drawn, accepted = draw(code, k), k, k
            else:
                def accept(Z, code=code):
                    return sampling.screen(
                        self.type_summaries_, self.classifier_, self.diffusion_, code, Z,
                        threshold=opts["screening_threshold"],
                        tolerance=self.screening_tolerance, device=self.device_)

                Zc, drawn, accepted = sampling.screened_latents(
                    lambda m, code=code: draw(code, m), accept, k, max_rounds=self.max_rounds,
                    label="cells" if label is None else label)
            report[label] = {"requested": k, "drawn": drawn, "accepted": accepted,
                             "acceptance_rate": accepted / drawn if drawn else float("nan")}
            blocks_z.append(Zc)
            blocks_y.append(np.full(k, code))
            bar.update(k)
        bar.close()
        self.sampling_report_ = report
        n_latent = len(self.latent_mean_)
        Zs = np.concatenate(blocks_z) if blocks_z else np.zeros((0, n_latent), np.float32)
        codes = np.concatenate(blocks_y) if blocks_y else np.zeros(0, np.int64)
        Z = (Zs * self.latent_scale_ + self.latent_mean_).astype(np.float32)
        self.sample_latents_ = Z
        library = self.type_summaries_.draw_library(codes, rng) if self.counts_ else None
        # about 64 MB of float32 per decoded block, whatever the number of genes
        cells_per_batch = max(1, min(4096, 2**24 // self.n_features_in_))
        X = sampling.decode(self.autoencoder_, Z, library, gen, sparse=self.sparse_input_,
                            cells_per_batch=cells_per_batch)
        if self.counts_ and np.issubdtype(np.dtype(self.input_dtype_), np.integer):
            X = X.astype(sampling.output_dtype(self.input_dtype_, X.max() if X.shape[0] else 0))
        labels = None if self.classes_ is None else self.classes_[codes]
        return X, labels

    # -- genes and persistence -----------------------------------------------------------------
    def check_genes(self, X) -> None:
        """Raise a clear error if ``X``'s genes differ from those the model was trained on."""
        check_is_fitted(self, "denoiser_")
        _utils.check_genes(X.shape[1], _utils.feature_names(X), expected_n=self.n_features_in_,
                           expected_names=getattr(self, "feature_names_in_", None),
                           what="this SCLD model")

    def save(self, path, overwrite: bool = False) -> None:
        """Write the fitted model to one versioned file, atomically.

        The file holds the weights (autoencoder included), gene names, settings, per-type
        summaries and provenance (scaug version, data shape, date); no per-cell data, so its size
        does not grow with the number of training cells.

        In a distributed run (DDP), only the process of rank 0 writes: the model is the same on
        every process, and the others return at once (without waiting for the file).
        """
        check_is_fitted(self, "denoiser_")
        if process_rank()[0] != 0:
            return
        names = getattr(self, "feature_names_in_", None)
        params = _utils.plain_params(self, exclude=("autoencoder", "device", "random_state",
                                                    "trainer_kwargs", "cpu_threads"))

        def weights(module):
            return None if module is None else {k: v.detach().cpu() for k, v in module.state_dict().items()}

        state = {
            "format_version": _utils.FORMAT_VERSION, "class": "SCLD", "params": params,
            "random_state": self.random_state if isinstance(self.random_state, int) else None,
            "autoencoder": self.autoencoder_._state(),
            "gene_overlap": self.gene_overlap_,
            "denoiser": weights(self.denoiser_), "classifier": weights(self.classifier_),
            "classes": None if self.classes_ is None else _utils.to_plain_list(self.classes_),
            "classes_dtype": None if self.classes_ is None else str(self.classes_.dtype),
            "class_counts": [int(c) for c in self.class_counts_],
            "n_unlabelled": int(self.n_unlabelled_),
            "n_features_in": int(self.n_features_in_),
            "feature_names_in": None if names is None else _utils.to_plain_list(names),
            "input_dtype": self.input_dtype_, "sparse_input": self.sparse_input_,
            "latent_mean": torch.from_numpy(self.latent_mean_),
            "latent_scale": torch.from_numpy(self.latent_scale_),
            "type_summaries": self.type_summaries_.state(),
            "diffusion_steps": self.diffusion_.n_steps,
            "history": {"diffusion": [float(v) for v in self.diffusion_history_],
                        "classifier": [float(v) for v in self.classifier_history_]},
            **_utils.provenance(n_obs=self.n_train_, n_features=self.n_features_in_),
        }
        _utils.atomic_save(state, path, overwrite=overwrite)

    @classmethod
    def load(cls, path, device="auto") -> SCLD:
        """Read a model written by :meth:`save`; ``device`` picks where it samples."""
        state = _utils.checked_load(path, expected_class="SCLD")
        params = dict(state["params"])
        params["ae_hidden"] = tuple(params["ae_hidden"])
        model = cls(**params, device=device, random_state=state["random_state"])
        dev = _utils.resolve_device(device)
        model.autoencoder_ = CellAutoencoder._from_state(state["autoencoder"], device=device)
        model.gene_overlap_ = state.get("gene_overlap")
        model.counts_ = model.autoencoder_.likelihood_ == "nb"
        if state["classes"] is None:
            model.classes_ = None
        else:
            model.classes_ = np.asarray(state["classes"], dtype=np.dtype(state["classes_dtype"])
                                        if state["classes_dtype"] != "object" else object)
        model.class_counts_ = np.asarray(state["class_counts"], dtype=np.int64)
        model.n_unlabelled_ = state["n_unlabelled"]
        model.n_features_in_ = state["n_features_in"]
        if state["feature_names_in"] is not None:
            model.feature_names_in_ = np.asarray(state["feature_names_in"], dtype=object)
        model.input_dtype_ = state["input_dtype"]
        model.sparse_input_ = state["sparse_input"]
        model.n_train_ = state["provenance"]["n_obs"]
        model.provenance_ = dict(state["provenance"])
        model.latent_mean_ = state["latent_mean"].numpy()
        model.latent_scale_ = state["latent_scale"].numpy()
        model.type_summaries_ = sampling.TypeSummaries.from_state(state["type_summaries"])
        model.diffusion_ = GaussianDiffusion(state["diffusion_steps"])
        model.diffusion_history_ = state["history"]["diffusion"]
        model.classifier_history_ = state["history"]["classifier"]
        d, n_classes = len(model.latent_mean_), len(model.class_counts_)
        model.classifier_ = None
        if state["classifier"] is not None:
            model.classifier_ = LatentClassifier(d, n_classes)
            model.classifier_.load_state_dict(state["classifier"])
            model.classifier_.to(dev).eval()
        model.device_ = dev
        model.denoiser_ = Denoiser(d, n_classes, int(model.width), int(model.depth))
        model.denoiser_.load_state_dict(state["denoiser"])
        model.denoiser_.to(dev).eval()
        return model

    def __getstate__(self):
        # networks travel on the CPU, so a model fitted on a GPU unpickles without one
        state = self.__dict__.copy()
        if "denoiser_" in state and self.device_.type != "cpu":
            for key in ("denoiser_", "classifier_"):
                if state[key] is not None:
                    state[key] = copy.deepcopy(state[key]).cpu()
            state["_fitted_device"] = str(self.device_)
            state["device_"] = torch.device("cpu")
        return state

    def __setstate__(self, state):
        fitted_device = state.pop("_fitted_device", None)
        self.__dict__.update(state)
        if fitted_device is not None and torch.cuda.is_available():
            self.device_ = torch.device(fitted_device)
            for module in (self.denoiser_, self.classifier_):
                if module is not None:
                    module.to(self.device_)


def _is_fitted_autoencoder(ae) -> bool:
    return isinstance(ae, CellAutoencoder) and hasattr(ae, "module_")
