"""The resampling core under every front end: `SCLDOverSampler`, `LatentOverSampler`,
``scaug.tl.augment`` and ``scaug augment``.

As imbalanced-learn's ``BaseSMOTE`` is for its samplers, :class:`CellOverSampler` owns
everything but how cells are drawn:

- validation, before any work: every parameter, nested ones included (scikit-learn skips those
  inside ``fit_resample``; scaug does not), ``X`` and ``y``, the request;
- the request per class, counted on the labelled cells only (``-1`` marks an unlabelled cell);
- the seeds, drawn from ``random_state`` in a fixed number per sampler, so a seed keeps giving
  the same cells;
- the synthetic rows in ``X``'s dtype and sparse format, stacked after the original rows, and
  ``synthetic_mask_`` / ``n_synthetic_``.

imbalanced-learn's ``BaseOverSampler.fit_resample`` does the container round trip (DataFrame,
Series, list). A sampler implements ``_synthesize(X, y, request, seeds, **params)``: the
synthetic rows, class by class in the order of ``request``.

Two ways in: :meth:`CellOverSampler.fit_resample` for arrays (scikit-learn's conventions), and
:meth:`CellOverSampler.resample` for what scaug's AnnData and shell layers hand over (string
labels beside ``-1``, gene names of an unnamed matrix).
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral

import numpy as np
import scipy.sparse as sp
from imblearn.over_sampling.base import BaseOverSampler
from imblearn.utils import check_sampling_strategy
from sklearn.utils import check_array, check_random_state

from . import _utils, sampling


def check_resample_input(sampler, X, y, *, mixed_labels: bool = False) -> None:
    """What imbalanced-learn would only fail on deep inside (or not at all), refused up front.

    The sampler's own parameters are checked whatever scikit-learn's nested-validation setting;
    ``X`` and ``y`` must be given, and numeric ``X`` must fit float32 (what the models compute
    in); missing or continuous labels, labels mixing strings with -1 (unless ``mixed_labels``,
    for :meth:`CellOverSampler.resample`) and a ``sampling_strategy`` that is a bool, or a
    callable returning anything but a mapping, are refused with what to do.
    """
    _utils.validate_params(sampler)
    for name, value in (("X", X), ("y", y)):
        if value is None:
            raise ValueError(f"{name} is None; fit_resample needs the cells X and their class "
                             "labels y (one per cell).")
    labels = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y)
    if labels.ndim == 0:
        raise ValueError(f"y must be a 1-D array of class labels, one per cell; got the scalar "
                         f"{labels!r}.")
    unlabelled = np.zeros(labels.shape[0], dtype=bool)
    if labels.ndim == 1:  # missing or continuous labels, and strings mixed with numbers
        labels = _utils.check_labels(labels, len(labels))
        unlabelled = _utils.unlabelled_mask(labels)
        _utils.check_sortable(labels[~unlabelled])
    if not mixed_labels and labels.dtype == object and unlabelled.any() and any(
            isinstance(v, str) for v in labels):
        raise ValueError("y mixes string class labels with -1 for unlabelled cells. Encode "
                         "the labelled cells' classes as integers (LabelEncoder) and keep -1 "
                         "for the unlabelled ones, as scikit-learn's semi-supervised "
                         "estimators require.")
    _check_strategy(sampler.sampling_strategy, labels, labels[~unlabelled])
    if sp.issparse(X):
        if X.dtype.kind in "fiu":
            _utils.check_float32_range(X.data, "X")
    elif not hasattr(X, "dtypes"):  # a DataFrame's columns are checked by imbalanced-learn
        values = np.asarray(X)
        if values.dtype.kind in "fiu":
            _utils.check_float32_range(values, "X")


def _check_strategy(strategy, labels, labelled) -> None:
    if isinstance(strategy, bool | np.bool_):
        raise TypeError(f"sampling_strategy={strategy!r} is a bool; give a float ratio (binary "
                        "classes), 'auto', 'minority', 'not majority', 'all', a dict {class: "
                        "cells after resampling} or a callable returning one.")
    if callable(strategy):
        request = strategy(labels)
        if not isinstance(request, Mapping):
            raise TypeError(f"sampling_strategy is a callable that returned a "
                            f"{type(request).__name__}; it must return a dict "
                            "{class: number of cells after resampling}.")
    if isinstance(strategy, Mapping):  # which class is wrong, and how, unlike imbalanced-learn
        classes, sizes = np.unique(labelled, return_counts=True)
        have = {_utils.plain_label(c): int(n) for c, n in zip(classes, sizes, strict=True)}
        for label, n in strategy.items():
            if _utils.plain_label(label) not in have:
                raise ValueError(f"Unknown class {label!r} in sampling_strategy; the labelled "
                                 f"classes are {sorted(have, key=str)}.")
            count = have[_utils.plain_label(label)]
            if isinstance(n, Integral) and not isinstance(n, bool) and n < count:
                raise ValueError(f"sampling_strategy asks for {n} cells of {label!r} after "
                                 f"resampling, but it has {count} already; give an int >= "
                                 f"{count} (the count after resampling, not the number to add).")
    try:  # imbalanced-learn's own check, whose messages do not always name the parameter
        check_sampling_strategy(strategy, labelled, "over-sampling")
    except ValueError as err:
        if "sampling_strategy" in str(err):
            raise
        raise ValueError(f"sampling_strategy={strategy!r}: {err}") from None


def labelled_request(sampler, y) -> dict:
    """``{class: cells to generate}`` of an over-sampler, -1 (unlabelled) being no class.

    Sets ``sampler.sampling_strategy_`` from the labelled cells only when some are unlabelled,
    and refuses a strategy that asks for part of a cell (never truncated).
    """
    unlabelled = _utils.unlabelled_mask(np.asarray(y))
    if unlabelled.any():
        sampler.sampling_strategy_ = check_sampling_strategy(
            sampler.sampling_strategy, y[~unlabelled], sampler._sampling_type)
    fractional = {c: n for c, n in sampler.sampling_strategy_.items() if not float(n).is_integer()}
    if fractional:
        raise ValueError(f"sampling_strategy asks for a number of cells that is not whole "
                         f"({fractional} to generate); give whole numbers of cells per class.")
    return {c: int(n) for c, n in sampler.sampling_strategy_.items() if n > 0}


def rows_like(X_new, X):
    """Synthetic rows in ``X``'s sparse format (or dense) and dtype; an integer dtype too
    narrow for the synthetic counts is widened, with a warning, never wrapped around."""
    dtype = X.dtype
    if np.issubdtype(dtype, np.integer) and X_new.shape[0]:
        dtype = sampling.output_dtype(dtype, X_new.max())
    if sp.issparse(X):
        return sp.csr_matrix(X_new, dtype=dtype).asformat(X.format)
    return np.asarray(X_new.toarray() if sp.issparse(X_new) else X_new, dtype=dtype)


class CellOverSampler(BaseOverSampler):
    """The resampling core of scaug's over-samplers (see the module's docstring).

    Not used directly: :class:`~scaug.SCLDOverSampler` and :class:`~scaug.LatentOverSampler`
    subclass it. A subclass sets ``_n_seeds`` (how many seeds it draws from ``random_state``,
    the first for fitting) and implements ``_synthesize``; ``_check_settings`` checks what it
    builds from nested settings, before any work.
    """

    _n_seeds = 2

    def _check_settings(self) -> None:
        """Check the settings of what the sampler builds (a nested estimator); no work."""

    def _synthesize(self, X, y, request: dict, seeds: list, **params):  # pragma: no cover
        raise NotImplementedError

    def fit_resample(self, X, y, **params):
        """Resample ``X, y``: the original cells, then synthetic cells of the classes to grow.

        Parameters
        ----------
        X : {array-like, dataframe, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Class labels; ``-1`` marks unlabelled cells (integer labels only).
        **params
            Passed to the sampler (``conditions`` for :class:`~scaug.SCLDOverSampler`).

        Returns
        -------
        X_resampled, y_resampled
            In the containers of ``X`` and ``y``.
        """
        check_resample_input(self, X, y)
        self._check_settings()
        return super().fit_resample(X, y, **params)

    def resample(self, X, y, *, feature_names=None, **params):
        """:meth:`fit_resample` for scaug's AnnData and shell layers.

        ``X`` is a cells x genes ndarray or sparse matrix, taken as it is (no container round
        trip); ``y`` holds one label per cell, ``-1`` for an unlabelled one, and may mix string
        labels with ``-1`` (scikit-learn's checks cannot sort those); ``feature_names`` are the
        genes of ``X`` (an AnnData's ``var_names``), so that a new model remembers them and a
        reused one refuses other genes. The output is the same as :meth:`fit_resample`'s.
        """
        check_resample_input(self, X, y, mixed_labels=True)
        self._check_settings()
        X = check_array(X, accept_sparse=["csr", "csc"], dtype=None)
        y = np.asarray(y)
        if len(y) != X.shape[0]:
            raise ValueError(f"y has {len(y)} labels for the {X.shape[0]} cells of X.")
        self.n_features_in_ = X.shape[1]
        if hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        if feature_names is not None:
            names = np.asarray(feature_names, dtype=object)
            if names.shape != (X.shape[1],):
                raise ValueError(f"feature_names must name the {X.shape[1]} genes of X; got "
                                 f"{names.shape[0]} names.")
            self.feature_names_in_ = names
        labelled = y[~_utils.unlabelled_mask(y)]
        self.sampling_strategy_ = check_sampling_strategy(self.sampling_strategy, labelled,
                                                          self._sampling_type)
        return self._fit_resample(X, y, **params)

    def _fit_resample(self, X, y, **params):
        request = labelled_request(self, y)
        rng = check_random_state(self.random_state)
        seeds = [int(s) for s in rng.randint(0, 2**31 - 1, size=self._n_seeds)]
        n_generate = sum(request.values())
        X_new = rows_like(self._synthesize(X, y, request, seeds, **params), X)
        if X_new.shape[0] != n_generate:
            raise RuntimeError(f"{type(self).__name__} drew {X_new.shape[0]} cells for a request "
                               f"of {n_generate}.")
        y_new = np.concatenate([np.full(n, c, dtype=y.dtype) for c, n in request.items()]
                               or [y[:0]])
        if sp.issparse(X):
            X_res = sp.vstack([X, X_new], format=X.format, dtype=X_new.dtype)
        else:
            X_res = np.concatenate([X, X_new])
        self.n_synthetic_ = int(n_generate)
        self.synthetic_mask_ = np.r_[np.zeros(len(y), dtype=bool), np.ones(n_generate, dtype=bool)]
        return X_res, np.concatenate([y, y_new])
