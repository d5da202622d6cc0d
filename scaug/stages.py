"""The stages of :meth:`scaug.SCLD.fit`, in the order it runs them.

1. :func:`check_input`: ``X``, the labels, the conditions and a pretrained autoencoder checked,
   before any training.
2. :func:`fit_autoencoder`: a new autoencoder trained, or the pretrained one reused (adapted to
   other genes by :mod:`scaug.transfer`).
3. :func:`latent_targets`: every cell encoded; standardised latents, per-type summaries, the codes
   of types and condition values, and the smoothed-bootstrap targets the denoiser learns.
4. :func:`fit_denoiser`: the label-conditioned denoiser (classifier-free guidance).
5. :func:`fit_classifier`: the classifier on noisy latents that post-guidance needs, when it does.

Each stage reads the model's settings and returns what it made; :meth:`~scaug.SCLD.fit` sets the
fitted attributes only once every stage has finished (all or nothing).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.base import clone

from . import _torch_utils, _utils, conditions, sampling, transfer
from .autoencoder import CellAutoencoder, is_fitted_autoencoder
from .diffusion import GaussianDiffusion
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
    validation_split,
)


def default_steps(n_obs: int, base: int) -> int:
    """Optimiser steps for ``n_obs`` cells: ``base`` for 1000, more for more data (at most
    ``3 * base``), and at least ``base // 2``, which even 100 cells need to learn the latents."""
    return int(np.clip(base * (1 + np.log10(max(n_obs, 10) / 1000) / 2), base // 2, 3 * base))


# -- 1. the input --------------------------------------------------------------------------------
@dataclass
class FitInput:
    """What :func:`check_input` made of ``fit``'s arguments."""

    X: object  #: a checked matrix (ndarray or CSR) or an OnDiskCells
    y: np.ndarray | None
    unlabelled: np.ndarray  #: bool, the cells labelled -1
    attributes: dict  #: the conditions, ``{name: one value per cell}``
    names: np.ndarray | None  #: gene names
    on_disk: bool
    device: object  #: the torch.device to train on
    pretrained: CellAutoencoder | None  #: a private copy of the given fitted autoencoder
    overlap: dict | None  #: how X's genes meet the pretrained autoencoder's (None: the same)


def check_input(model, X, y, given_conditions, feature_names) -> FitInput:
    """Check everything :meth:`~scaug.SCLD.fit` was given, before any training."""
    if isinstance(model.autoencoder, CellAutoencoder) and not is_fitted_autoencoder(
            model.autoencoder):  # a template: its settings too, before any training
        _utils.validate_params(model.autoencoder)
        check_trainer_kwargs(model.autoencoder.trainer_kwargs)
    device = _torch_utils.resolve_device(model.device)
    check_trainer_kwargs(model.trainer_kwargs)
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
        if model.latent_centering == "type" and unlabelled.any():
            raise ValueError(
                f"latent_centering='type' needs every cell's type, but y has "
                f"{int(unlabelled.sum())} unlabelled cell(s) (-1): an unlabelled cell has no "
                "type mean to subtract. Use latent_centering='global' to learn them.")
        _utils.check_sortable(y[~unlabelled])
    attributes = conditions.check_conditions(given_conditions, X.shape[0])
    ae = pretrained_autoencoder(model, device)
    overlap = None
    if ae is not None:
        # other genes (by name) are aligned, or refused before any training
        overlap = transfer.overlap_or_none(ae, X.shape[1], names, float(model.min_gene_overlap))
        if ae.likelihood_ == "nb" and not _utils.is_count_matrix(X.sample() if on_disk else X):
            raise ValueError("The given autoencoder models counts, but X is not integer counts.")
    return FitInput(X, y, unlabelled, attributes, names, on_disk, device, ae, overlap)


# -- 2. the autoencoder --------------------------------------------------------------------------
def pretrained_autoencoder(model, device):
    """A private copy of the model's fitted autoencoder (the user's object is never changed), or
    None when one must be trained."""
    ae = model.autoencoder
    if isinstance(ae, str | os.PathLike):
        return CellAutoencoder.load(ae, device=device)
    if is_fitted_autoencoder(ae):
        return copy.deepcopy(ae).to(device)
    return None


def new_autoencoder(model, device, seed) -> CellAutoencoder:
    """The autoencoder to train: a clone of the model's template, or one of its settings."""
    if isinstance(model.autoencoder, CellAutoencoder):  # a template
        ae = clone(model.autoencoder)
        epochs = ae.max_epochs
        if model.max_epochs is not None:
            epochs = model.max_epochs if epochs is None else min(epochs, model.max_epochs)
        return ae.set_params(max_epochs=epochs, device=device, random_state=seed,
                             verbose=model.verbose, trainer_kwargs=model.trainer_kwargs,
                             cpu_threads=None)
    # cpu_threads=None: the model's setting is already in force
    return CellAutoencoder(n_latent=int(model.n_latent), hidden=tuple(model.ae_hidden),
                           learning_rate=model.learning_rate, max_epochs=model.max_epochs,
                           early_stopping=model.early_stopping,
                           validation_fraction=model.validation_fraction,
                           n_iter_no_change=model.n_iter_no_change, tol=model.tol,
                           device=device, random_state=seed, verbose=model.verbose,
                           trainer_kwargs=model.trainer_kwargs, cpu_threads=None)


def validation_cells(model, y, n_cells: int, on_disk: bool, seed: int):
    """The cells held out to stop training at convergence (None: train the full budget).

    Taken only from types (and the unlabelled cells) of at least 100 cells, so a rare type keeps
    every cell for training."""
    if not model.early_stopping or on_disk:
        return None
    groups = (np.zeros(n_cells, np.int64) if y is None
              else np.unique(np.asarray(y).astype(str), return_inverse=True)[1])
    return validation_split(groups, float(model.validation_fraction), seed)


def fit_autoencoder(model, data: FitInput, seed: int, validation) -> CellAutoencoder:
    """The fitted autoencoder: trained here, adapted to ``X``'s genes, or reused as given."""
    ae = data.pretrained
    if ae is None:
        every_cell = np.zeros(data.X.shape[0], bool)
        return new_autoencoder(model, data.device, seed).fit(
            data.X, feature_names=data.names,
            validation_cells=validation if validation is not None else every_cell)
    if data.overlap is not None:  # a private copy, so its settings may change
        reordered = data.overlap["n_new"] == 0 and data.overlap["n_missing"] == 0
        ae = ae.set_params(verbose=model.verbose, trainer_kwargs=model.trainer_kwargs,
                           cpu_threads=None).adapt(
            data.X, feature_names=data.names, min_overlap=float(model.min_gene_overlap),
            max_epochs=0 if reordered else model.max_epochs, random_state=seed)
    return ae


# -- 3. the latents ------------------------------------------------------------------------------
@dataclass
class Latents:
    """Every cell's latent and codes, and what the denoiser learns of them."""

    Zs: np.ndarray  #: standardised latents, float32
    mean: np.ndarray  #: the latents' mean and scale (``latent_mean_``, ``latent_scale_``)
    scale: np.ndarray
    library: np.ndarray  #: library sizes (row sums)
    classes: np.ndarray | None
    codes: np.ndarray  #: per cell its type's code; unlabelled cells the null label's
    labelled: np.ndarray  #: bool
    typed: np.ndarray  #: per cell its type's code, -1 for a cell without a type
    summaries: sampling.TypeSummaries
    values: dict  #: the conditions' values, sorted (``conditions_``)
    attribute_codes: np.ndarray  #: (n_cells, n_attributes)
    train_codes: np.ndarray  #: the codes the denoiser is conditioned on (type, then attributes)
    groups: np.ndarray  #: one id per (type, values) for the smoothed bootstrap, -1: as they are
    targets: np.ndarray  #: what the denoiser learns (latents, or offsets from the type's mean)

    @property
    def n_classes(self) -> int:
        return 1 if self.classes is None else len(self.classes)


def latent_targets(model, data: FitInput, ae: CellAutoencoder) -> Latents:
    """Encode every cell and derive the codes, summaries and targets the latent stages learn."""
    X, y, unlabelled = data.X, data.y, data.unlabelled
    Z, library = X.encode(ae) if data.on_disk else (ae.encode(X), _utils.row_sums(X))
    if y is None:
        classes = None
        codes = np.zeros(X.shape[0], dtype=np.int64)
    else:
        classes, labelled_codes = np.unique(y[~unlabelled], return_inverse=True)
        # unlabelled cells get the null label's index: the diffusion model learns them under it
        codes = np.full(X.shape[0], len(classes), dtype=np.int64)
        codes[~unlabelled] = labelled_codes
    n_classes = 1 if classes is None else len(classes)
    mean, scale = Z.mean(0), Z.std(0) + 1e-6
    Zs = ((Z - mean) / scale).astype(np.float32)
    labelled = ~unlabelled
    summaries = sampling.TypeSummaries.fit(
        Zs[labelled], codes[labelled], n_classes,
        library=library[labelled] if ae.likelihood_ == "nb" else None,
        quantile=float(model.screening_quantile))
    # the attributes: values sorted (as classes_), codes in the denoiser's columns, and the
    # groups of one type and one value of each attribute for the smoothed bootstrap
    values, attribute_codes = conditions.condition_codes(data.attributes, X.shape[0])
    typed = np.where(unlabelled | (y is None), -1, codes)  # -1: a cell without a type
    train_codes = codes if not data.attributes else np.column_stack([codes, attribute_codes])
    groups = np.where(unlabelled, -1, codes)  # unlabelled cells are learned as they are
    if data.attributes:
        groups = conditions.group_ids(np.column_stack([groups, attribute_codes]), groups < 0)
    # what the denoiser learns: the latents, or (type centring) their offsets from the type's
    # mean, so that how cells vary within a type is learned from every type at once
    targets = Zs - summaries.mean[codes].astype(np.float32) \
        if model.latent_centering == "type" else Zs
    return Latents(Zs, mean, scale, library, classes, codes, labelled, typed, summaries, values,
                   attribute_codes, train_codes, groups, targets)


# -- 4. the denoiser -----------------------------------------------------------------------------
@dataclass
class Trained:
    """A trained network of the latent stages: its EMA weights, loss history and early stop."""

    network: object
    history: list
    stopped_at: int | None = None


def denoiser_steps(model, n_obs: int) -> int:
    """The denoiser's optimiser steps: ``diffusion_steps``, or a number that grows with the
    cells, capped by ``max_epochs`` passes of class-balanced minibatches."""
    n_steps = model.diffusion_steps or default_steps(n_obs, 3000)
    if model.max_epochs is not None:
        n_steps = min(n_steps, model.max_epochs * max(1, int(np.ceil(n_obs / model.batch_size))))
    return n_steps


def fit_denoiser(model, lat: Latents, diffusion: GaussianDiffusion, validation, n_steps: int,
                 seed: int, device) -> Trained:
    """Train the denoiser on the smoothed-bootstrap targets, dropping the type and each
    attribute at random (classifier-free guidance); inside the caller's seeded torch RNG."""
    shrunk, spread = sampling.smoothed_bootstrap(lat.targets, lat.groups,
                                                 float(model.latent_smoothing))
    denoiser = Denoiser(lat.Zs.shape[1], lat.n_classes, int(model.width), int(model.depth),
                        n_values=[len(v) for v in lat.values.values()])
    rows, stopping = None, None
    # a stage too short to be checked n_iter_no_change + 1 times trains on every cell
    if validation is not None and n_steps >= 100 * (model.n_iter_no_change + 1):
        rows = np.flatnonzero(~validation)
        stopping = ConvergenceStop(patience=model.n_iter_no_change, tol=model.tol,
                                   check_every=100)
    plan = DenoiserPlan(denoiser, diffusion, null_label=lat.n_classes if lat.classes is not None
                        else 0, attribute_nulls=denoiser.n_values,
                        label_dropout=model.label_dropout, conditional=lat.classes is not None,
                        learning_rate=model.learning_rate, n_steps=n_steps, seed=seed + 1,
                        validation=None if rows is None
                        else (lat.targets[validation], lat.train_codes[validation]))
    data = MinibatchData([shrunk, spread, lat.train_codes], batch_size=int(model.batch_size),
                         seed=seed + 1, n_batches=n_steps, rows=rows,
                         draw=BalancedDraws(lat.codes if rows is None else lat.codes[rows]))
    fit_plan(plan, data, device=device, trainer_kwargs=model.trainer_kwargs,
             max_steps=n_steps, desc="diffusion", verbose=model.verbose, stopping=stopping)
    return Trained(plan.averaged.eval(), list(plan.history),
                   None if stopping is None else stopping.stopped_at)


# -- 5. the latent classifier --------------------------------------------------------------------
def wants_classifier(model, lat: Latents) -> bool:
    """Whether the model trains the latent classifier (post-guidance needs it)."""
    wanted = model.latent_classifier is True or (
        model.latent_classifier == "auto" and (model.classifier_scale > 0 or model.screening))
    return lat.classes is not None and lat.n_classes > 1 and wanted


def fit_classifier(model, lat: Latents, diffusion: GaussianDiffusion, n_steps: int, seed: int,
                   device) -> Trained:
    """Train the classifier on noisy latents of the labelled cells (half the denoiser's steps);
    ``network`` None when the model does not want one."""
    if not wants_classifier(model, lat):
        return Trained(None, [])
    labelled, codes = lat.labelled, lat.codes
    clf = LatentClassifier(lat.Zs.shape[1], lat.n_classes)
    n_clf = max(1, n_steps // 2)
    plan = ClassifierPlan(clf, diffusion, learning_rate=model.learning_rate, n_steps=n_clf,
                          seed=seed + 2)
    data = MinibatchData([lat.Zs[labelled], codes[labelled]], batch_size=int(model.batch_size),
                         seed=seed + 2, n_batches=n_clf, draw=BalancedDraws(codes[labelled]))
    fit_plan(plan, data, device=device, trainer_kwargs=model.trainer_kwargs, max_steps=n_clf,
             desc="classifier", verbose=model.verbose)
    return Trained(plan.averaged.eval(), list(plan.history))


# -- the fitted state ----------------------------------------------------------------------------
def set_fitted_state(model, data: FitInput, ae: CellAutoencoder, lat: Latents,
                     diffusion: GaussianDiffusion, denoiser: Trained, classifier: Trained) -> None:
    """Replace the model's fitted attributes by those of this fit (called once every stage has
    finished, so that a failed fit leaves the model as it was)."""
    X, counts = data.X, ae.likelihood_ == "nb"
    table = conditions.count_table(lat.classes, lat.values, *np.unique(
        np.column_stack([lat.typed, lat.attribute_codes]), axis=0, return_counts=True))
    shifts = (conditions.library_shifts(lat.library, lat.typed, lat.attribute_codes, lat.values,
                                        lat.n_classes) if counts and data.attributes else {})
    _utils.drop_fitted_state(model)
    model.autoencoder_ = ae
    model.gene_overlap_ = data.overlap
    model.counts_ = counts
    model.n_features_in_ = X.shape[1]
    if data.names is not None:
        model.feature_names_in_ = data.names
    model.input_dtype_ = str(X.dtype)
    model.sparse_input_ = X.sparse if data.on_disk else sp.issparse(X)
    model.n_train_ = int(X.shape[0])
    model.classes_ = lat.classes
    model.class_counts_ = np.bincount(lat.codes[lat.labelled], minlength=lat.n_classes)
    model.n_unlabelled_ = int(data.unlabelled.sum())
    model.latent_mean_ = lat.mean
    model.latent_scale_ = lat.scale
    model.type_summaries_ = lat.summaries
    model.conditions_ = lat.values
    model.condition_counts_ = table
    model.library_shifts_ = shifts
    model.diffusion_ = diffusion
    model.classifier_ = None if classifier.network is None else classifier.network.to(data.device)
    model.classifier_history_ = classifier.history
    model.stopped_at_ = {"autoencoder": ae.stopped_at_ if data.pretrained is None else None,
                         "diffusion": denoiser.stopped_at}
    model.diffusion_history_ = denoiser.history
    model.device_ = data.device
    model.denoiser_ = denoiser.network.to(data.device)  # last: check_is_fitted looks for it
