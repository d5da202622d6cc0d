"""SCLD: single-cell latent diffusion with pre-guidance and post-guidance."""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Mapping
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, _fit_context, clone
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from . import _utils, sampling
from .autoencoder import STATE_FIELDS as AE_STATE_FIELDS
from .autoencoder import CellAutoencoder
from .diffusion import SAMPLERS, GaussianDiffusion
from .nn import Denoiser, LatentClassifier
from .train import (
    BalancedDraws,
    ClassifierPlan,
    ConvergenceStop,
    DenoiserPlan,
    MinibatchData,
    OnDiskCells,
    check_trainer_kwargs,
    fit_plan,
    process_rank,
    validation_split,
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
        gene-specific layers taught the pretrained latents of ``X``'s cells for ``max_epochs`` or
        its default), so the model
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
        Width (at least 2, for the sine and cosine of the time embedding) and number of
        residual blocks of the denoiser.
    max_epochs : int or None, default=None
        Caps the epochs of every training stage (an epoch of the diffusion and classifier stages
        is as many class-balanced minibatches as one pass over the cells takes). ``None`` uses
        the tuned defaults.
    diffusion_steps : int or None, default=None
        Optimiser steps for the denoiser (the latent classifier gets half as many); ``None``
        scales with the number of cells (3000 for 1000 cells, 4500 for 10000).
    batch_size : int, default=256
    learning_rate : float, default=1e-3
        AdamW's learning rate for every stage this model trains: the autoencoder it trains from
        scratch, the denoiser and the latent classifier. A given autoencoder (fitted, a template
        or a path) keeps its own ``learning_rate``, also for the gene adaptation. A stage whose
        loss or weights stop being finite stops with
        :class:`~scaug.exceptions.TrainingDivergedError`; lower the rate then.
    label_dropout : float, default=0.15
        Fraction of training steps that see the null label (classifier-free guidance).
    latent_smoothing : float, default=4.0
        The denoiser learns each type's latents with Gaussian noise of ``latent_smoothing /
        sqrt(n)`` times the type's sd (``n`` its cells; at most 1), the type's variance kept (a
        smoothed bootstrap). Without it (0), a type of a few cells is learned as those few points
        and sampled back as near-copies of them (``docs/archive/fidelity_10shot.md``); the noise
        fades as a type grows (a 1600-cell type gets 10 % of its sd).
    latent_centering : {"global", "type"}, default="global"
        What the denoiser learns. ``"global"``: each cell's standardised latent. ``"type"``: each
        cell's latent minus its type's mean (``type_summaries_.mean``), which sampling adds back:
        the within-type variation becomes one distribution learned from every cell, which a
        type's label only adjusts, and ``guidance_scale`` below 1 mixes in that pooled variation
        instead of pulling cells toward the common types. Every cell must then be labelled (no
        ``-1``). On 10-shot types with ``guidance_scale=0.5`` its latents are closer to
        held-out cells than the default's and than a Gaussian's of the type's latents (latent
        two-sample AUC 0.864 against 0.886 and 0.883), its decoded cells no more realistic
        (0.800 against 0.799 and 0.813): ``docs/sampler_variants.md``.
    guidance_scale : float, default=1.0
        Classifier-free guidance weight ``w`` in ``eps_u + w * (eps_c - eps_u)``; 1 is plain
        conditional sampling (the default: on 10-shot types, ``w=2`` made cells easier to tell
        from real ones), above 1 pushes cells toward what is typical of the type, 0 ignores the
        label. Ignored when fitted without labels.
    classifier_scale : float, default=0.0
        Classifier-guidance scale (post-guidance); 0, the default, switches it off. It steers
        samples toward the type's decision region and away from realistic cells
        (``docs/archive/fidelity_10shot.md``).
    refinement : float in [0, 1), default=0.0
        Post-guidance by the unconditional model: each drawn latent is noised to time
        ``refinement * T`` and denoised without its type (SDEdit), which moves it toward where
        the model learned real cells lie. That knowledge is what a type's few labelled cells
        lack when the model also learned the many unlabelled cells (``-1``) of a partly
        annotated data set; 0 switches it off. On cbmc's 10-shot types with their other cells
        unlabelled, 0.4 brings the latents clearly closer to held-out cells (latent two-sample
        AUC 0.822 against 0.895) but leaves the decoded cells level (0.786 against 0.791); on a
        model of labelled cells only it does less (0.2: 0.872 against 0.890), and 0.6 pulls
        cells toward the common types (``docs/refinement.md``). Through an autoencoder with
        ``match_detection=True`` the decoded cells are clearly more realistic too: 0.711
        against 0.748 unrefined and 0.754 for a Gaussian of the type's latents
        (``docs/refinement_detection``), though spreading the labels to the unlabelled cells
        (scikit-learn's ``LabelSpreading``) and fitting SCLD on them does better (0.630). Off
        by default: with the default decoder, or without unlabelled cells, the counts are not
        clearly more realistic.
    screening : bool, default=False
        Post-guidance screening: keep a synthetic cell only if the latent classifier gives the
        target type at least ``screening_threshold`` and its nearest real latent of the type is
        within the ``screening_quantile`` of the type's real nearest-neighbour distances (times
        ``screening_tolerance``); redraw up to ``max_rounds`` times.
    screening_threshold : float, default=0.5
    screening_quantile : float, default=0.9
    screening_tolerance : float, default=1.0
    max_rounds : int, default=10
    n_sample_steps : int, default=10
        Steps of the sampler.
    sampler : {"dpm-solver++", "ddim", "ancestral"}, default="dpm-solver++"
        DPM-Solver++(2M), a deterministic second-order solver that needs few steps; DDIM
        (deterministic, first order: 50 steps to match DPM-Solver++ at 10); or the stochastic
        DDPM sampler. At 10 steps DPM-Solver++ is as realistic as 50-step DDIM (two-sample AUC
        against held-out cells, ``docs/solver_fidelity.md``) at about four times its speed
        (``docs/sampling_speed.md``).
    latent_classifier : "auto" or bool, default="auto"
        Train the classifier on noisy latents that post-guidance needs (``classifier_scale`` and
        ``screening``). ``"auto"`` trains it only when this model's settings use it; ``True``
        trains it anyway, so that :meth:`sample` can switch post-guidance on later.
    early_stopping : bool, default=True
        Hold out ``validation_fraction`` of the cells and stop the autoencoder and the diffusion
        stage once the held-out cells' loss has stopped improving (checked every 100 optimiser
        steps; ``n_iter_no_change`` checks without a relative improvement of ``tol``), instead of
        always running the full budget (``max_epochs``, ``diffusion_steps``). Cells are held out
        only from types (and the unlabelled cells) of at least 100 cells, so rare types keep
        every cell; they still count in the per-type summaries. Without such a type, for an
        ``OnDiskCells``, and in a stage too short to be checked ``n_iter_no_change + 1`` times,
        a stage runs its full budget on every cell. ``stopped_at_`` tells where each stage
        stopped.
    validation_fraction : float in (0, 1), default=0.1
    n_iter_no_change : int, default=5
    tol : float, default=1e-3
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
        Classifier on noisy latents (None when fitted without labels, or when post-guidance
        was off and ``latent_classifier="auto"``).
    stopped_at_ : dict
        ``{"autoencoder": step or None, "diffusion": step or None}``: the optimiser step early
        stopping ended each stage at (None: it ran its full budget, or was not trained here).
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
    conditions_ : dict
        The further attributes given to :meth:`fit` (``conditions``), in their order: ``{name:
        ndarray of its values}``, sorted as ``classes_`` (index ``i`` is the attribute's code
        ``i``); empty when fitted without conditions.
    condition_counts_ : DataFrame
        Training cells per combination of type and attribute values seen in training: columns
        ``cell_type`` (``-1`` for cells without a type), one per attribute, and ``n_cells``.
        For (type, value) pairs: ``condition_counts_.pivot_table(index="cell_type",
        columns="batch", values="n_cells", aggfunc="sum", fill_value=0)``.
    library_shifts_ : dict
        Count models fitted with conditions: ``{name: ndarray of shape (n_types, n_values)}``,
        the shift of the log library size of a type's cells with each value from the type's
        median (the median over those cells when there are at least 10 of them, else the
        value's median shift over all its cells); one row for a model without labels.
        Sampling within values multiplies the type's library draws by ``exp(shift)`` (summed
        over the attributes). Empty otherwise.
    sampling_report_ : dict
        Set by :meth:`sample`: per type, cells requested, candidates drawn, candidates that
        passed screening (`accepted`) and the acceptance rate; with ``conditions``, also
        ``"conditions"``: ``{attribute: {value: {"requested": cells, "training_cells": the
        type's training cells with that value}}}``.
    sample_conditions_ : DataFrame of shape (n_total, n_attributes)
        Set by :meth:`sample`: the attribute values each cell was generated within (None where
        marginalised), aligned with its output.
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
        "width": [_utils.Interval(Integral, 2, None, closed="left")],
        "depth": [_utils.Interval(Integral, 1, None, closed="left")],
        "max_epochs": [_utils.Interval(Integral, 1, None, closed="left"), None],
        "diffusion_steps": [_utils.Interval(Integral, 1, None, closed="left"), None],
        "batch_size": [_utils.Interval(Integral, 1, None, closed="left")],
        "learning_rate": [_utils.Interval(Real, 0, None, closed="neither")],
        "label_dropout": [_utils.Interval(Real, 0, 1, closed="left")],
        "latent_smoothing": [_utils.Interval(Real, 0, None, closed="left")],
        "latent_centering": [StrOptions({"global", "type"})],
        "guidance_scale": [_utils.Interval(Real, 0, None, closed="left")],
        "classifier_scale": [_utils.Interval(Real, 0, None, closed="left")],
        "refinement": [_utils.Interval(Real, 0, 1, closed="left")],
        "screening": ["boolean"],
        "screening_threshold": [_utils.Interval(Real, 0, 1, closed="left")],
        "screening_quantile": [_utils.Interval(Real, 0, 1, closed="right")],
        "screening_tolerance": [_utils.Interval(Real, 0, None, closed="neither")],
        "max_rounds": [_utils.Interval(Integral, 1, None, closed="left")],
        "n_sample_steps": [_utils.Interval(Integral, 1, None, closed="left")],
        "sampler": [StrOptions(set(SAMPLERS))],
        "latent_classifier": [StrOptions({"auto"}), "boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [_utils.Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [_utils.Interval(Integral, 1, None, closed="left")],
        "tol": [_utils.Interval(Real, 0, 1, closed="left")],
        "trainer_kwargs": [dict, None],
        "cpu_threads": [_utils.Interval(Integral, 1, None, closed="left"), None],
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "verbose": ["boolean"],
    }

    def __init__(self, *, autoencoder=None, min_gene_overlap=0.5, n_latent=16, ae_hidden=(256, 128),
                 width=128, depth=3,
                 max_epochs=None, diffusion_steps=None, batch_size=256, learning_rate=1e-3,
                 label_dropout=0.15, latent_smoothing=4.0, latent_centering="global",
                 guidance_scale=1.0, classifier_scale=0.0,
                 refinement=0.0, screening=False, screening_threshold=0.5, screening_quantile=0.9,
                 screening_tolerance=1.0, max_rounds=10, n_sample_steps=10, sampler="dpm-solver++",
                 latent_classifier="auto", early_stopping=True, validation_fraction=0.1,
                 n_iter_no_change=5, tol=1e-3, trainer_kwargs=None, cpu_threads=1,
                 device="auto", random_state=None, verbose=True):
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
        self.latent_centering = latent_centering
        self.guidance_scale = guidance_scale
        self.classifier_scale = classifier_scale
        self.refinement = refinement
        self.screening = screening
        self.screening_threshold = screening_threshold
        self.screening_quantile = screening_quantile
        self.screening_tolerance = screening_tolerance
        self.max_rounds = max_rounds
        self.n_sample_steps = n_sample_steps
        self.sampler = sampler
        self.latent_classifier = latent_classifier
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
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
                               learning_rate=self.learning_rate, max_epochs=self.max_epochs,
                               early_stopping=self.early_stopping,
                               validation_fraction=self.validation_fraction,
                               n_iter_no_change=self.n_iter_no_change, tol=self.tol,
                               device=device, random_state=seed, verbose=self.verbose,
                               trainer_kwargs=self.trainer_kwargs, cpu_threads=None)

    def _validation_cells(self, y, n_cells: int, on_disk: bool, seed: int):
        """The cells held out to stop training at convergence (None: train the full budget).

        Taken only from types (and the unlabelled cells) of at least 100 cells, so a rare type
        keeps every cell for training."""
        if not self.early_stopping or on_disk:
            return None
        groups = (np.zeros(n_cells, np.int64) if y is None
                  else np.unique(np.asarray(y).astype(str), return_inverse=True)[1])
        return validation_split(groups, float(self.validation_fraction), seed)

    # -- fit -----------------------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    @_utils.with_cpu_threads
    def fit(self, X, y=None, *, conditions=None, feature_names=None):
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
        conditions : mapping or DataFrame, optional
            Further categorical attributes of each cell, such as the donor, batch or sample:
            ``{name: one value per cell}`` or a DataFrame with one column per attribute (e.g.
            ``adata.obs[["donor"]]``); names are strings other than ``"cell_type"`` and
            ``"n_cells"``, values hashable and never missing. The model then learns the
            cells of a type within a value of each attribute, or marginalised over it: each
            attribute gets its own embedding and null token in the denoiser, and training
            drops the type and each attribute independently (``label_dropout``). Sample with
            ``sample(..., conditions=...)``. The smoothed bootstrap (``latent_smoothing``)
            then works per combination of type and values, so it does not blur what sets a
            batch apart; count models learn each value's library-size shift.
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
        _utils.validate_params(self)
        if isinstance(self.autoencoder, CellAutoencoder) and not _is_fitted_autoencoder(
                self.autoencoder):  # a template: its settings too, before any training
            _utils.validate_params(self.autoencoder)
            check_trainer_kwargs(self.autoencoder.trainer_kwargs)
        device = _utils.resolve_device(self.device)
        check_trainer_kwargs(self.trainer_kwargs)
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
            if self.latent_centering == "type" and unlabelled.any():
                raise ValueError(
                    f"latent_centering='type' needs every cell's type, but y has "
                    f"{int(unlabelled.sum())} unlabelled cell(s) (-1): an unlabelled cell has no "
                    "type mean to subtract. Use latent_centering='global' to learn them.")
            _utils.check_sortable(y[~unlabelled])
        attributes = sampling.check_conditions(conditions, X.shape[0])
        ae = self._pretrained_autoencoder(device)
        overlap = None
        if ae is not None:
            # other genes (by name) are aligned, or refused before any training
            overlap = ae._overlap_or_none(X.shape[1], names, float(self.min_gene_overlap))
            if ae.likelihood_ == "nb" and not _utils.is_count_matrix(X.sample() if on_disk else X):
                raise ValueError("The given autoencoder models counts, but X is not integer counts.")

        seed = _utils.seed_from(self.random_state)
        validation = self._validation_cells(y, X.shape[0], on_disk, seed)
        trained_here = ae is None
        if ae is None:
            ae = self._new_autoencoder(device, seed).fit(
                X, feature_names=names,
                validation_cells=validation if validation is not None else np.zeros(X.shape[0], bool))
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
        # the attributes: values sorted (as classes_), codes in the denoiser's columns, and the
        # groups of one type and one value of each attribute for the smoothed bootstrap
        condition_values, attribute_codes = _condition_codes(attributes, X.shape[0])
        typed = np.where(unlabelled | (y is None), -1, codes)  # -1: a cell without a type
        train_codes = codes if not attributes else np.column_stack([codes, attribute_codes])
        groups = np.where(unlabelled, -1, codes)  # unlabelled cells are learned as they are
        if attributes:
            groups = _group_ids(np.column_stack([groups, attribute_codes]), groups < 0)
        library_shifts = (_library_shifts(library, typed, attribute_codes, condition_values,
                                          n_classes) if counts and attributes else {})

        n_steps = self.diffusion_steps or _default_steps(X.shape[0], 3000)
        if self.max_epochs is not None:
            n_steps = min(n_steps, self.max_epochs * max(1, int(np.ceil(X.shape[0] / self.batch_size))))
        diffusion = GaussianDiffusion()
        null = n_classes if classes is not None else 0
        # what the denoiser learns: the latents, or (type centring) their offsets from the
        # type's mean, so that how cells vary within a type is learned from every type at once
        targets = Zs - summaries.mean[codes].astype(np.float32) \
            if self.latent_centering == "type" else Zs
        shrunk, spread = _smoothed_bootstrap(targets, groups, float(self.latent_smoothing))
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
                _utils.flush_denormal():
            torch.manual_seed(seed + 1)
            denoiser = Denoiser(Zs.shape[1], n_classes, int(self.width), int(self.depth),
                                n_values=[len(v) for v in condition_values.values()])
            rows, stopping = None, None
            # a stage too short to be checked n_iter_no_change + 1 times trains on every cell
            if validation is not None and n_steps >= 100 * (self.n_iter_no_change + 1):
                rows = np.flatnonzero(~validation)
                stopping = ConvergenceStop(patience=self.n_iter_no_change, tol=self.tol,
                                           check_every=100)
            plan = DenoiserPlan(denoiser, diffusion, null_label=null,
                                attribute_nulls=denoiser.n_values,
                                label_dropout=self.label_dropout, conditional=classes is not None,
                                learning_rate=self.learning_rate, n_steps=n_steps, seed=seed + 1,
                                validation=None if rows is None
                                else (targets[validation], train_codes[validation]))
            data = MinibatchData([shrunk, spread, train_codes], batch_size=int(self.batch_size),
                                 seed=seed + 1, n_batches=n_steps, rows=rows,
                                 draw=BalancedDraws(codes if rows is None else codes[rows]))
            fit_plan(plan, data, device=device, trainer_kwargs=self.trainer_kwargs,
                     max_steps=n_steps, desc="diffusion", verbose=self.verbose,
                     stopping=stopping)
            denoiser_ema, diffusion_history = plan.averaged.eval(), list(plan.history)
            diffusion_stopped_at = None if stopping is None else stopping.stopped_at
            classifier, classifier_history = None, []
            wants_classifier = (self.latent_classifier is True or (
                self.latent_classifier == "auto"
                and (self.classifier_scale > 0 or self.screening)))
            if classes is not None and n_classes > 1 and wants_classifier:
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
        self.conditions_ = condition_values
        self.condition_counts_ = _count_table(classes, condition_values, *np.unique(
            np.column_stack([typed, attribute_codes]), axis=0, return_counts=True))
        self.library_shifts_ = library_shifts
        self.diffusion_ = diffusion
        self.classifier_ = None if classifier is None else classifier.to(device)
        self.classifier_history_ = classifier_history
        self.stopped_at_ = {"autoencoder": ae.stopped_at_ if trained_here else None,
                            "diffusion": diffusion_stopped_at}
        self.diffusion_history_ = diffusion_history
        self.device_ = device
        self.denoiser_ = denoiser_ema.to(device)  # last: check_is_fitted looks for it
        return self

    # -- sampling ------------------------------------------------------------------------------
    @_utils.with_cpu_threads
    def sample(self, n, *, conditions=None, condition_scales=None, random_state=None,
               guidance_scale=None, classifier_scale=None, refinement=None, screening=None,
               screening_threshold=None, n_sample_steps=None, sampler=None, batch_size=4096,
               max_cells=1_000_000):
        """Synthesize cells.

        Parameters
        ----------
        n : int or mapping
            ``{cell type: number}`` synthesizes those types (pre-guidance), type by type in
            this order; an int synthesizes the whole population, with types drawn in the
            training proportions (of the training cells with the given ``conditions``, when
            they are given).
        conditions : mapping, optional
            For a model fitted with ``conditions``: ``{attribute: value}`` generates every cell
            within that value (a type within a donor, batch or sample); ``{attribute: values}``
            with one value per requested cell (for a mapping ``n``, in its order: the first
            ``n[first type]`` values for the first type ...) spreads them; ``None`` (as the
            value, or an entry of the values) marginalises the attribute, as does leaving it
            out. A (type, value) pair without training cells can be asked for: SCLD composes
            it from what it learned of the type and of the value apart, and warns. The values
            used are in ``sample_conditions_``.
        condition_scales : mapping, optional
            ``{attribute: weight w}``, 1 for an attribute left out. Classifier-free guidance
            per factor, ``guidance_scale`` being the type's weight::

                v = v(y, a) + (w_y - 1) [v(y, a) - v(null, a)]
                            + sum_k (w_k - 1) [v(y, a) - v(y, a with a_k null)]

            With every weight 1 (the default) this is the joint conditional, an exact draw of
            the type within the values; ``w > 1`` pushes the cells toward what is typical of
            the value, ``w = 0`` ignores it (:func:`scaug.diffusion.composed_guidance` says why
            this form).
        random_state : int, RandomState instance or None, default=None
            Seeds the sampling noise; ``None`` falls back to the model's ``random_state``.
        guidance_scale, classifier_scale, refinement, screening, screening_threshold, \
n_sample_steps, sampler
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
            dtype (with a warning) when a count would not fit it. A count model draws the
            library sizes of a type's cells from its real ones, shifted by each given value's
            library-size shift (``library_shifts_``).
        y_syn : ndarray of shape (n_total,) or None
            The cell type each cell was generated for (None when fitted without labels).

        Examples
        --------
        >>> from scaug import SCLD
        >>> from scaug.datasets import simulate
        >>> adata = simulate(n_cells=300, n_genes=50, n_batches=2, random_state=0)
        >>> tiny = dict(n_latent=4, ae_hidden=(32,), width=32, depth=1, max_epochs=2)
        >>> model = SCLD(verbose=False, random_state=0, **tiny).fit(
        ...     adata.X, adata.obs["cell_type"], conditions=adata.obs[["batch"]])
        >>> X_syn, y_syn = model.sample({"type_3": 4, "type_0": 2},
        ...                             conditions={"batch": "batch_1"}, random_state=0)
        >>> model.sample_conditions_["batch"].tolist()
        ['batch_1', 'batch_1', 'batch_1', 'batch_1', 'batch_1', 'batch_1']
        >>> model.sampling_report_["type_3"]["conditions"]["batch"]["batch_1"]["training_cells"]
        11
        """
        check_is_fitted(self, "denoiser_")
        opts = {k: getattr(self, k) if v is None else v for k, v in dict(
            guidance_scale=guidance_scale, classifier_scale=classifier_scale,
            refinement=refinement, screening=screening,
            screening_threshold=screening_threshold, n_sample_steps=n_sample_steps,
            sampler=sampler).items()}
        _utils.validate_against(self, opts)
        if (self.classifier_ is None and self.classes_ is not None and len(self.classes_) > 1
                and (opts["classifier_scale"] > 0 or opts["screening"])):
            raise ValueError(
                "classifier_scale > 0 and screening need the latent classifier, which this model "
                "did not train: it was fitted with classifier_scale=0, screening=False and "
                "latent_classifier='auto'. Refit with latent_classifier=True to sample both ways.")
        for name, v in (("batch_size", batch_size), ("max_cells", max_cells)):
            if not (isinstance(v, Integral) and not isinstance(v, bool) and v >= 1):
                raise ValueError(f"{name} must be a positive int; got {v!r}.")
        if opts["n_sample_steps"] > self.diffusion_.n_steps:
            raise ValueError(f"n_sample_steps={opts['n_sample_steps']} is more than the "
                             f"{self.diffusion_.n_steps} noise levels the model was trained on; "
                             "give at most that many (10-50 is the useful range).")
        values = self._condition_values()
        scales = _attribute_scales(condition_scales, values)
        seed = _utils.seed_from(self.random_state if random_state is None else random_state)
        rng = np.random.default_rng(seed)
        gen = _utils.cpu_generator(seed)
        class_counts = self.class_counts_
        if conditions is not None and not isinstance(n, Mapping):
            # the population within the given values: their training cells' type proportions
            fixed = sampling.resolve_conditions(conditions, values, 1, per_cell=False)[0]
            class_counts = self._class_counts_within(fixed)
        plan = sampling.resolve_request(n, self.classes_, class_counts, rng, int(max_cells))
        attribute_codes = sampling.resolve_conditions(
            conditions, values, sum(k for _, k in plan), per_cell=isinstance(n, Mapping))
        with _utils.flush_denormal():
            return self._sample(plan, attribute_codes, scales, opts, int(batch_size), rng, gen)

    def _condition_values(self) -> dict:
        return getattr(self, "conditions_", None) or {}  # a model pickled before conditions

    def _pair_counts(self) -> dict:
        """Per attribute, training cells per (type, value): labelled types only, one row of all
        cells for a model without labels."""
        values = self._condition_values()
        table = self.condition_counts_
        if self.classes_ is None:
            rows = np.zeros(len(table), dtype=np.int64)
            n_rows = 1
        else:
            lookup = {_utils.plain_label(c): i for i, c in enumerate(self.classes_)}
            # -1 (cells without a type) is never a class
            rows = np.array([lookup.get(_utils.plain_label(c), -1) for c in table["cell_type"]],
                            dtype=np.int64)
            n_rows = len(self.classes_)
        out = {}
        for name, vals in values.items():
            lookup = {_utils.plain_label(v): i for i, v in enumerate(vals)}
            cols = np.array([lookup[_utils.plain_label(v)] for v in table[name]], dtype=np.int64)
            counts = np.zeros((n_rows, len(vals)), dtype=np.int64)
            keep = rows >= 0
            np.add.at(counts, (rows[keep], cols[keep]), table["n_cells"].to_numpy()[keep])
            out[name] = counts
        return out

    def _class_counts_within(self, fixed: np.ndarray) -> np.ndarray:
        """Training cells of each type that have every given (non-null) attribute value."""
        values = self._condition_values()
        table = self.condition_counts_
        keep = np.ones(len(table), dtype=bool)
        given = []
        for j, (name, vals) in enumerate(values.items()):
            if fixed[j] < len(vals):
                keep &= np.array([_utils.plain_label(v) == _utils.plain_label(vals[fixed[j]])
                                  for v in table[name]], dtype=bool)
                given.append(f"{name}={_utils.plain_label(vals[fixed[j]])!r}")
        if self.classes_ is None:
            counts = np.array([int(table["n_cells"][keep].sum())])
        else:
            lookup = {_utils.plain_label(c): i for i, c in enumerate(self.classes_)}
            counts = np.zeros(len(self.classes_), dtype=np.int64)
            for c, m in zip(table["cell_type"][keep], table["n_cells"][keep], strict=True):
                i = lookup.get(_utils.plain_label(c))
                if i is not None:
                    counts[i] += int(m)
        if given and counts.sum() == 0:
            warnings.warn(f"No labelled training cell has {', '.join(given)}; the types are drawn "
                          "in the proportions of all training cells.", UserWarning, stacklevel=4)
            return self.class_counts_
        return counts if given else self.class_counts_

    def _sample(self, plan, attribute_codes, scales, opts, batch_size, rng, gen):
        labelled = self.classes_ is not None
        null = len(self.classes_) if labelled else 0
        values = self._condition_values()
        names = list(values)
        n_latent = len(self.latent_mean_)

        centred = self.latent_centering == "type"

        def draw(code, attrs, m):
            offset = self.type_summaries_.mean[code].astype(np.float32) if centred else 0.0
            Z = sampling.draw_latents(
                self.diffusion_, self.denoiser_, self.classifier_, code=code, n=m,
                n_latent=n_latent, labelled=labelled, null=null, gen=gen,
                device=self.device_, guidance_scale=float(opts["guidance_scale"]),
                classifier_scale=float(opts["classifier_scale"]),
                n_sample_steps=int(opts["n_sample_steps"]), sampler=opts["sampler"],
                batch_size=batch_size, attributes=attrs, attribute_scales=scales)
            if opts["refinement"] > 0:
                Z = sampling.refine_latents(
                    self.diffusion_, self.denoiser_, Z, strength=float(opts["refinement"]),
                    null=null, attributes=attrs, gen=gen, device=self.device_,
                    n_sample_steps=int(opts["n_sample_steps"]), sampler=opts["sampler"],
                    batch_size=batch_size)
            return offset + Z

        pairs = self._pair_counts() if names else {}
        report, blocks_z, blocks_y, unseen = {}, [], [], []
        bar = tqdm(total=sum(k for _, k in plan), desc="sampling", disable=not self.verbose,
                   leave=False)
        offset = 0
        for code, k in plan:
            if k == 0:
                continue
            label = _utils.plain_label(self.classes_[code]) if labelled else None
            rows = attribute_codes[offset:offset + k]
            offset += k
            if names:  # one run of the sampler per combination of values, in a fixed order
                combos, inverse = np.unique(rows, axis=0, return_inverse=True)
                groups = [(combo, np.flatnonzero(inverse.ravel() == g))
                          for g, combo in enumerate(combos)]
            else:
                groups = [(None, np.arange(k))]
            Zc = np.empty((k, n_latent), dtype=np.float32)
            drawn = accepted = 0
            for combo, idx in groups:
                if not opts["screening"]:
                    Zg, d, a = draw(code, combo, len(idx)), len(idx), len(idx)
                else:
                    def accept(Z, code=code):
                        return sampling.screen(
                            self.type_summaries_, self.classifier_, self.diffusion_, code, Z,
                            threshold=opts["screening_threshold"],
                            tolerance=self.screening_tolerance, device=self.device_)

                    where = "" if combo is None else "".join(
                        f" {n}={_utils.plain_label(values[n][c])!r}"
                        for n, c in zip(names, combo, strict=True) if c < len(values[n]))
                    Zg, d, a = sampling.screened_latents(
                        lambda m, code=code, combo=combo: draw(code, combo, m), accept, len(idx),
                        max_rounds=self.max_rounds,
                        label=("cells" if label is None else str(label)) + where)
                Zc[idx] = Zg
                drawn, accepted = drawn + d, accepted + a
            report[label] = {"requested": k, "drawn": drawn, "accepted": accepted,
                             "acceptance_rate": accepted / drawn if drawn else float("nan")}
            if names:
                report[label]["conditions"] = _condition_report(
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
        self.sampling_report_ = report
        Zs = np.concatenate(blocks_z) if blocks_z else np.zeros((0, n_latent), np.float32)
        codes = np.concatenate(blocks_y) if blocks_y else np.zeros(0, np.int64)
        Z = (Zs * self.latent_scale_ + self.latent_mean_).astype(np.float32)
        if not np.all(np.isfinite(Z)):  # never decode cells from NaN: they would be all zeros
            raise ValueError(
                f"SCLD drew {int((~np.isfinite(Z).all(1)).sum())} non-finite latent(s); its "
                "networks are not finite (a damaged file, or weights changed after fitting). "
                "Fit the model again, with a lower learning_rate if training diverged.")
        self.sample_latents_ = Z
        self.sample_conditions_ = _conditions_frame(attribute_codes, values)
        library = self.type_summaries_.draw_library(codes, rng) if self.counts_ else None
        shifts = getattr(self, "library_shifts_", None)
        if library is not None and shifts:
            # each given value's library-size shift (a marginalised attribute shifts nothing)
            rows = codes if labelled else np.zeros_like(codes)
            shift = sum(np.pad(shifts[n], ((0, 0), (0, 1)))[rows, attribute_codes[:, j]]
                        for j, n in enumerate(names))
            library = np.round(library * np.exp(shift)).astype(np.float32)
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
            "conditions": _conditions_state(self),
            "diffusion_steps": self.diffusion_.n_steps,
            "history": {"diffusion": [float(v) for v in self.diffusion_history_],
                        "classifier": [float(v) for v in self.classifier_history_]},
            "stopped_at": self.stopped_at_,
            **_utils.provenance(n_obs=self.n_train_, n_features=self.n_features_in_),
        }
        _utils.atomic_save(state, path, overwrite=overwrite)

    @classmethod
    def load(cls, path, device="auto") -> SCLD:
        """Read a model written by :meth:`save`; ``device`` picks where it samples."""
        state = _utils.checked_load(path, expected_class="SCLD", required=_STATE_FIELDS)
        _utils.check_fields(state["autoencoder"], AE_STATE_FIELDS, f"{os.fspath(path)!r}",
                            "SCLD's autoencoder")
        with _utils.damaged_file(path):
            return cls._from_state(state, path, device)

    @classmethod
    def _from_state(cls, state: dict, path, device) -> SCLD:
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
        # files written before conditions existed have none
        (model.conditions_, model.condition_counts_,
         model.library_shifts_) = _conditions_from_state(state.get("conditions"), model, path,
                                                         state["denoiser"])
        model.diffusion_ = GaussianDiffusion(state["diffusion_steps"])
        model.diffusion_history_ = state["history"]["diffusion"]
        model.classifier_history_ = state["history"]["classifier"]
        model.stopped_at_ = state.get("stopped_at", {"autoencoder": None, "diffusion": None})
        d, n_classes = len(model.latent_mean_), len(model.class_counts_)
        model.classifier_ = None
        if state["classifier"] is not None:
            model.classifier_ = LatentClassifier(d, n_classes)
            model.classifier_.load_state_dict(state["classifier"])
            model.classifier_.to(dev).eval()
        model.device_ = dev
        model.denoiser_ = Denoiser(d, n_classes, int(model.width), int(model.depth),
                                   n_values=[len(v) for v in model.conditions_.values()])
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


#: what a saved SCLD must hold (see ``save``)
_STATE_FIELDS = ("params", "random_state", "autoencoder", "denoiser", "classifier", "classes",
                 "classes_dtype", "class_counts", "n_unlabelled", "n_features_in",
                 "feature_names_in", "input_dtype", "sparse_input", "latent_mean", "latent_scale",
                 "type_summaries", "diffusion_steps", "history", "provenance")


def _is_fitted_autoencoder(ae) -> bool:
    return isinstance(ae, CellAutoencoder) and hasattr(ae, "module_")


# -- conditions ----------------------------------------------------------------------------------
def _condition_codes(attributes: dict, n_cells: int):
    """``({name: sorted values}, codes of shape (n_cells, n_attributes))``."""
    values, columns = {}, []
    for name, column in attributes.items():
        values[name], code = np.unique(column, return_inverse=True)
        columns.append(code.astype(np.int64))
    return values, (np.column_stack(columns) if columns else np.zeros((n_cells, 0), np.int64))


def _group_ids(rows: np.ndarray, skip: np.ndarray) -> np.ndarray:
    """An id per distinct row (-1 where ``skip``): the cells of one type and one value of each
    attribute form one group."""
    _, ids = np.unique(rows, axis=0, return_inverse=True)
    return np.where(skip, -1, ids.ravel())


#: least training cells of a (type, value) pair for its own library-size shift
MIN_PAIR_CELLS = 10


def _library_shifts(library, typed, attribute_codes, values, n_types) -> dict:
    """Per attribute, the shift of the log library size of each (type, value) pair.

    ``log(library) - median log(library) of the cell's type`` (cells without a type as one
    group), its median over the pair's cells, or over all the value's cells for a pair of fewer
    than :data:`MIN_PAIR_CELLS` (a batch sequenced deeper shifts every type alike, so a type
    never seen in that batch gets the batch's shift). A model without labels has one row.
    """
    log_lib = np.log(np.maximum(library, 1.0))
    resid = np.empty_like(log_lib)
    for c in np.unique(typed):
        where = typed == c
        resid[where] = log_lib[where] - np.median(log_lib[where])
    rows = typed if (typed >= 0).any() else np.zeros_like(typed)
    out = {}
    for j, (name, vals) in enumerate(values.items()):
        shifts = np.zeros((n_types, len(vals)))
        for v in range(len(vals)):
            of_value = attribute_codes[:, j] == v
            shifts[:, v] = np.median(resid[of_value])
            for c in range(n_types):
                pair = of_value & (rows == c)
                if pair.sum() >= MIN_PAIR_CELLS:
                    shifts[c, v] = np.median(resid[pair])
        out[name] = shifts
    return out


def _count_table(classes, values: dict, rows, n):
    """Training cells per combination of type (-1: none) and attribute values, as a DataFrame:
    ``rows`` holds the codes of each combination (type, then attributes), ``n`` its cells."""
    import pandas as pd

    rows = np.asarray(rows, dtype=np.int64).reshape(len(n), 1 + len(values))
    types = np.asarray([-1 if c < 0 else classes[c] for c in rows[:, 0]], dtype=object)
    table = {"cell_type": types}
    for j, (name, vals) in enumerate(values.items()):
        table[name] = vals[rows[:, 1 + j]]
    table["n_cells"] = n.astype(np.int64)
    return pd.DataFrame(table)


def _attribute_scales(condition_scales, values: dict) -> list:
    """One guidance weight per attribute, in the model's order (1 for those not given)."""
    if condition_scales is None:
        return [1.0] * len(values)
    if not isinstance(condition_scales, Mapping):
        raise TypeError("condition_scales must be a mapping {attribute: weight >= 0}; got "
                        f"{type(condition_scales).__name__}.")
    for name, w in condition_scales.items():
        if name not in values:
            raise ValueError(f"Unknown condition {name!r} in condition_scales; the model knows "
                             f"{list(values) or 'none: it was fitted without conditions'}.")
        if isinstance(w, bool) or not isinstance(w, Real) or not np.isfinite(w) or w < 0:
            raise ValueError(f"condition_scales[{name!r}] must be a number >= 0; got {w!r}.")
    return [float(condition_scales.get(name, 1.0)) for name in values]


def _condition_report(rows, values, pairs, type_row, label, unseen) -> dict:
    """``{attribute: {value: {"requested", "training_cells"}}}`` of one type's cells; the pairs
    without training cells are added to ``unseen``."""
    out = {}
    for j, (name, vals) in enumerate(values.items()):
        given, counts = np.unique(rows[:, j][rows[:, j] < len(vals)], return_counts=True)
        if len(given) == 0:
            continue  # marginalised
        out[name] = {}
        for v, m in zip(given, counts, strict=True):
            value = _utils.plain_label(vals[v])
            n_train = int(pairs[name][type_row, v])
            out[name][value] = {"requested": int(m), "training_cells": n_train}
            if n_train == 0:
                unseen.append((label, name, value, int(m)))
    return out


def _conditions_frame(attribute_codes, values: dict):
    """The attribute values of each sampled cell (None where marginalised), as a DataFrame."""
    import pandas as pd

    data = {}
    for j, (name, vals) in enumerate(values.items()):
        column = np.empty(len(attribute_codes), dtype=object)
        given = attribute_codes[:, j] < len(vals)
        column[given] = [_utils.plain_label(v) for v in vals[attribute_codes[given, j]]]
        data[name] = column
    return pd.DataFrame(data, index=pd.RangeIndex(len(attribute_codes)))


def _conditions_state(model) -> dict | None:
    """The attributes, their values and training counts as plain values and tensors."""
    values = model._condition_values()
    if not values:
        return None
    table = model.condition_counts_
    classes = {} if model.classes_ is None else {
        _utils.plain_label(c): i for i, c in enumerate(model.classes_)}
    codes = [[classes.get(_utils.plain_label(c), -1) for c in table["cell_type"]]]
    for name, vals in values.items():
        lookup = {_utils.plain_label(v): i for i, v in enumerate(vals)}
        codes.append([lookup[_utils.plain_label(v)] for v in table[name]])
    shifts = model.library_shifts_
    return {"names": list(values), "values": [_utils.to_plain_list(v) for v in values.values()],
            "dtypes": [str(v.dtype) for v in values.values()],
            "count_codes": torch.tensor(np.array(codes, dtype=np.int64).T.copy()),
            "n_cells": torch.from_numpy(table["n_cells"].to_numpy(dtype=np.int64).copy()),
            "library_shifts": None if not shifts else [torch.from_numpy(
                np.asarray(shifts[n], dtype=np.float64)) for n in values]}


def _embedding_sizes(denoiser_state) -> list:
    """Rows of each attribute embedding of a saved denoiser's weights, in order."""
    sizes, k = [], 0
    while f"attributes.{k}.weight" in denoiser_state:
        sizes.append(int(denoiser_state[f"attributes.{k}.weight"].shape[0]))
        k += 1
    return sizes


def _conditions_from_state(state, model, path, denoiser_state):
    """``(conditions_, condition_counts_, library_shifts_)`` from a saved file, checked."""
    n_classes = None if model.classes_ is None else len(model.classes_)
    if state is None:  # no conditions: one row per type, as a fit without them gives
        if _embedding_sizes(denoiser_state):
            raise ValueError(f"{os.fspath(path)!r} has a denoiser with attribute embeddings but "
                             "no conditions; it was not written by SCLD.save, or was changed "
                             "since.")
        if n_classes:
            rows, n = np.arange(n_classes), np.asarray(model.class_counts_)
            if model.n_unlabelled_:  # sorted as a fit sorts them: cells without a type first
                rows, n = np.r_[-1, rows], np.r_[model.n_unlabelled_, n]
        else:
            rows, n = np.array([-1]), np.asarray(model.class_counts_)
        return {}, _count_table(model.classes_, {}, rows[:, None], n), {}

    def damaged(what):
        return ValueError(f"{os.fspath(path)!r} has damaged conditions ({what}); it was not "
                          "written by SCLD.save, or was changed since.")

    names = state.get("names")
    if (not isinstance(names, list) or not names or len(set(names)) != len(names)
            or not all(isinstance(n, str) and n for n in names)
            or set(names) & set(sampling.RESERVED_CONDITION_NAMES)):
        raise damaged(f"names {names!r}")
    if len(state["values"]) != len(names) or len(state["dtypes"]) != len(names):
        raise damaged("one list of values per name")
    values = {}
    for name, vals, dtype in zip(names, state["values"], state["dtypes"], strict=True):
        arr = np.asarray(vals, dtype=object if dtype == "object" else np.dtype(dtype))
        if len(arr) == 0 or len({_utils.plain_label(v) for v in arr}) != len(arr):
            raise damaged(f"the values of {name!r}")
        values[name] = arr
    codes = state["count_codes"].numpy()
    n_cells = state["n_cells"].numpy()
    if codes.ndim != 2 or codes.shape != (len(n_cells), 1 + len(names)) or (n_cells < 1).any():
        raise damaged("the shape of the training counts")
    sizes = np.array([len(v) for v in values.values()])
    if ((codes[:, 1:] < 0) | (codes[:, 1:] >= sizes)).any() or (codes[:, 0] < -1).any() or (
            codes[:, 0] >= (n_classes or 0)).any():
        raise damaged("codes of the training counts out of range")
    weights = _embedding_sizes(denoiser_state)
    if weights != [len(v) + 1 for v in values.values()]:
        raise damaged(f"the denoiser has attribute embeddings of sizes {weights}, not one more "
                      "than each attribute's number of values")
    table = _count_table(model.classes_, values, codes, n_cells)
    shifts = state.get("library_shifts")
    shifts = {} if not shifts else {n: t.numpy() for n, t in zip(names, shifts, strict=True)}
    if any(shifts[n].shape != (n_classes or 1, len(values[n])) for n in shifts):
        raise damaged("the library-size shifts")
    return values, table, shifts
