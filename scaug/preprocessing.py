"""Count preprocessing as scikit-learn transformers.

The transformers here accept dense arrays and scipy sparse matrices with cells in rows and genes in
columns, keep sparse input sparse, and give the same numbers as the matching scanpy functions.
"""

from numbers import Real

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin, _fit_context
from sklearn.utils.validation import FLOAT_DTYPES, check_is_fitted, check_non_negative

from . import _utils

try:
    from sklearn.utils.validation import validate_data
except ImportError:  # scikit-learn < 1.6

    def validate_data(_estimator, /, X="no_validation", y="no_validation", **check_params):
        """Call the pre-1.6 private ``_validate_data`` method under the 1.6 public name."""
        return _estimator._validate_data(X, y, **check_params)


__all__ = ["NormalizeLog1p"]


class NormalizeLog1p(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Scale each cell to a fixed total count, then apply ``log1p``.

    Each row (cell) of ``X`` is divided by its total and multiplied by ``target_sum``, and the
    result is transformed with :func:`numpy.log1p`. This is the usual ``scanpy.pp.normalize_total``
    followed by ``scanpy.pp.log1p`` in one scikit-learn transformer, so it can sit at the head of a
    :class:`~sklearn.pipeline.Pipeline`. Rows whose total is zero stay zero, as in scanpy.

    Sparse input stays sparse: CSR and CSC matrices keep their format, other sparse formats are
    converted to CSR. Float32 input stays float32; other input is converted to float64.

    Parameters
    ----------
    target_sum : float or None, default=1e4
        Total count of every row after scaling. If None, the median of the non-zero row totals of
        the data seen in :meth:`fit` is used, as ``scanpy.pp.normalize_total`` does with
        ``target_sum=None``.

    Attributes
    ----------
    target_sum_ : float
        The total each row is scaled to: ``target_sum``, or the median learned in :meth:`fit`.

    n_features_in_ : int
        Number of features (genes) seen during :meth:`fit`.

    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during :meth:`fit`. Defined only when `X` has feature names that
        are all strings.

    See Also
    --------
    scanpy.pp.normalize_total : Normalise the counts of an AnnData in place.
    scanpy.pp.log1p : Logarithmise an AnnData in place.

    Examples
    --------
    >>> import numpy as np
    >>> from scaug.preprocessing import NormalizeLog1p
    >>> X = np.array([[1.0, 3.0], [0.0, 2.0], [0.0, 0.0]])
    >>> NormalizeLog1p(target_sum=4).fit_transform(X).round(3)
    array([[0.693, 1.386],
           [0.   , 1.609],
           [0.   , 0.   ]])
    """

    _parameter_constraints: dict = {
        "target_sum": [_utils.Interval(Real, 0, None, closed="neither"), None],
    }

    def __init__(self, target_sum=1e4):
        self.target_sum = target_sum

    def _check_X(self, X, *, reset):
        X = validate_data(
            self,
            X,
            accept_sparse=("csr", "csc"),
            dtype=FLOAT_DTYPES,
            copy=True,
            reset=reset,
        )
        check_non_negative(X, f"{type(self).__name__} (X must hold non-negative counts)")
        return X

    @staticmethod
    def _row_totals(X):
        return np.asarray(X.sum(axis=1, dtype=np.float64)).ravel()

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Learn the number of features and, if ``target_sum`` is None, the median row total.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Non-negative counts, cells in rows and genes in columns.

        y : None
            Ignored.

        Returns
        -------
        self : object
            The fitted transformer.
        """
        X = self._check_X(X, reset=True)
        if self.target_sum is None:
            totals = self._row_totals(X)
            totals = totals[totals > 0]
            if totals.size == 0:
                raise ValueError(
                    "NormalizeLog1p(target_sum=None) cannot learn a target sum: every row of X "
                    "has a total of zero. Pass rows with counts, or set target_sum to a positive "
                    "number."
                )
            self.target_sum_ = float(np.median(totals))
        else:
            self.target_sum_ = float(self.target_sum)
        return self

    def transform(self, X):
        """Scale each row to ``target_sum_`` total counts and apply ``log1p``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Non-negative counts, cells in rows and genes in columns. It is not modified.

        Returns
        -------
        X_new : {ndarray, sparse matrix} of shape (n_samples, n_features)
            Log-normalised values; sparse (CSR or CSC as given) if `X` is sparse, float32 if `X`
            is float32 and float64 otherwise.
        """
        check_is_fitted(self)
        X = self._check_X(X, reset=False)
        totals = self._row_totals(X)
        scale = np.zeros_like(totals)
        np.divide(self.target_sum_, totals, out=scale, where=totals > 0)
        scale = scale.astype(X.dtype, copy=False)
        if sp.issparse(X):
            # X is a private copy (validate_data(copy=True)); scale its stored values in place.
            if X.format == "csr":
                X.data *= np.repeat(scale, np.diff(X.indptr))
            else:  # csc
                X.data *= scale[X.indices]
            np.log1p(X.data, out=X.data)
        else:
            X *= scale[:, np.newaxis]
            np.log1p(X, out=X)
        return X

    def _more_tags(self):  # scikit-learn < 1.6
        return {"requires_positive_X": True, "preserves_dtype": [np.float64, np.float32]}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.input_tags.positive_only = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
