"""Cheap latent generators: oversample through SCLD's autoencoder without a diffusion model.

:class:`LatentOverSampler` encodes the training cells with a :class:`scaug.CellAutoencoder`,
draws new latents per cell type by a simple rule (re-drawn copies, a smoothed bootstrap or a
Gaussian) and decodes them through the same likelihood, with library sizes drawn from the
type's real cells, exactly as :class:`scaug.SCLD` decodes its own latents. It is the baseline
that says what the diffusion model adds, and the cheap path for users: minutes less per fit.
"""

from __future__ import annotations

import os
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
import torch
from imblearn.over_sampling.base import BaseOverSampler
from sklearn.base import clone
from sklearn.utils._param_validation import StrOptions

from . import _utils, sampling
from .autoencoder import CellAutoencoder
from .base import CellOverSampler
from .sampling import smoothed_bootstrap

try:  # scikit-learn >= 1.6
    from sklearn.frozen import FrozenEstimator
except ImportError:  # pragma: no cover - older scikit-learn
    FrozenEstimator = None

#: CellAutoencoder parameters that LatentOverSampler sets itself
_OWN_PARAMS = ("max_epochs", "device", "random_state", "verbose")


class LatentOverSampler(CellOverSampler):
    """Over-sample cell types with latents drawn by a simple rule and decoded by an autoencoder.

    An imbalanced-learn sampler like :class:`scaug.SCLDOverSampler`, without the diffusion
    model: the training cells are encoded with a :class:`~scaug.CellAutoencoder`, new latents
    are drawn for each class to grow, and they are decoded through the autoencoder's likelihood
    (negative binomial for counts, with library sizes drawn from the type's real cells, as SCLD
    does; Gaussian for continuous input). Only ``method`` differs between the three rules:

    - ``"copies"``: latents of the type's training cells, drawn uniformly with replacement and
      re-drawn through the likelihood. Each synthetic cell is a noisy copy of a training cell.
    - ``"bootstrap"``: a smoothed bootstrap of the type's latents, the rule
      ``SCLD(latent_smoothing=...)`` trains its denoiser toward: a training latent shrunk toward
      the type's mean plus Gaussian noise of ``f = min(1, smoothing / sqrt(n))`` times the type's
      per-dimension sd, so the type keeps its variance (``n``: the type's training cells).
    - ``"gaussian"``: a Gaussian fitted to the type's latents, with a Ledoit-Wolf (shrunk)
      covariance of the standardised latents, the summary SCLD keeps for screening
      (:class:`scaug.sampling.TypeSummaries`); a type of fewer than 3 cells borrows the
      covariance of all cells.

    When to use it: when a fit of :class:`scaug.SCLDOverSampler` costs too much, or as the
    baseline to compare it with. On types with 10 training cells, a Gaussian of their latents
    was about as hard to tell from held-out real cells as SCLD's cells
    (``docs/fidelity_10shot.md`` measures both through the same autoencoder), for the price of
    the autoencoder alone. It cannot learn from the other types how cells of a type vary: it only
    blurs the type's few latents. Give it an autoencoder pretrained on every cell you have
    (labelled or not) so that it renders unseen cells of the type well.

    Parameters
    ----------
    sampling_strategy : float, str, dict or callable, default='auto'
        The number of samples of each class after resampling, as for every imbalanced-learn
        over-sampler (see :class:`scaug.SCLDOverSampler`).
    random_state : int, RandomState instance or None, default=None
        Seeds the training of a new autoencoder, the latent draws, the library sizes and the
        likelihood draws. With an int the output is the same on every call on the CPU, whatever
        the container of ``X``. The library sizes do not depend on ``method``, so the three
        rules with one seed decode their latents with the same library sizes. To compare with
        SCLD through the very same autoencoder, pass its ``autoencoder_`` (below).
    method : {"gaussian", "bootstrap", "copies"}, default="gaussian"
        How new latents are drawn (above).
    autoencoder : None, CellAutoencoder, str or path-like, default=None
        - ``None``: train a new autoencoder on the cells given to ``fit_resample`` with SCLD's
          default autoencoder settings (``autoencoder_params`` changes them).
        - A fitted ``CellAutoencoder`` (for example ``SCLD.autoencoder_``), or the path of a
          saved one: reused as is, frozen (never trained, never modified). ``X`` must have its
          genes; for other genes, first :meth:`CellAutoencoder.adapt` it.
        - An unfitted ``CellAutoencoder``: a template; a clone of it is trained, with this
          sampler's ``random_state``, ``device`` and ``verbose`` (and ``max_epochs`` capped by
          this sampler's).

        :func:`~sklearn.base.clone` (cross-validation, grid search) keeps a fitted autoencoder
        as it is: it is a pretrained artefact, not a template.
    smoothing : float, default=4.0
        Strength of the smoothed bootstrap (``method="bootstrap"`` only): SCLD's
        ``latent_smoothing`` default. 0 gives exact copies of the training latents.
    max_epochs : int or None, default=None
        Caps the epochs of a new autoencoder; ``None`` uses its default.
    device : {"auto", "cpu", "cuda", "cuda:N"} or torch.device, default="auto"
        Where a new or loaded autoencoder runs; a fitted one given stays where it is.
    verbose : bool, default=False
        Progress bar while training a new autoencoder.
    autoencoder_params : dict or None, default=None
        Further :class:`~scaug.CellAutoencoder` parameters of a new autoencoder (for example
        ``n_latent``, ``hidden``, ``dispersion``); ``max_epochs``, ``device``, ``random_state``
        and ``verbose`` are set through the sampler and may not be repeated here.

    Attributes
    ----------
    sampling_strategy_ : dict
        The number of samples generated for each class.
    autoencoder_ : CellAutoencoder or None
        The autoencoder that decoded the cells (the given one, a loaded or a newly trained one);
        ``None`` when there was nothing to generate and none was given.
    sample_latents_ : ndarray of shape (`n_synthetic_`, n_latent)
        The latents the synthetic cells were decoded from, comparable with
        ``autoencoder_.transform(X)`` (for ``"copies"``, rows of it).
    n_synthetic_ : int
        Number of synthetic cells in the last output.
    synthetic_mask_ : ndarray of bool of shape (n_samples_resampled,)
        True for the synthetic rows of the last output (they follow the original rows).
    n_features_in_ : int
        Number of features (genes) in the input.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during ``fit_resample``; only when `X` has string feature names.

    See Also
    --------
    scaug.SCLDOverSampler : The same through SCLD's latent diffusion model.
    imblearn.over_sampling.SMOTE : Interpolation between neighbouring cells.

    Notes
    -----
    The output holds all original rows first, unchanged, then the synthetic rows class by
    class; the container and dtype of ``X`` are kept (sparse stays sparse, never densified
    whole). Integer counts give integer counts and continuous input continuous output. A count
    too large for an integer dtype of ``X`` widens the output's dtype, with a warning. Cells
    labelled ``-1`` are unlabelled (integer labels only): a new autoencoder learns from them,
    ``sampling_strategy`` ignores them and they are returned unchanged.

    Examples
    --------
    >>> from collections import Counter
    >>> from scaug.baselines import LatentOverSampler
    >>> from scaug.datasets import simulate
    >>> adata = simulate(n_cells=200, n_genes=30, n_types=3, n_markers=5, rare_sizes=(15,),
    ...                  random_state=0)
    >>> X, y = adata.X, adata.obs["cell_type"].to_numpy()

    Small settings keep this example fast; leave them out for real use.

    >>> small = dict(max_epochs=2, random_state=0,
    ...              autoencoder_params={"n_latent": 4, "hidden": (32,)})
    >>> sampler = LatentOverSampler(method="gaussian", sampling_strategy={"type_2": 60}, **small)
    >>> X_res, y_res = sampler.fit_resample(X, y)
    >>> sorted(Counter(y_res).items())
    [('type_0', 93), ('type_1', 92), ('type_2', 60)]
    >>> sampler.sample_latents_.shape
    (45, 4)

    Reuse the autoencoder of a fitted SCLD (or any fitted one), frozen:

    >>> copies = LatentOverSampler(method="copies", autoencoder=sampler.autoencoder_,
    ...                            sampling_strategy={"type_2": 60}, random_state=0)
    >>> X_res, y_res = copies.fit_resample(X, y)
    >>> copies.autoencoder_ is sampler.autoencoder_
    True
    """

    _parameter_constraints: dict = {
        **BaseOverSampler._parameter_constraints,
        "method": [StrOptions({"gaussian", "bootstrap", "copies"})],
        "autoencoder": [None, CellAutoencoder, str, os.PathLike]
        + ([FrozenEstimator] if FrozenEstimator is not None else []),
        "smoothing": [_utils.Interval(Real, 0, None, closed="left")],
        "max_epochs": [_utils.Interval(Integral, 1, None, closed="left"), None],
        "device": [str, torch.device],
        "verbose": ["boolean"],
        "autoencoder_params": [dict, None],
    }

    #: seeds drawn from random_state: the autoencoder's fit, the latents, the libraries, decoding
    _n_seeds = 4

    def __init__(self, *, sampling_strategy="auto", random_state=None, method="gaussian",
                 autoencoder=None, smoothing=4.0, max_epochs=None, device="auto", verbose=False,
                 autoencoder_params=None):
        super().__init__(sampling_strategy=sampling_strategy)
        self.random_state = random_state
        self.method = method
        self.autoencoder = autoencoder
        self.smoothing = smoothing
        self.max_epochs = max_epochs
        self.device = device
        self.verbose = verbose
        self.autoencoder_params = autoencoder_params

    def __sklearn_clone__(self):
        # a fitted autoencoder is a pretrained artefact: a clone reuses it instead of replacing it
        # by an unfitted copy that would then be trained on every fold
        params = self.get_params(deep=False)
        keep = _fitted(params["autoencoder"])
        return type(self)(**{k: v if (k == "autoencoder" and keep) else clone(v, safe=False)
                             for k, v in params.items()})

    # -- the autoencoder -----------------------------------------------------------------------
    def _new_autoencoder(self, seed) -> CellAutoencoder:
        params = {} if self.autoencoder_params is None else dict(self.autoencoder_params)
        repeated = sorted(set(params) & set(_OWN_PARAMS))
        if repeated:
            raise ValueError(f"autoencoder_params may not set {repeated}; set them on "
                             "LatentOverSampler.")
        valid = set(CellAutoencoder().get_params())
        unknown = sorted(set(params) - valid)
        if unknown:
            raise ValueError(f"autoencoder_params has keys {unknown} that are not CellAutoencoder "
                             f"parameters; valid ones: {sorted(valid - set(_OWN_PARAMS))}.")
        template = self.autoencoder
        if isinstance(template, CellAutoencoder):  # an unfitted template
            ae = clone(template).set_params(**params)
            epochs = ae.max_epochs
            if self.max_epochs is not None:
                epochs = self.max_epochs if epochs is None else min(epochs, self.max_epochs)
        else:
            ae, epochs = CellAutoencoder(**params), self.max_epochs
        ae = ae.set_params(max_epochs=epochs, device=self.device, random_state=seed,
                           verbose=self.verbose)
        try:  # scikit-learn skips nested validation inside fit_resample; scaug does not
            _utils.validate_params(ae)
        except ValueError as err:
            raise type(err)(f"autoencoder_params: {err}") from None
        return ae

    def _resolve_autoencoder(self, X, y, seed):
        """The fitted autoencoder to decode with; checked against X before any training."""
        ae = self.autoencoder
        if FrozenEstimator is not None and isinstance(ae, FrozenEstimator):
            ae = ae.estimator
            if not isinstance(ae, CellAutoencoder):
                raise TypeError("A FrozenEstimator given as autoencoder must wrap a "
                                f"CellAutoencoder; it wraps {type(ae).__name__}.")
            if not _fitted(ae):
                raise ValueError("The FrozenEstimator given as autoencoder wraps an unfitted "
                                 "CellAutoencoder; fit it first.")
        if isinstance(ae, str | os.PathLike):
            ae = CellAutoencoder.load(ae, device=self.device)
        names = getattr(self, "feature_names_in_", None)
        if not _fitted(ae):
            return self._new_autoencoder(seed).fit(X, feature_names=names)
        try:
            ae.check_genes(_utils.GeneSignature(X.shape, names))
        except ValueError as err:
            raise ValueError(f"{err} For X with other genes, adapt the autoencoder first "
                             "(CellAutoencoder.adapt, docs/transfer.md).") from err
        if ae.likelihood_ == "nb" and not _utils.is_count_matrix(X):
            raise ValueError("The given autoencoder models counts, but X is not integer counts "
                             "(log-normalised?); give raw counts or an autoencoder fitted on "
                             "data like X.")
        return ae

    # -- resampling ----------------------------------------------------------------------------
    def fit_resample(self, X, y, **params):
        """Resample ``X, y``: the original cells, then synthetic cells of the classes to grow.

        Parameters
        ----------
        X : {array-like, dataframe, sparse matrix} of shape (n_samples, n_features)
            Raw counts (integers) or continuous expression.
        y : array-like of shape (n_samples,)
            Class labels; ``-1`` marks unlabelled cells (integer labels only).

        Returns
        -------
        X_resampled, y_resampled
        """
        return super().fit_resample(X, y, **params)

    def _check_settings(self) -> None:
        if not _fitted(self.autoencoder) and not isinstance(self.autoencoder, str | os.PathLike) \
                and not (FrozenEstimator is not None and isinstance(self.autoencoder,
                                                                    FrozenEstimator)):
            self._new_autoencoder(0)  # autoencoder_params checked before any work

    def _synthesize(self, X, y, request, seeds):
        fit_seed, latent_seed, library_seed, decode_seed = seeds
        unlabelled = _utils.unlabelled_mask(np.asarray(y))
        n_generate = sum(request.values())
        template = self.autoencoder is None or (isinstance(self.autoencoder, CellAutoencoder)
                                                and not _fitted(self.autoencoder))
        self.autoencoder_ = None
        if n_generate or not template:  # nothing to generate: train no autoencoder for nothing
            self.autoencoder_ = self._resolve_autoencoder(X, y, fit_seed)
        if n_generate:
            Z_new, X_new = self._generate(X, y, unlabelled, request, latent_seed, library_seed,
                                          decode_seed)
        else:
            n_latent = 0 if self.autoencoder_ is None else int(self.autoencoder_.n_latent)
            Z_new, X_new = np.zeros((0, n_latent), np.float32), X[:0]
        self.sample_latents_ = Z_new
        return X_new

    def _generate(self, X, y, unlabelled, request, latent_seed, library_seed, decode_seed):
        ae = self.autoencoder_
        Z = ae.encode(_utils.check_matrix(X))  # genes checked in _resolve_autoencoder
        counts = ae.likelihood_ == "nb"
        classes = np.unique(y[~unlabelled])
        codes = np.full(len(y), -1, dtype=np.int64)
        codes[~unlabelled] = np.searchsorted(classes, y[~unlabelled])
        # standardised as SCLD standardises its latents, so the shrunk covariance means the same
        mean, scale = Z.mean(0), Z.std(0) + 1e-6
        Zs = (Z - mean) / scale
        labelled = ~unlabelled
        summaries = sampling.TypeSummaries.fit(
            Zs[labelled], codes[labelled], len(classes),
            library=_utils.row_sums(X)[labelled] if counts else None)
        rng = np.random.default_rng(latent_seed)
        if self.method == "bootstrap":
            shrunk, spread = smoothed_bootstrap(Zs, codes, float(self.smoothing))
        blocks, block_codes = [], []
        for label, k in request.items():
            code = int(np.searchsorted(classes, label))
            members = np.flatnonzero(codes == code)
            if self.method == "gaussian":
                cov = np.linalg.inv(summaries.precision[code])
                root = np.linalg.cholesky((cov + cov.T) / 2)
                z = (summaries.mean[code] + rng.standard_normal((k, Z.shape[1])) @ root.T) * scale + mean
            else:
                pick = members[rng.integers(len(members), size=k)]
                if self.method == "copies":  # the training latents themselves, bit for bit
                    z = Z[pick]
                else:
                    z = (shrunk[pick] + spread[pick] * rng.standard_normal((k, Z.shape[1]))) * scale + mean
            blocks.append(np.asarray(z, dtype=np.float32))
            block_codes.append(np.full(k, code))
        Z_new = np.concatenate(blocks)
        syn_codes = np.concatenate(block_codes)
        library = summaries.draw_library(syn_codes, np.random.default_rng(library_seed)) if counts else None
        X_new = sampling.decode(ae, Z_new, library, _utils.cpu_generator(decode_seed),
                                sparse=sp.issparse(X),
                                cells_per_batch=max(1, min(4096, 2**24 // X.shape[1])))
        return Z_new, X_new  # in X's dtype and format: the core's business


def _fitted(ae) -> bool:
    return isinstance(ae, CellAutoencoder) and hasattr(ae, "module_")
