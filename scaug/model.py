"""SCLD: single-cell latent diffusion with pre-guidance and post-guidance."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, _fit_context, clone
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted

from . import _torch_utils, _utils, model_file, sampling, stages
from . import conditions as cond
from .autoencoder import STATE_FIELDS as AE_STATE_FIELDS
from .autoencoder import CellAutoencoder, is_fitted_autoencoder
from .diffusion import SAMPLERS, GaussianDiffusion
from .sampling import smoothed_bootstrap as _smoothed_bootstrap  # noqa: F401  (0.1's name)
from .train import process_rank


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
        pretrained = is_fitted_autoencoder(params["autoencoder"])
        return type(self)(**{k: v if (k == "autoencoder" and pretrained) else clone(v, safe=False)
                             for k, v in params.items()})

    # -- fit -----------------------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    @_torch_utils.with_cpu_threads
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
        data = stages.check_input(self, X, y, conditions, feature_names)
        seed = _utils.seed_from(self.random_state)
        validation = stages.validation_cells(self, data.y, data.X.shape[0], data.on_disk, seed)
        ae = stages.fit_autoencoder(self, data, seed, validation)
        latents = stages.latent_targets(self, data, ae)
        diffusion = GaussianDiffusion()
        n_steps = stages.denoiser_steps(self, data.X.shape[0])
        with _torch_utils.seeded(seed + 1, data.device):
            denoiser = stages.fit_denoiser(self, latents, diffusion, validation, n_steps, seed,
                                           data.device)
            classifier = stages.fit_classifier(self, latents, diffusion, n_steps, seed,
                                               data.device)
        # all or nothing: the fitted state is set only once every stage has finished
        stages.set_fitted_state(self, data, ae, latents, diffusion, denoiser, classifier)
        return self

    # -- sampling ------------------------------------------------------------------------------
    @_torch_utils.with_cpu_threads
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
        values = cond.values_of(self)
        scales = cond.attribute_scales(condition_scales, values)
        seed = _utils.seed_from(self.random_state if random_state is None else random_state)
        rng = np.random.default_rng(seed)
        gen = _utils.cpu_generator(seed)
        class_counts = self.class_counts_
        if conditions is not None and not isinstance(n, Mapping):
            # the population within the given values: their training cells' type proportions
            fixed = cond.resolve_conditions(conditions, values, 1, per_cell=False)[0]
            class_counts = cond.class_counts_within(self, fixed)
        plan = sampling.resolve_request(n, self.classes_, class_counts, rng, int(max_cells))
        attribute_codes = cond.resolve_conditions(
            conditions, values, sum(k for _, k in plan), per_cell=isinstance(n, Mapping))
        with _torch_utils.flush_denormal():
            draw = sampling.latent_drawer(self, opts, scales, int(batch_size), gen)
            Zs, codes, self.sampling_report_ = sampling.draw_plan(self, plan, attribute_codes,
                                                                  draw, opts)
            Z = (Zs * self.latent_scale_ + self.latent_mean_).astype(np.float32)
            if not np.all(np.isfinite(Z)):  # never decode cells from NaN: they would be all zeros
                raise ValueError(
                    f"SCLD drew {int((~np.isfinite(Z).all(1)).sum())} non-finite latent(s); its "
                    "networks are not finite (a damaged file, or weights changed after fitting). "
                    "Fit the model again, with a lower learning_rate if training diverged.")
            self.sample_latents_ = Z
            self.sample_conditions_ = cond.conditions_frame(attribute_codes, values)
            X = sampling.decode_cells(self, Z, codes, attribute_codes, rng, gen)
        return X, None if self.classes_ is None else self.classes_[codes]

    def _condition_values(self) -> dict:
        # 0.1's name, until scaug.oversampler and scaug.tl call scaug.conditions.values_of
        return cond.values_of(self)

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
        _torch_utils.atomic_save(model_file.to_state(self), path, overwrite=overwrite)

    @classmethod
    def load(cls, path, device="auto") -> SCLD:
        """Read a model written by :meth:`save`; ``device`` picks where it samples."""
        state = _torch_utils.checked_load(path, expected_class="SCLD",
                                          required=model_file.STATE_FIELDS)
        _utils.check_fields(state["autoencoder"], AE_STATE_FIELDS, f"{os.fspath(path)!r}",
                            "SCLD's autoencoder")
        with _utils.damaged_file(path):
            return model_file.from_state(cls, state, path, device)

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
