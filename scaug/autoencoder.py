"""CellAutoencoder: the pretrained encoder/decoder of SCLD, usable and savable on its own."""

from __future__ import annotations

import copy
from numbers import Real

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from . import _utils
from .nn import AutoencoderModule
from .nn.autoencoder import TARGET_SUM  # noqa: F401  (re-exported: the encoder's input scale)
from .train import AutoencoderPlan, BalancedDraws, MinibatchData, OnDiskCells, fit_plan, process_rank


def _gene_moments(X):
    """Per-gene mean and scale (1 where a gene is constant) of continuous input, and whether it
    is non-negative; computed without densifying sparse input."""
    mean = np.asarray(X.mean(axis=0), dtype=np.float64).ravel()
    sq = X.multiply(X).mean(axis=0) if sp.issparse(X) else (X.astype(np.float64) ** 2).mean(0)
    scale = np.sqrt(np.maximum(np.asarray(sq, dtype=np.float64).ravel() - mean**2, 0))
    scale = np.where(scale > 1e-8, scale, 1.0)
    values = X.data if sp.issparse(X) else X
    return mean.astype(np.float32), scale.astype(np.float32), bool(values.min() >= 0)


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
        non-negative integer and ``"gaussian"`` for clearly continuous data; data that is almost
        counts (a few negative or non-integer entries among integers) is refused with the reason,
        rather than silently modelled as continuous.
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

    _parameter_constraints: dict = {
        "n_latent": [_utils.PositiveInt()],
        "hidden": [_utils.PositiveIntTuple()],
        "likelihood": [StrOptions({"auto", "nb", "gaussian"})],
        "dispersion": [StrOptions({"gene", "gene-cell"})],
        "max_epochs": [_utils.PositiveInt(), None],
        "batch_size": [_utils.PositiveInt()],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "latent_noise": [Interval(Real, 0, None, closed="left")],
        "class_balance": [Interval(Real, 0, 1, closed="both")],
        "trainer_kwargs": [dict, None],
        "cpu_threads": [_utils.PositiveInt(), None],
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "verbose": ["boolean"],
    }

    def __init__(self, *, n_latent=16, hidden=(256, 128), likelihood="auto", dispersion="gene",
                 max_epochs=None, batch_size=128, learning_rate=1e-3, latent_noise=0.1,
                 class_balance=0.5, trainer_kwargs=None, cpu_threads=1, device="auto", random_state=None,
                 verbose=True):
        self.n_latent = n_latent
        self.hidden = hidden
        self.likelihood = likelihood
        self.dispersion = dispersion
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.latent_noise = latent_noise
        self.class_balance = class_balance
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
    def fit(self, X, y=None, *, feature_names=None):
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

        Returns
        -------
        self : CellAutoencoder
            Fitted; a fit that fails or is interrupted leaves the estimator as it was.
        """
        device = _utils.resolve_device(self.device)
        _utils.check_trainer_kwargs(self.trainer_kwargs)
        on_disk = isinstance(X, OnDiskCells)
        names = _utils.resolve_feature_names(X.signature() if on_disk else X, feature_names)
        if not on_disk:
            X = _utils.check_matrix(X, min_rows=2)
        likelihood = _utils.decide_likelihood(X.sample() if on_disk else X, self.likelihood)
        codes = None
        if y is not None:
            codes = np.unique(_utils.check_labels(y, X.shape[0]).astype(str),
                              return_inverse=True)[1]
        seed = _utils.seed_from(self.random_state)
        n_epochs = self.max_epochs or _default_epochs(X.shape[0], self.batch_size)
        if on_disk:
            data = X.minibatches(batch_size=int(self.batch_size), seed=seed, codes=codes,
                                 class_balance=self.class_balance)
        else:
            data = MinibatchData([X], batch_size=int(self.batch_size), seed=seed,
                                 draw=None if codes is None else BalancedDraws(codes, self.class_balance))
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
            plan = AutoencoderPlan(module, latent_noise=self.latent_noise,
                                   learning_rate=self.learning_rate, n_epochs=n_epochs, seed=seed)
            fit_plan(plan, data, device=device, trainer_kwargs=self.trainer_kwargs,
                     max_epochs=n_epochs, desc="autoencoder", verbose=self.verbose)
        # all or nothing: the fitted state is set only once training has finished
        _utils.drop_fitted_state(self)
        self.module_ = module.eval()
        self.likelihood_ = likelihood
        self.nonnegative_ = nonnegative
        self.n_features_in_ = X.shape[1]
        if names is not None:
            self.feature_names_in_ = names
        self.history_ = list(plan.history)
        self._set_runtime(device)
        return self

    def check_genes(self, X) -> None:
        """Raise a clear error if ``X``'s genes differ from those the autoencoder was trained on."""
        check_is_fitted(self, "module_")
        shape = getattr(X, "shape", None) or np.shape(X)
        if len(shape) != 2:
            raise ValueError(f"X must be a 2-D cells x genes matrix; got shape {tuple(shape)}.")
        _utils.check_genes(shape[1], _utils.feature_names(X), expected_n=self.n_features_in_,
                           expected_names=getattr(self, "feature_names_in_", None),
                           what="this autoencoder")

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
        for idx in _utils.iter_batches(X.shape[0], batch_size):
            x = torch.as_tensor(_utils.dense_rows(X, idx), device=self.device_)
            out[idx] = self.module_.encode(self.module_.transform_input(x)).cpu().numpy()
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
        if self.likelihood_ == "gaussian" and self.nonnegative_:
            x = np.maximum(x, 0)
        return x.astype(np.float32)

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
        return cls._from_state(_utils.checked_load(path, expected_class="CellAutoencoder"), device)

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
