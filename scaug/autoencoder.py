"""CellAutoencoder: the pretrained encoder/decoder of SCLD, usable and savable on its own."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from . import _utils
from .nn import AutoencoderModule
from .train import balanced_indices, run_epochs

#: counts are normalised to this many per cell before log1p, for the encoder's input
TARGET_SUM = 1e4


def _default_epochs(n_obs: int, batch_size: int) -> int:
    # about 3000 optimiser steps, between 20 and 200 passes over the data
    steps_per_epoch = max(1, int(np.ceil(n_obs / batch_size)))
    return int(np.clip(np.ceil(3000 / steps_per_epoch), 20, 200))


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
        non-negative integer.
    dispersion : {"gene", "gene-cell"}, default="gene"
        Noise of the likelihood: one NB dispersion (or standard deviation) per gene (the scVI
        default), or a per-cell correction of it predicted by the decoder, which lets each type
        have its own noise. ``docs/fidelity.md`` measures both.
    max_epochs : int or None, default=None
        Training passes over the data; ``None`` picks about 3000 optimiser steps (20 to 200 epochs).
    batch_size : int, default=128
    learning_rate : float, default=1e-3
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
    device : {"auto", "cpu", "cuda", "cuda:N"} or torch.device, default="auto"
    random_state : int, RandomState instance or None, default=None
    verbose : bool, default=True
        Show a progress bar.

    Attributes
    ----------
    module_ : scaug.nn.AutoencoderModule
    likelihood_ : str
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` had string column names (a DataFrame).
    history_ : list of float
        Mean training loss per epoch.

    Examples
    --------
    >>> from scaug.autoencoder import CellAutoencoder
    >>> from scaug.datasets import simulate
    >>> adata = simulate(n_cells=200, n_genes=50, random_state=0)
    >>> ae = CellAutoencoder(n_latent=8, max_epochs=2, verbose=False, random_state=0)
    >>> ae.fit(adata.X).transform(adata.X).shape
    (200, 8)
    """

    def __init__(self, *, n_latent=16, hidden=(256, 128), likelihood="auto", dispersion="gene",
                 max_epochs=None, batch_size=128, learning_rate=1e-3, latent_noise=0.1,
                 class_balance=0.5, device="auto", random_state=None, verbose=True):
        self.n_latent = n_latent
        self.hidden = hidden
        self.likelihood = likelihood
        self.dispersion = dispersion
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.latent_noise = latent_noise
        self.class_balance = class_balance
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # -- checks --------------------------------------------------------------------------------
    def _check_params(self):
        if not (isinstance(self.n_latent, int | np.integer) and self.n_latent >= 1):
            raise ValueError(f"n_latent must be a positive int; got {self.n_latent!r}.")
        if self.likelihood not in ("auto", "nb", "gaussian"):
            raise ValueError(f"likelihood must be 'auto', 'nb' or 'gaussian'; got {self.likelihood!r}.")
        if self.dispersion not in ("gene", "gene-cell"):
            raise ValueError(f"dispersion must be 'gene' or 'gene-cell'; got {self.dispersion!r}.")
        if self.max_epochs is not None and not (
            isinstance(self.max_epochs, int | np.integer) and self.max_epochs >= 1
        ):
            raise ValueError(f"max_epochs must be None or a positive int; got {self.max_epochs!r}.")
        if not (isinstance(self.batch_size, int | np.integer) and self.batch_size >= 1):
            raise ValueError(f"batch_size must be a positive int; got {self.batch_size!r}.")
        return _utils.resolve_device(self.device)

    # -- the input transform -------------------------------------------------------------------
    def _encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.likelihood_ == "nb":
            lib = x.sum(1, keepdim=True).clamp_min(1.0)
            return torch.log1p(x / lib * TARGET_SUM)
        return (x - self._gene_mean) / self._gene_scale

    def _fit_stats(self, X):
        if self.likelihood_ == "gaussian":
            mean = np.asarray(X.mean(axis=0), dtype=np.float64).ravel()
            sq = X.multiply(X).mean(axis=0) if sp.issparse(X) else (X.astype(np.float64) ** 2).mean(0)
            var = np.asarray(sq, dtype=np.float64).ravel() - mean**2
            scale = np.sqrt(np.maximum(var, 0))
            self.gene_mean_ = mean.astype(np.float32)
            self.gene_scale_ = np.where(scale > 1e-8, scale, 1.0).astype(np.float32)
            self.nonnegative_ = bool((X.data if sp.issparse(X) else X).min() >= 0)

    def _set_runtime(self, device):
        self.device_ = device
        self.module_.to(device)
        if self.likelihood_ == "gaussian":
            self._gene_mean = torch.as_tensor(self.gene_mean_, device=device)
            self._gene_scale = torch.as_tensor(self.gene_scale_, device=device)

    # -- fit / transform -----------------------------------------------------------------------
    def fit(self, X, y=None):
        """Train on cells ``X`` (cells x genes, dense or sparse).

        Labels are optional and never enter the model: when ``y`` is given, minibatches are
        drawn with class probabilities ~ ``n_c ** class_balance`` so that rare types, which a
        plain pass would barely show the decoder, are reconstructed well.
        """
        device = self._check_params()
        names = _utils.feature_names(X)
        X = _utils.check_matrix(X, min_rows=2)
        counts = _utils.is_count_matrix(X)
        if self.likelihood == "nb" and not counts:
            raise ValueError(
                "likelihood='nb' needs raw counts (non-negative integers) in X; X holds other "
                "values. Pass counts, or use likelihood='gaussian' for continuous expression."
            )
        self.likelihood_ = ("nb" if counts else "gaussian") if self.likelihood == "auto" \
            else self.likelihood
        self.n_features_in_ = X.shape[1]
        if names is not None:
            self.feature_names_in_ = names
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self._fit_stats(X)
        seed = _utils.seed_from(self.random_state)
        rng = np.random.default_rng(seed)
        draw = None
        if y is not None:
            codes = np.unique(_utils.check_labels(y, X.shape[0]), return_inverse=True)[1]
            draw = lambda size: balanced_indices(codes, size, rng, self.class_balance)  # noqa: E731
        n_epochs = self.max_epochs or _default_epochs(X.shape[0], self.batch_size)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
                _utils.flush_denormal():
            torch.manual_seed(seed)
            self.module_ = AutoencoderModule(X.shape[1], int(self.n_latent), tuple(self.hidden),
                                             self.likelihood_, self.dispersion)
            self._set_runtime(device)
            self.module_.train()
            self.history_ = run_epochs(
                lambda idx: self._loss(X, idx), self.module_.parameters(), n_obs=X.shape[0],
                n_epochs=n_epochs, batch_size=int(self.batch_size), lr=self.learning_rate,
                rng=rng, desc="autoencoder", verbose=self.verbose, draw=draw,
            )
        self.module_.eval()
        return self

    def _loss(self, X, idx):
        x = torch.as_tensor(_utils.dense_rows(X, idx), device=self.device_)
        z = self.module_.encode(self._encoder_input(x))
        z_noisy = z + self.latent_noise * torch.randn_like(z)
        if self.likelihood_ == "nb":
            target, lib = x, x.sum(1)
        else:
            target, lib = (x - self._gene_mean) / self._gene_scale, None
        nll = -self.module_.log_likelihood(target, z_noisy, lib)
        prior = 0.5 * (z**2).sum(-1)
        return (nll + prior).mean() / x.shape[1]

    def check_genes(self, X) -> None:
        """Raise a clear error if ``X``'s genes differ from those the autoencoder was trained on."""
        check_is_fitted(self, "module_")
        shape = getattr(X, "shape", None) or np.shape(X)
        if len(shape) != 2:
            raise ValueError(f"X must be a 2-D cells x genes matrix; got shape {tuple(shape)}.")
        _utils.check_genes(shape[1], _utils.feature_names(X), expected_n=self.n_features_in_,
                           expected_names=getattr(self, "feature_names_in_", None),
                           what="this autoencoder")

    @torch.no_grad()
    def transform(self, X, batch_size: int = 4096) -> np.ndarray:
        """Latent representation of the cells ``X``, computed batch by batch."""
        check_is_fitted(self, "module_")
        self.check_genes(X)
        X = _utils.check_matrix(X)
        out = np.empty((X.shape[0], self.module_.encoder[-1].out_features), dtype=np.float32)
        for idx in _utils.iter_batches(X.shape[0], batch_size):
            x = torch.as_tensor(_utils.dense_rows(X, idx), device=self.device_)
            out[idx] = self.module_.encode(self._encoder_input(x)).cpu().numpy()
        return out

    @torch.no_grad()
    def generate(self, Z, library=None, *, generator: torch.Generator) -> np.ndarray:
        """Expression drawn from the decoder's likelihood at latents ``Z``.

        ``library`` (total counts per cell) is required for the NB likelihood. Returns counts for
        ``"nb"`` and values in the input's scale for ``"gaussian"`` (clipped at 0 when the
        training data were non-negative, as log-normalised data are).
        """
        check_is_fitted(self, "module_")
        z = torch.as_tensor(np.asarray(Z, dtype=np.float32), device=self.device_)
        lib = None if library is None else torch.as_tensor(
            np.asarray(library, dtype=np.float32), device=self.device_)
        x = self.module_.sample_expression(z, lib, generator=generator).cpu().numpy()
        if self.likelihood_ == "gaussian":
            x = x * self.gene_scale_ + self.gene_mean_
            if self.nonnegative_:
                x = np.maximum(x, 0)
        return x.astype(np.float32)

    # -- persistence ---------------------------------------------------------------------------
    def _state(self) -> dict:
        check_is_fitted(self, "module_")
        names = getattr(self, "feature_names_in_", None)
        state = {
            "params": {k: (list(v) if isinstance(v, tuple) else v)
                       for k, v in self.get_params(deep=False).items()
                       if k not in ("device", "random_state")},
            "likelihood": self.likelihood_,
            "n_features_in": int(self.n_features_in_),
            "feature_names_in": None if names is None else _utils.to_plain_list(names),
            "module": {k: v.cpu() for k, v in self.module_.state_dict().items()},
            "history": list(self.history_),
        }
        if self.likelihood_ == "gaussian":
            state.update(gene_mean=torch.from_numpy(self.gene_mean_),
                         gene_scale=torch.from_numpy(self.gene_scale_),
                         nonnegative=self.nonnegative_)
        return state

    @classmethod
    def _from_state(cls, state: dict, device="auto") -> CellAutoencoder:
        params = dict(state["params"])
        params["hidden"] = tuple(params["hidden"])
        # files written before the option existed hold a gene-wise dispersion
        params.setdefault("dispersion", "gene")
        ae = cls(**params, device=device)
        ae.likelihood_ = state["likelihood"]
        ae.n_features_in_ = state["n_features_in"]
        if state["feature_names_in"] is not None:
            ae.feature_names_in_ = np.asarray(state["feature_names_in"], dtype=object)
        if ae.likelihood_ == "gaussian":
            ae.gene_mean_ = state["gene_mean"].numpy()
            ae.gene_scale_ = state["gene_scale"].numpy()
            ae.nonnegative_ = state["nonnegative"]
        ae.module_ = AutoencoderModule(ae.n_features_in_, int(ae.n_latent), ae.hidden, ae.likelihood_,
                                       ae.dispersion)
        ae.module_.load_state_dict(state["module"])
        ae.module_.eval()
        ae.history_ = state["history"]
        ae._set_runtime(_utils.resolve_device(device))
        return ae

    def save(self, path, overwrite: bool = False) -> None:
        """Write the fitted autoencoder to one file (atomically)."""
        state = self._state()
        state.update(format_version=_utils.FORMAT_VERSION, **{"class": "CellAutoencoder"})
        _utils.atomic_save(state, path, overwrite=overwrite)

    @classmethod
    def load(cls, path, device="auto") -> CellAutoencoder:
        """Read an autoencoder written by :meth:`save`."""
        return cls._from_state(_utils.checked_load(path, expected_class="CellAutoencoder"), device)

    def __getstate__(self):
        # runtime tensors are rebuilt on unpickling (they may live on a GPU)
        state = self.__dict__.copy()
        state.pop("_gene_mean", None)
        state.pop("_gene_scale", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if "module_" in state:
            self._set_runtime(self.device_)
