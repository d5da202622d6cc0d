"""SCLD: single-cell latent diffusion with pre-guidance and post-guidance."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.neighbors import NearestNeighbors
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from . import _utils
from .autoencoder import CellAutoencoder
from .diffusion import GaussianDiffusion
from .nn import Denoiser, LatentClassifier
from .train import run_steps


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
    sampler : {"ddim", "ancestral"}, default="ddim"
    device : {"auto", "cpu", "cuda", "cuda:N"} or torch.device, default="auto"
    random_state : int, RandomState instance or None, default=None
        Seeds everything (numpy and torch); the same seed and data give the same cells on CPU.
    verbose : bool, default=True
        Progress bars for each training stage and for sampling.

    Attributes
    ----------
    autoencoder_ : CellAutoencoder
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
        Only when fitted on a DataFrame with string columns.
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

    def __init__(self, *, autoencoder=None, n_latent=16, ae_hidden=(256, 128), width=128, depth=3,
                 max_epochs=None, diffusion_steps=None, batch_size=256, learning_rate=1e-3,
                 label_dropout=0.15, latent_smoothing=4.0, guidance_scale=1.0, classifier_scale=0.0,
                 screening=False, screening_threshold=0.5, screening_quantile=0.9,
                 screening_tolerance=1.0, max_rounds=10, n_sample_steps=50, sampler="ddim",
                 device="auto", random_state=None, verbose=True):
        self.autoencoder = autoencoder
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
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # -- validation ----------------------------------------------------------------------------
    def _check_params(self):
        def positive_int(name, allow_none=False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if not (isinstance(v, Integral) and not isinstance(v, bool) and v >= 1):
                raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''};"
                                 f" got {v!r}.")

        for name in ("n_latent", "width", "depth", "batch_size", "max_rounds", "n_sample_steps"):
            positive_int(name)
        positive_int("max_epochs", allow_none=True)
        positive_int("diffusion_steps", allow_none=True)
        if not (isinstance(self.label_dropout, Real) and 0 <= self.label_dropout < 1):
            raise ValueError(f"label_dropout must be in [0, 1); got {self.label_dropout!r}.")
        if not (isinstance(self.latent_smoothing, Real) and np.isfinite(self.latent_smoothing)
                and self.latent_smoothing >= 0):
            raise ValueError(f"latent_smoothing must be a finite number >= 0; got "
                             f"{self.latent_smoothing!r}.")
        self._check_sampling_options(self.guidance_scale, self.classifier_scale,
                                     self.screening_threshold, self.n_sample_steps, self.sampler)
        if not 0 < self.screening_quantile <= 1:
            raise ValueError(f"screening_quantile must be in (0, 1]; got {self.screening_quantile!r}.")
        if not self.screening_tolerance > 0:
            raise ValueError(f"screening_tolerance must be > 0; got {self.screening_tolerance!r}.")
        return _utils.resolve_device(self.device)

    @staticmethod
    def _check_sampling_options(guidance_scale, classifier_scale, threshold, steps, sampler):
        for name, v in (("guidance_scale", guidance_scale), ("classifier_scale", classifier_scale)):
            if not (isinstance(v, Real) and np.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0; got {v!r}.")
        if not (isinstance(threshold, Real) and 0 <= threshold < 1):
            raise ValueError(f"screening_threshold must be in [0, 1); got {threshold!r}.")
        if not (isinstance(steps, Integral) and steps >= 1):
            raise ValueError(f"n_sample_steps must be a positive int; got {steps!r}.")
        if sampler not in ("ddim", "ancestral"):
            raise ValueError(f"sampler must be 'ddim' or 'ancestral'; got {sampler!r}.")

    def _get_autoencoder(self, device):
        ae = self.autoencoder
        if ae is None:
            return None
        if isinstance(ae, str | os.PathLike):
            return CellAutoencoder.load(ae, device=device)
        if isinstance(ae, CellAutoencoder):
            if not hasattr(ae, "module_"):  # a template, trained in fit
                return None
            ae._set_runtime(device)
            return ae
        raise TypeError("autoencoder must be None, a scaug CellAutoencoder (fitted, or a template "
                        f"to train) or the path of a saved one; got {type(ae).__name__}.")

    def _new_autoencoder(self, device, seed) -> CellAutoencoder:
        if isinstance(self.autoencoder, CellAutoencoder):
            ae = clone(self.autoencoder)
            epochs = ae.max_epochs
            if self.max_epochs is not None:
                epochs = self.max_epochs if epochs is None else min(epochs, self.max_epochs)
            return ae.set_params(max_epochs=epochs, device=device, random_state=seed,
                                 verbose=self.verbose)
        return CellAutoencoder(n_latent=int(self.n_latent), hidden=tuple(self.ae_hidden),
                               max_epochs=self.max_epochs, device=device, random_state=seed,
                               verbose=self.verbose)

    # -- fit -----------------------------------------------------------------------------------
    def fit(self, X, y=None):
        """Fit the autoencoder (unless given) and the latent diffusion model.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_cells, n_genes)
            Integer counts (preferred) or continuous expression. Sparse input is densified one
            minibatch at a time, never whole.
        y : array-like of shape (n_cells,), optional
            Cell-type labels (any hashable values). Without labels only holistic synthesis is
            possible. Cells labelled ``-1`` are unlabelled (scikit-learn's semi-supervised
            convention; for string labels use ``np.where(annotated, labels.astype(object), -1)``,
            as the string ``"-1"`` is refused as ambiguous): they train the autoencoder and the
            diffusion model under the null label, but not the latent classifier, and ``-1`` is
            not a type that can be generated. Many unlabelled cells beside a few labelled ones of
            a rare type are what lets the autoencoder render that type's unseen cells
            (``docs/fidelity_10shot.md``).
        """
        device = self._check_params()
        names = _utils.feature_names(X)
        X = _utils.check_matrix(X, min_rows=2)
        unlabelled = np.zeros(X.shape[0], dtype=bool)
        if y is not None:
            y = _utils.check_labels(y, X.shape[0])
            unlabelled = _utils.unlabelled_mask(y)
            if unlabelled.all():
                raise ValueError("Every label in y is -1 (unlabelled); fit with y=None for a "
                                 "model without labels, or label some cells.")
        ae = self._get_autoencoder(device)
        if ae is not None:
            ae.check_genes(_utils.GeneSignature(X.shape, names))
        counts = _utils.is_count_matrix(X)
        if ae is not None and ae.likelihood_ == "nb" and not counts:
            raise ValueError("The given autoencoder models counts, but X is not integer counts.")

        seed = _utils.seed_from(self.random_state)
        self.n_features_in_ = X.shape[1]
        if names is not None:
            self.feature_names_in_ = names
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self.input_dtype_ = str(X.dtype)
        self.sparse_input_ = sp.issparse(X)

        if ae is None:
            ae = self._new_autoencoder(device, seed).fit(X)
        self.autoencoder_ = ae
        self.counts_ = ae.likelihood_ == "nb"
        Z = ae.transform(X)

        if y is None:
            self.classes_ = None
            codes = np.zeros(X.shape[0], dtype=np.int64)
        else:
            self.classes_, labelled_codes = np.unique(y[~unlabelled], return_inverse=True)
            # unlabelled cells get the null label's index: the diffusion model learns them under it
            codes = np.full(X.shape[0], len(self.classes_), dtype=np.int64)
            codes[~unlabelled] = labelled_codes
        n_classes = 1 if self.classes_ is None else len(self.classes_)
        self.class_counts_ = np.bincount(codes[~unlabelled], minlength=n_classes)
        self.n_unlabelled_ = int(unlabelled.sum())
        self.library_sizes_ = _utils.row_sums(X).astype(np.float32) if self.counts_ else None
        self.codes_ = codes

        self.latent_mean_ = Z.mean(0)
        self.latent_scale_ = Z.std(0) + 1e-6
        Zs = ((Z - self.latent_mean_) / self.latent_scale_).astype(np.float32)
        self.latents_ = Zs

        rng = np.random.default_rng(seed + 1)
        n_steps = self.diffusion_steps or _default_steps(X.shape[0], 3000)
        steps_per_epoch = max(1, int(np.ceil(X.shape[0] / self.batch_size)))
        if self.max_epochs is not None:
            n_steps = min(n_steps, self.max_epochs * steps_per_epoch)
        self.diffusion_ = GaussianDiffusion()
        Zt = torch.as_tensor(Zs, device=device)
        yt = torch.as_tensor(codes, device=device)
        null = n_classes if self.classes_ is not None else 0
        smooth = float(self.latent_smoothing) > 0
        if smooth:
            shrunk, spread = (torch.as_tensor(a, device=device) for a in _smoothed_bootstrap(
                Zs, np.where(unlabelled, -1, codes), float(self.latent_smoothing)))
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
                _utils.flush_denormal():
            torch.manual_seed(seed + 1)
            denoiser = Denoiser(Zs.shape[1], n_classes, int(self.width), int(self.depth)).to(device)

            def denoise_step(idx):
                idx_t = torch.as_tensor(idx, device=device)
                labels = yt[idx_t]
                if self.classes_ is None:
                    labels = torch.full_like(labels, null)
                else:  # unlabelled cells already carry the null label
                    drop = torch.rand(len(idx), device=device) < self.label_dropout
                    labels = torch.where(drop, torch.full_like(labels, null), labels)
                z0 = Zt[idx_t]
                if smooth:
                    z0 = shrunk[idx_t] + spread[idx_t] * torch.randn_like(z0)
                return self.diffusion_.training_loss(denoiser, z0, labels)

            self.denoiser_, self.diffusion_history_ = run_steps(
                denoise_step, denoiser, y=codes, n_steps=n_steps, batch_size=int(self.batch_size),
                lr=self.learning_rate, rng=rng, ema_decay=0.995, desc="diffusion",
                verbose=self.verbose)
            self.classifier_ = None
            if self.classes_ is not None and n_classes > 1:
                clf = LatentClassifier(Zs.shape[1], n_classes).to(device)
                labelled = torch.as_tensor(np.flatnonzero(~unlabelled), device=device)
                Zl, yl = Zt[labelled], yt[labelled]
                self.classifier_, self.classifier_history_ = run_steps(
                    lambda idx: self.diffusion_.classifier_loss(
                        clf, Zl[torch.as_tensor(idx, device=device)],
                        yl[torch.as_tensor(idx, device=device)]),
                    clf, y=codes[~unlabelled], n_steps=max(1, n_steps // 2),
                    batch_size=int(self.batch_size),
                    lr=self.learning_rate, rng=rng, ema_decay=0.99, desc="classifier",
                    verbose=self.verbose)
        self._fit_screening()
        self.device_ = device
        return self

    def _fit_screening(self):
        """Per type: a nearest-neighbour index of its real latents and its acceptance radius."""
        self._nn = {}
        radii = np.zeros(len(self.class_counts_), dtype=np.float64)
        all_nn = NearestNeighbors(n_neighbors=2).fit(self.latents_)
        global_d = all_nn.kneighbors(self.latents_)[0][:, 1]
        for c in range(len(self.class_counts_)):
            Zc = self.latents_[self.codes_ == c]
            self._nn[c] = NearestNeighbors(n_neighbors=1).fit(Zc)
            if len(Zc) >= 3:
                d = NearestNeighbors(n_neighbors=2).fit(Zc).kneighbors(Zc)[0][:, 1]
            else:  # too few cells to measure the type's own spread
                d = global_d
            radii[c] = np.quantile(d, self.screening_quantile)
        self.screening_radius_ = radii

    # -- sampling ------------------------------------------------------------------------------
    def _resolve_request(self, n, rng):
        if isinstance(n, Mapping):
            if self.classes_ is None:
                raise ValueError("This SCLD was fitted without labels; ask for an int number of "
                                 "cells (holistic synthesis), or fit with y to synthesize types.")
            lookup = {_utils.plain_label(c): i for i, c in enumerate(self.classes_)}
            plan = []
            for label, count in n.items():
                if _utils.plain_label(label) not in lookup:
                    raise ValueError(f"Unknown cell type {label!r}; the model knows "
                                     f"{list(self.classes_)}.")
                if not (isinstance(count, Integral) and not isinstance(count, bool) and count >= 0):
                    raise ValueError(f"The number of cells for {label!r} must be an int >= 0; got "
                                     f"{count!r}.")
                plan.append((lookup[_utils.plain_label(label)], int(count)))
            return plan
        if isinstance(n, Integral) and not isinstance(n, bool) and n >= 0:
            props = self.class_counts_ / self.class_counts_.sum()
            drawn = rng.multinomial(int(n), props)
            return [(c, int(k)) for c, k in enumerate(drawn)]
        raise ValueError("n must be an int >= 0 (holistic synthesis) or a mapping {cell type: "
                         f"number of cells}} (pre-guidance); got {n!r}.")

    @torch.no_grad()
    def _draw_latents(self, code, n, gen, *, guidance_scale, classifier_scale, n_sample_steps,
                      sampler, batch_size):
        device = self.device_
        labelled = self.classes_ is not None
        null = len(self.classes_) if labelled else 0
        out = []
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            noise = torch.randn((m, self.latents_.shape[1]), generator=gen).to(device)
            y = torch.full((m,), code if labelled else null, device=device, dtype=torch.long)
            z = self.diffusion_.sample(
                self.denoiser_, y, noise, null_label=null,
                guidance_scale=guidance_scale if labelled else 1.0,
                classifier=self.classifier_ if labelled else None,
                classifier_scale=classifier_scale, n_sample_steps=n_sample_steps, method=sampler,
                step_noise=lambda shape: torch.randn(shape, generator=gen))
            out.append(z.cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.latents_.shape[1]), np.float32)

    @torch.no_grad()
    def _screen(self, code, Zs, threshold):
        """Acceptance of latents for type ``code``, and a score (lower is better) for fallbacks."""
        dist = self._nn[code].kneighbors(Zs)[0][:, 0]
        ratio = dist / (self.screening_radius_[code] * self.screening_tolerance)
        ok = ratio <= 1.0
        if self.classifier_ is not None:
            z = torch.as_tensor(Zs, device=self.device_)
            t = torch.zeros(len(Zs), device=self.device_, dtype=torch.long)
            prob = torch.softmax(self.classifier_(z, self.diffusion_.time_input(t)), -1)
            conf = prob[:, code].cpu().numpy()
            ok &= conf >= threshold
            ratio = ratio + (conf < threshold)
        return ok, ratio

    def sample(self, n, *, random_state=None, guidance_scale=None, classifier_scale=None,
               screening=None, screening_threshold=None, n_sample_steps=None, sampler=None,
               batch_size=4096):
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
            Cells per batch on the device.

        Returns
        -------
        X_syn : ndarray or CSR matrix of shape (n_total, n_genes)
            Integer counts if the model was fitted on counts, continuous values otherwise; CSR
            when the model was fitted on sparse input.
        y_syn : ndarray of shape (n_total,) or None
            The cell type each cell was generated for (None when fitted without labels).
        """
        check_is_fitted(self, "denoiser_")
        guidance_scale = self.guidance_scale if guidance_scale is None else guidance_scale
        classifier_scale = self.classifier_scale if classifier_scale is None else classifier_scale
        screening = self.screening if screening is None else screening
        threshold = self.screening_threshold if screening_threshold is None else screening_threshold
        steps = self.n_sample_steps if n_sample_steps is None else n_sample_steps
        sampler = self.sampler if sampler is None else sampler
        self._check_sampling_options(guidance_scale, classifier_scale, threshold, steps, sampler)
        if not (isinstance(batch_size, Integral) and batch_size >= 1):
            raise ValueError(f"batch_size must be a positive int; got {batch_size!r}.")
        seed = _utils.seed_from(self.random_state if random_state is None else random_state)
        rng = np.random.default_rng(seed)
        gen = _utils.cpu_generator(seed)
        plan = self._resolve_request(n, rng)
        opts = dict(guidance_scale=float(guidance_scale), classifier_scale=float(classifier_scale),
                    n_sample_steps=int(steps), sampler=sampler, batch_size=int(batch_size))

        with _utils.flush_denormal():
            return self._sample(plan, screening, threshold, opts, rng, gen)

    def _sample(self, plan, screening, threshold, opts, rng, gen):
        report, blocks_z, blocks_y = {}, [], []
        bar = tqdm(total=sum(k for _, k in plan), desc="sampling", disable=not self.verbose,
                   leave=False)
        for code, k in plan:
            if k == 0:
                continue
            if not screening:
                Zc = self._draw_latents(code, k, gen, **opts)
                drawn, accepted = k, k
            else:
                Zc, drawn, accepted = self._screened_latents(code, k, gen, threshold, opts)
            name = self.classes_[code] if self.classes_ is not None else None
            report[_utils.plain_label(name)] = {"requested": k, "drawn": drawn, "accepted": accepted,
                                  "acceptance_rate": accepted / drawn if drawn else float("nan")}
            blocks_z.append(Zc)
            blocks_y.append(np.full(k, code))
            bar.update(k)
        bar.close()
        self.sampling_report_ = report
        return self._decode(blocks_z, blocks_y, rng, gen)

    def _screened_latents(self, code, k, gen, threshold, opts):
        kept, pool, pool_score = [], [], []
        # the first round draws just the quota: most candidates pass, so drawing a margin up front
        # would waste up to half the sampling time; later rounds scale by the observed rate
        n_kept, n_passed, drawn, rate = 0, 0, 0, 1.0
        for _ in range(int(self.max_rounds)):
            need = k - n_kept
            m = int(min(max(need / max(rate, 0.02), 16), 10 * need + 64))
            Zc = self._draw_latents(code, m, gen, **opts)
            ok, score = self._screen(code, Zc, threshold)
            drawn += m
            n_passed += int(ok.sum())
            kept.append(Zc[ok][:need])
            n_kept += min(int(ok.sum()), need)
            pool.append(Zc[~ok])
            pool_score.append(score[~ok])
            rate = max(n_passed, 1) / drawn
            if n_kept >= k:
                break
        accepted = n_passed
        if n_kept < k:  # bounded effort: fill the quota with the best of the rejected latents
            pool = np.concatenate(pool)
            best = np.argsort(np.concatenate(pool_score), kind="stable")[: k - n_kept]
            kept.append(pool[best])
            label = _utils.plain_label(self.classes_[code]) if self.classes_ is not None else "cells"
            warnings.warn(
                f"Screening accepted {n_kept} of {drawn} candidates for {label!r} in "
                f"{self.max_rounds} rounds; the remaining {k - n_kept} are the closest rejected "
                "ones. Raise max_rounds or screening_tolerance, or lower screening_threshold.",
                UserWarning, stacklevel=3)
        return np.concatenate(kept)[:k], drawn, accepted

    def _decode(self, blocks_z, blocks_y, rng, gen):
        n_genes = self.n_features_in_
        if not blocks_z:
            X = np.zeros((0, n_genes), dtype=np.float32)
            self.sample_latents_ = np.zeros((0, len(self.latent_mean_)), dtype=np.float32)
            return (sp.csr_matrix(X) if self.sparse_input_ else X), self._labels(np.zeros(0, int))
        Zs = np.concatenate(blocks_z)
        codes = np.concatenate(blocks_y)
        Z = (Zs * self.latent_scale_ + self.latent_mean_).astype(np.float32)
        self.sample_latents_ = Z
        library = None
        if self.counts_:
            library = np.empty(len(codes), dtype=np.float32)
            for c in np.unique(codes):
                where = codes == c
                real = self.library_sizes_[self.codes_ == c]
                library[where] = real[rng.integers(len(real), size=int(where.sum()))]
        parts = []
        for idx in _utils.iter_batches(len(Z), 4096):
            x = self.autoencoder_.generate(Z[idx], None if library is None else library[idx],
                                           generator=gen)
            parts.append(sp.csr_matrix(x) if self.sparse_input_ else x)
        X = sp.vstack(parts, format="csr") if self.sparse_input_ else np.concatenate(parts)
        if self.counts_ and np.issubdtype(np.dtype(self.input_dtype_), np.integer):
            X = X.astype(self.input_dtype_)
        return X, self._labels(codes)

    def _labels(self, codes):
        return None if self.classes_ is None else self.classes_[codes]

    # -- genes and persistence -----------------------------------------------------------------
    def check_genes(self, X) -> None:
        """Raise a clear error if ``X``'s genes differ from those the model was trained on."""
        check_is_fitted(self, "denoiser_")
        _utils.check_genes(X.shape[1], _utils.feature_names(X), expected_n=self.n_features_in_,
                           expected_names=getattr(self, "feature_names_in_", None),
                           what="this SCLD model")

    def save(self, path, overwrite: bool = False) -> None:
        """Write the fitted model (autoencoder included) to one versioned file, atomically."""
        check_is_fitted(self, "denoiser_")
        names = getattr(self, "feature_names_in_", None)
        params = {k: v for k, v in self.get_params(deep=False).items()
                  if k not in ("autoencoder", "device", "random_state")}
        params["ae_hidden"] = list(params["ae_hidden"])
        state = {
            "format_version": _utils.FORMAT_VERSION, "class": "SCLD", "params": params,
            "random_state": self.random_state if isinstance(self.random_state, int) else None,
            "autoencoder": self.autoencoder_._state(),
            "denoiser": {k: v.cpu() for k, v in self.denoiser_.state_dict().items()},
            "classifier": None if self.classifier_ is None else {
                k: v.cpu() for k, v in self.classifier_.state_dict().items()},
            "classes": None if self.classes_ is None else _utils.to_plain_list(self.classes_),
            "classes_dtype": None if self.classes_ is None else str(self.classes_.dtype),
            "n_features_in": int(self.n_features_in_),
            "feature_names_in": None if names is None else _utils.to_plain_list(names),
            "input_dtype": self.input_dtype_, "sparse_input": self.sparse_input_,
            "codes": torch.from_numpy(self.codes_.astype(np.int64)),
            "latents": torch.from_numpy(self.latents_),
            "latent_mean": torch.from_numpy(self.latent_mean_),
            "latent_scale": torch.from_numpy(self.latent_scale_),
            "library_sizes": None if self.library_sizes_ is None else torch.from_numpy(
                self.library_sizes_),
            "diffusion_steps": self.diffusion_.n_steps,
        }
        _utils.atomic_save(state, path, overwrite=overwrite)

    @classmethod
    def load(cls, path, device="auto") -> SCLD:
        """Read a model written by :meth:`save`; ``device`` picks where it samples."""
        state = _utils.checked_load(path, expected_class="SCLD")
        params = dict(state["params"])
        params["ae_hidden"] = tuple(params["ae_hidden"])
        # files written before the option existed were fitted without it
        params.setdefault("latent_smoothing", 0.0)
        model = cls(**params, device=device, random_state=state["random_state"])
        dev = _utils.resolve_device(device)
        model.device_ = dev
        model.autoencoder_ = CellAutoencoder._from_state(state["autoencoder"], device=device)
        model.counts_ = model.autoencoder_.likelihood_ == "nb"
        if state["classes"] is None:
            model.classes_ = None
        else:
            model.classes_ = np.asarray(state["classes"], dtype=np.dtype(state["classes_dtype"])
                                        if state["classes_dtype"] != "object" else object)
        model.n_features_in_ = state["n_features_in"]
        if state["feature_names_in"] is not None:
            model.feature_names_in_ = np.asarray(state["feature_names_in"], dtype=object)
        model.input_dtype_ = state["input_dtype"]
        model.sparse_input_ = state["sparse_input"]
        model.codes_ = state["codes"].numpy()
        n_classes = 1 if model.classes_ is None else len(model.classes_)
        # unlabelled cells carry the code n_classes (the null label)
        model.class_counts_ = np.bincount(model.codes_, minlength=n_classes + 1)[:n_classes]
        model.n_unlabelled_ = int((model.codes_ == n_classes).sum()) if model.classes_ is not None else 0
        model.latents_ = state["latents"].numpy()
        model.latent_mean_ = state["latent_mean"].numpy()
        model.latent_scale_ = state["latent_scale"].numpy()
        lib = state["library_sizes"]
        model.library_sizes_ = None if lib is None else lib.numpy()
        model.diffusion_ = GaussianDiffusion(state["diffusion_steps"])
        d = model.latents_.shape[1]
        model.denoiser_ = Denoiser(d, n_classes, int(model.width), int(model.depth))
        model.denoiser_.load_state_dict(state["denoiser"])
        model.denoiser_.to(dev).eval()
        model.classifier_ = None
        if state["classifier"] is not None:
            model.classifier_ = LatentClassifier(d, n_classes)
            model.classifier_.load_state_dict(state["classifier"])
            model.classifier_.to(dev).eval()
        model._fit_screening()
        return model
