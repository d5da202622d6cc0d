"""Fidelity metrics: how closely synthetic cells resemble real cells.

Every function takes ``real`` and ``synthetic`` as cells x genes matrices (numpy arrays, anything
``numpy.asarray`` accepts, or scipy sparse matrices) with the same genes in the same order. Sparse
input stays sparse: per-gene and per-cell statistics are computed without densifying.

Which values to pass
--------------------
- Embedding-based metrics (:func:`c2st_auc`, :func:`mmd_rbf`, :func:`energy_distance`,
  :func:`knn_precision_recall`, :func:`distance_to_closest_record`, :func:`dcr_ratio`) work in a
  PCA space; pass log-normalised expression (for example :func:`normalize_log1p` of counts).
  The distribution metrics compare equal-sized random subsets of both sides and, unless a
  ``reference`` of independent real cells (such as the training cells) is given, fit the PCA on
  both subsets pooled: a PCA fitted on ``real`` alone overfits its noise and makes even a second
  sample of the same population look different (see :func:`pca_embed`).
- :func:`library_size_distance` needs raw counts; :func:`zero_fraction_error` gives the same
  answer on counts and on log-normalised values.
- :func:`evaluate` runs them all and, with ``counts=True``, does the normalisation itself.
- :func:`marker_agreement` (and :func:`log_fold_change`) compare a type with the rest of the
  cells: held-out real cells of the type, real cells of the other types and synthetic cells of
  the type, as counts (``counts=True``, normalised as scanpy does) or log-normalised values.

Ideal values: ``c2st_auc`` 0.5; ``mmd_rbf``, ``energy_distance``, ``zero_fraction_error`` and
``library_size_distance`` 0; gene correlations, precision and recall 1; ``dcr_ratio`` about 1
(much lower means synthetic cells are copies of training cells); every value of
:func:`marker_agreement` 1.

Checks and degenerate input
---------------------------
Arguments are checked with scikit-learn's ``validate_params``: a bad type or value raises
:class:`~sklearn.utils._param_validation.InvalidParameterError` (a ``ValueError``) naming the
parameter. Data checks raise ``ValueError`` naming the argument, what was found and what is
expected. Every metric is defined on every input it accepts; where the answer is degenerate it
says so with a :class:`DegenerateInputWarning`:

- *Empty input, one cell, no genes*: refused (every sample needs at least 2 cells, 1 for the
  ``query`` of :func:`distance_to_closest_record` and the ``synthetic``/``holdout`` of
  :func:`dcr_ratio`). An AnnData is refused with a pointer to ``adata.X``.
- *Tiny samples* (fewer than 10 cells per side after balancing): the embedding metrics warn that
  the score is very noisy; :func:`evaluate` lowers ``k`` to what the samples allow.
- *Identical samples*: :func:`c2st_auc` scores 0.5. All copies of a cell found in both samples
  are kept in one cross-validation fold, so no cell is scored by a classifier that was trained
  on its copy from the other sample; without that, a sample against a copy of itself scored
  about 0.03. The U-statistics :func:`mmd_rbf` and :func:`energy_distance` give a value a little
  below 0, precision and recall 1, gene correlations 1, ``zero_fraction_error`` and
  ``library_size_distance`` 0.
- *All cells identical* (both samples pooled): :func:`c2st_auc` returns 0.5, the other
  embedding metrics their ideal value, with a warning. A ``reference`` or ``train`` whose cells
  are all identical is refused: a PCA fitted on it has no direction.
- *Constant statistics*: a gene correlation is undefined when the per-gene statistic is the same
  for every gene in one sample (one gene; a synthetic sample of one repeated cell has variance
  0 in every gene): it returns NaN with a warning.
- *All-zero genes*: genes that are zero in every cell of both samples agree trivially; when they
  are more than half of the genes, the gene statistics warn that they pull correlations toward 1
  and ``zero_fraction_error`` toward 0 (select expressed genes first).
- *Counts or not*: ``evaluate(counts=True)`` refuses input that is not non-negative integers
  (log-normalised data would be normalised twice); ``evaluate(counts=False)`` warns when the
  input looks like raw counts; :func:`library_size_distance` warns on non-integer input.
- :func:`dcr_ratio` returns NaN with a warning when the held-out cells duplicate training cells.

``docs/reliability.md`` lists the cases the test suite tries and what each does.
"""

from __future__ import annotations

import sys
import warnings
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
from scipy.spatial.distance import cdist
from scipy.stats import wasserstein_distance
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, StrOptions, validate_params

from ._utils import Interval
from .preprocessing import NormalizeLog1p

__all__ = [
    "DegenerateInputWarning",
    "c2st_auc",
    "dcr_ratio",
    "distance_to_closest_record",
    "energy_distance",
    "evaluate",
    "gene_mean_correlation",
    "gene_variance_correlation",
    "knn_precision_recall",
    "library_size_distance",
    "log_fold_change",
    "marker_agreement",
    "mmd_rbf",
    "normalize_log1p",
    "pca_embed",
    "zero_fraction_error",
]

# Above this many entries in the real matrix, PCA runs on it without densifying (ARPACK).
_DENSE_PCA_MAX_ENTRIES = 10_000_000
_BANDWIDTH_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
# Fewer cells than this per side (after balancing): the embedding metrics warn that they are noisy.
_FEW_CELLS = 10

_MATRIX = ["array-like", "sparse matrix"]
_OPTIONAL_MATRIX = ["array-like", "sparse matrix", None]
_N_COMPONENTS = [Interval(Integral, 1, None, closed="left")]
_MAX_CELLS = [Interval(Integral, 2, None, closed="left"), None]


class DegenerateInputWarning(UserWarning):
    """Warning that a metric's input is degenerate, so its value is trivial, noisy or undefined.

    Raised for samples too small to judge, samples whose cells are all identical, gene statistics
    that are constant across genes (the correlation is NaN), mostly all-zero genes, input that does
    not look like what a metric expects (counts or log-normalised values), and held-out cells that
    duplicate training cells in :func:`dcr_ratio`. Silence it with
    ``warnings.simplefilter("ignore", DegenerateInputWarning)``.

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> from scaug.metrics import DegenerateInputWarning, gene_mean_correlation
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     value = gene_mean_correlation(np.ones((3, 2)), np.ones((3, 2)))
    >>> bool(np.isnan(value)), caught[0].category is DegenerateInputWarning
    (True, True)
    """


def _warn(message, category=DegenerateInputWarning):
    """Warn, attributing the warning to the first caller outside this module."""
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_globals.get("__name__") in _INTERNAL_MODULES:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


_INTERNAL_MODULES = (__name__, "sklearn.utils._param_validation")


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------
def _check_matrix(X, name, *, min_rows=2):
    """Return ``X`` as a float64 ndarray or CSR matrix, or raise a ValueError saying why not."""
    if X is None:
        raise ValueError(f"`{name}` is None; expected a cells x genes matrix.")
    if hasattr(X, "obs") and hasattr(X, "var") and hasattr(X, "X"):
        raise ValueError(
            f"`{name}` is an AnnData; pass its matrix instead (`adata.X`, or a layer such as "
            "`adata.layers['counts']`)."
        )
    if sp.issparse(X):
        if X.ndim != 2:
            raise ValueError(f"`{name}` must be 2-D (cells x genes); got {X.ndim} dimensions.")
        if X.dtype.kind not in "biuf":
            raise ValueError(
                f"`{name}` must hold numeric values; got a sparse matrix of dtype {X.dtype}."
            )
        X = sp.csr_matrix(X, dtype=np.float64)
        values = X.data
    else:
        try:
            X = np.asarray(X)
        except Exception as exc:  # ragged lists and the like
            raise ValueError(f"`{name}` could not be read as a matrix: {exc}") from exc
        if X.dtype.kind not in "biuf":
            raise ValueError(
                f"`{name}` must hold numeric values (int, float or bool); got dtype {X.dtype}."
            )
        if X.ndim != 2:
            raise ValueError(
                f"`{name}` must be 2-D (cells x genes); got an array of shape {X.shape}. "
                "For a single cell use X.reshape(1, -1)."
            )
        X = np.asarray(X, dtype=np.float64)
        values = X
    if X.shape[0] < min_rows:
        raise ValueError(f"`{name}` must have at least {min_rows} cells (rows); got {X.shape[0]}.")
    if X.shape[1] < 1:
        raise ValueError(f"`{name}` must have at least one gene (column); got 0.")
    if not np.all(np.isfinite(values)):
        bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
        raise ValueError(f"`{name}` contains {bad} NaN or infinite value(s); all must be finite.")
    return X


def _check_pair(real, synthetic, names=("real", "synthetic"), *, min_rows=2):
    real = _check_matrix(real, names[0], min_rows=min_rows)
    synthetic = _check_matrix(synthetic, names[1], min_rows=min_rows)
    if real.shape[1] != synthetic.shape[1]:
        raise ValueError(
            f"`{names[0]}` has {real.shape[1]} genes (columns) but `{names[1]}` has "
            f"{synthetic.shape[1]}; both must have the same genes in the same order."
        )
    return real, synthetic


def _check_nonnegative(X, name, what):
    values = X.data if sp.issparse(X) else X
    if values.size and values.min() < 0:
        raise ValueError(
            f"`{name}` contains negative values (min {values.min():g}); {what} expects "
            "non-negative counts."
        )


def _non_integer(X):
    """Number of stored values of ``X`` that are not whole numbers, and the first of them."""
    values = X.data if sp.issparse(X) else X.ravel()
    bad = values != np.round(values)
    n_bad = int(np.count_nonzero(bad))
    return n_bad, (float(values[np.argmax(bad)]) if n_bad else None)


def _check_counts(X, name, what):
    """Refuse ``X`` unless it holds non-negative whole numbers (raw counts)."""
    _check_nonnegative(X, name, what)
    n_bad, example = _non_integer(X)
    if n_bad:
        raise ValueError(
            f"`{name}` is not raw counts: {n_bad} of its values are not whole numbers (for "
            f"example {example:.6g}); {what} expects raw counts and normalises them itself, so "
            "log-normalised data would be normalised a second time. Pass counts=False for "
            "log-normalised values, or pass the raw counts."
        )


def _looks_like_counts(X):
    """True when every value of ``X`` is a whole number and some exceed 1 (raw counts, likely)."""
    values = X.data if sp.issparse(X) else X
    return bool(values.size and values.max() > 1 and _non_integer(X)[0] == 0)


# ----------------------------------------------------------------------------------------------
# sparse-aware statistics
# ----------------------------------------------------------------------------------------------
def _gene_mean_var(X):
    """Per-gene mean and (population, ddof=0) variance; sparse-aware.

    Both are two-pass (deviations from the mean), so dense and sparse input agree to rounding,
    and a variance below 1e-12 of the squared mean (rounding error of a constant gene) is 0.
    """
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        n_cells = X.shape[0]
        mean = np.asarray(X.sum(axis=0)).ravel() / n_cells
        deviation = X.data - mean[X.indices]
        stored = np.bincount(X.indices, minlength=X.shape[1])
        var = np.bincount(X.indices, weights=deviation**2, minlength=X.shape[1])
        var = (var + (n_cells - stored) * mean**2) / n_cells
    else:
        mean, var = X.mean(axis=0), X.var(axis=0)
    var[var <= 1e-12 * mean**2] = 0.0
    return mean, var


def _constant(v):
    """Whether ``v`` is the same everywhere, to rounding."""
    return bool(np.ptp(v) <= 1e-12 * np.max(np.abs(v)))


def _zero_fraction(X):
    """Per-gene fraction of cells with a zero; explicit zeros in sparse input count as zeros."""
    n_cells, n_genes = X.shape
    if sp.issparse(X):
        nonzero = np.bincount(X.indices[X.data != 0], minlength=n_genes)
    else:
        nonzero = np.count_nonzero(X, axis=0)
    return 1.0 - nonzero / n_cells


def _library_size(X):
    return np.asarray(X.sum(axis=1)).ravel()


def _warn_all_zero_genes(real, synthetic):
    """Warn when most genes are zero in every cell of both samples (they agree trivially)."""
    zero = (_zero_fraction(real) == 1.0) & (_zero_fraction(synthetic) == 1.0)
    n_zero, n_genes = int(zero.sum()), zero.size
    if n_genes > 1 and n_zero > n_genes / 2:
        _warn(
            f"{n_zero} of the {n_genes} genes are zero in every cell of both samples; they agree "
            "trivially, pulling gene correlations toward 1 and zero_fraction_error toward 0. "
            "Select expressed genes first, e.g. X[:, np.flatnonzero(X.sum(axis=0))]."
        )


def _all_rows_equal(X):
    """True when every row of ``X`` equals the first (dense or sparse)."""
    if sp.issparse(X):
        return bool(np.all(X.max(axis=0).toarray() == X.min(axis=0).toarray()))
    return bool(np.all(X == X[:1]))


def _row_keys(*blocks):
    """One hashable key per row of the stacked blocks; rows holding equal values share it."""
    if any(sp.issparse(X) for X in blocks):
        blocks = [sp.csr_matrix(X, dtype=np.float64, copy=True) for X in blocks]
    keys = []
    for X in blocks:
        if sp.issparse(X):
            X.sum_duplicates()  # canonical: sorted indices, one entry per position
            X.data += 0.0  # -0.0 and 0.0 alike
            X.eliminate_zeros()
            rows = (
                (X.indices[a:b].tobytes(), X.data[a:b].tobytes())
                for a, b in zip(X.indptr[:-1], X.indptr[1:], strict=True)
            )
        else:
            rows = (row.tobytes() for row in np.ascontiguousarray(X, dtype=np.float64) + 0.0)
        keys.append(list(rows))
    return keys


def _shared_cell_groups(real, synthetic):
    """Group labels for cross-validation: all copies of a cell found in both samples share one.

    A cell present in both samples is where a classifier trained on one copy (labelled one
    class) and scored on the other (labelled the other class) is wrong by construction, so all
    its copies go to one fold. A cell repeated within one sample only is a real feature of that
    sample (a generator that repeats a cell) and stays free to be learnt: it gets one group per
    row, as does every other cell.
    """
    keys_real, keys_syn = _row_keys(real, synthetic)
    shared = set(keys_real) & set(keys_syn)
    shared_ids, groups = {}, []
    for key in keys_real + keys_syn:
        if key not in shared:
            groups.append(len(groups))  # placeholder, renumbered below
        elif key in shared_ids:
            groups.append(shared_ids[key])
        else:
            shared_ids[key] = len(groups)
            groups.append(shared_ids[key])
    return np.unique(groups, return_inverse=True)[1].astype(np.int64)


def _subsample(X, max_cells, rng):
    """Rows of ``X`` in a random subset of at most ``max_cells``; ``X`` itself when small enough."""
    if max_cells is None or X.shape[0] <= max_cells:
        return X
    idx = np.sort(rng.choice(X.shape[0], size=max_cells, replace=False))
    return X[idx]


def _pearson(a, b):
    a = a - a.mean()
    b = b - b.mean()
    denom = np.sqrt((a @ a) * (b @ b))
    if denom == 0:
        return float("nan")
    return float(np.clip((a @ b) / denom, -1.0, 1.0))


# ----------------------------------------------------------------------------------------------
# normalisation and embedding
# ----------------------------------------------------------------------------------------------
@validate_params(
    {"X": _MATRIX, "target_sum": [Interval(Real, 0, None, closed="neither")]},
    prefer_skip_nested_validation=True,
)
def normalize_log1p(X, *, target_sum=1e4):
    """Scale every cell to ``target_sum`` total counts, then take ``log1p``.

    The usual scanpy ``normalize_total`` + ``log1p``; sparse input stays sparse. Cells with no
    counts stay all zero.

    Parameters
    ----------
    X : array-like or scipy sparse matrix of shape (n_cells, n_genes)
        Non-negative counts.
    target_sum : float, default=1e4
        Total each cell is scaled to before the logarithm.

    Returns
    -------
    ndarray or scipy.sparse.csr_matrix of shape (n_cells, n_genes)
        Log-normalised values (float32 for float32 input, else float64); sparse when ``X`` is
        sparse. The same as :class:`scaug.preprocessing.NormalizeLog1p`.

    Examples
    --------
    >>> import numpy as np
    >>> from scaug.metrics import normalize_log1p
    >>> normalize_log1p(np.array([[1, 3], [0, 0]]), target_sum=4)
    array([[0.69314718, 1.38629436],
           [0.        , 0.        ]])
    """
    X = _check_matrix(X, "X", min_rows=1)
    _check_nonnegative(X, "X", "normalize_log1p")
    return NormalizeLog1p(target_sum=target_sum).fit_transform(X)


def _fit_pca(X, n_components, random_state, name=None):
    """Fit PCA on ``X``; return (mean, components) with components of shape (k, n_genes).

    ``X`` whose rows are all identical has no principal direction: with ``name`` (the argument
    it came from) that is an error; without (the pooled samples), every cell gets coordinate 0.
    """
    n_cells, n_genes = X.shape
    if _all_rows_equal(X):
        if name is not None:
            raise ValueError(
                f"All {n_cells} cells of `{name}` are identical, so a PCA fitted on them has no "
                "direction to project on; pass cells that vary."
            )
        _warn(
            f"All {n_cells} cells of the two samples pooled are identical; the samples cannot be "
            "told apart (every cell gets the same coordinates) and the metric takes its ideal value."
        )
        mean = np.asarray(X[:1].toarray() if sp.issparse(X) else X[:1], dtype=np.float64).ravel()
        return mean, np.zeros((1, n_genes))
    k = min(n_components, n_cells - 1, n_genes)
    if n_cells * n_genes <= _DENSE_PCA_MAX_ENTRIES or k < 1:
        dense = X.toarray() if sp.issparse(X) else X
        pca = PCA(n_components=max(k, 1), svd_solver="full").fit(dense)
    else:
        k = min(k, min(n_cells, n_genes) - 1)
        pca = PCA(n_components=k, svd_solver="arpack", random_state=random_state).fit(X)
    return pca.mean_, pca.components_


def _project(X, mean, components):
    return np.asarray(X @ components.T) - mean @ components.T


def _check_reference(reference, n_genes):
    """``reference`` as a checked matrix with ``n_genes`` columns, or None."""
    if reference is None:
        return None
    reference = _check_matrix(reference, "reference")
    if reference.shape[1] != n_genes:
        raise ValueError(
            f"`reference` has {reference.shape[1]} genes (columns) but `real` has {n_genes}; "
            "both must have the same genes in the same order."
        )
    return reference


def _vstack(a, b):
    if sp.issparse(a) or sp.issparse(b):
        return sp.vstack([sp.csr_matrix(a), sp.csr_matrix(b)], format="csr")
    return np.vstack([a, b])


def _balanced(real, synthetic, max_cells, rng):
    """Random subsets of both sides of equal size ``min(n_real, n_synthetic, max_cells)``."""
    m = min(real.shape[0], synthetic.shape[0])
    if max_cells is not None:
        m = min(m, max_cells)
    if m < _FEW_CELLS:
        _warn(
            f"Only {m} cells per sample; with fewer than {_FEW_CELLS} a two-sample score is very "
            "noisy (samples of one population can score far from the ideal value)."
        )
    return _subsample(real, m, rng), _subsample(synthetic, m, rng)


def _embed(real, synthetic, n_components, reference, rng):
    """Project both sides on the PCA of ``reference``, or of both pooled when it is None."""
    if reference is None:
        mean, components = _fit_pca(_vstack(real, synthetic), n_components, rng)
    else:
        mean, components = _fit_pca(reference, n_components, rng, name="reference")
    return _project(real, mean, components), _project(synthetic, mean, components)


@validate_params(
    {
        "real": _MATRIX,
        "synthetic": _MATRIX,
        "n_components": _N_COMPONENTS,
        "reference": _OPTIONAL_MATRIX,
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def pca_embed(real, synthetic, *, n_components=30, reference=None, random_state=None):
    """Project real and synthetic cells onto a common PCA space.

    Where the PCA is fitted matters. Cells a PCA was fitted on spread out more along its top
    components than new cells of the same distribution do (the PCA fits their noise); with
    hundreds of cells and thousands of genes that alone makes two samples of one population
    look very different. So by default the PCA is fitted on equal-sized random subsets of both
    sides pooled (``min(n_real, n_synthetic)`` cells each), which favours neither. Pass
    ``reference`` (real cells independent of both, e.g. a generator's training cells) to fit on
    real cells only; ``reference=real`` gives the naive protocol with the bias described above.

    ``n_components`` is reduced to what the fitted cells support. Up to ten million entries the
    exact (full SVD) solver runs on a dense copy of the fitted cells, so dense and sparse input
    give the same embedding; above that sparse input stays sparse (ARPACK).

    Parameters
    ----------
    real, synthetic : array-like or scipy sparse matrix of shape (n_cells, n_genes)
        Real and synthetic cells with the same genes; log-normalised values are recommended.
    n_components : int, default=30
        Number of principal components wanted.
    reference : array-like or scipy sparse matrix of shape (n_reference, n_genes), optional
        Cells to fit the PCA on instead of the pooled, balanced sample.
    random_state : int, RandomState instance or None, default=None
        Seed for the balanced subsets and for the ARPACK solver.

    Returns
    -------
    real_pcs : ndarray of shape (n_real, k)
    synthetic_pcs : ndarray of shape (n_synthetic, k)
        Coordinates of all cells, ``k <= n_components``.

    Examples
    --------
    >>> import numpy as np
    >>> from scaug.metrics import pca_embed
    >>> rng = np.random.default_rng(0)
    >>> zr, zs = pca_embed(rng.normal(size=(50, 20)), rng.normal(size=(40, 20)), n_components=5)
    >>> zr.shape, zs.shape
    ((50, 5), (40, 5))
    """
    real, synthetic = _check_pair(real, synthetic)
    reference = _check_reference(reference, real.shape[1])
    rng = check_random_state(random_state)
    if reference is None:
        m = min(real.shape[0], synthetic.shape[0])
        pooled = _vstack(_subsample(real, m, rng), _subsample(synthetic, m, rng))
        mean, components = _fit_pca(pooled, n_components, rng)
    else:
        mean, components = _fit_pca(reference, n_components, rng, name="reference")
    return _project(real, mean, components), _project(synthetic, mean, components)


# ----------------------------------------------------------------------------------------------
# distribution-level metrics in PCA space
# ----------------------------------------------------------------------------------------------
_CLASSIFIERS = ("random_forest", "knn", "logistic")


def _make_classifier(classifier, seed, n_train):
    """The classifier of :func:`c2st_auc`; ``n_train`` is the smallest training fold."""
    if classifier is None or classifier == "random_forest":
        return RandomForestClassifier(n_estimators=100, min_samples_leaf=2, random_state=seed)
    if classifier == "knn":
        knn = KNeighborsClassifier(n_neighbors=min(10, n_train))
        return make_pipeline(StandardScaler(), knn)
    if classifier == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    return clone(classifier)


def _c2st_splits(X, y, groups, cv, seed):
    """Stratified folds that keep shared cells together; each side of a fold has both classes.

    Without cells shared by the two samples these are exactly ``StratifiedKFold``'s folds. With
    them they come from ``StratifiedGroupKFold`` on :func:`_shared_cell_groups`, so a cell is
    never scored by a classifier trained on its copy from the other sample (a sample against a
    copy of itself would score near 0 instead of 0.5).
    """
    n = int(np.sum(y == 0))
    n_groups = int(groups.max()) + 1
    if n_groups == len(y):
        folds = StratifiedKFold(n_splits=min(cv, n), shuffle=True, random_state=seed)
        return list(folds.split(X, y))
    folds = StratifiedGroupKFold(n_splits=min(cv, n, n_groups), shuffle=True, random_state=seed)
    return [
        (train, test)
        for train, test in folds.split(X, y, groups)
        if np.unique(y[train]).size == 2 and np.unique(y[test]).size == 2
    ]


@validate_params(
    {
        "real": _MATRIX,
        "synthetic": _MATRIX,
        "n_components": _N_COMPONENTS,
        "reference": _OPTIONAL_MATRIX,
        "classifier": [
            None,
            StrOptions(set(_CLASSIFIERS)),
            HasMethods(["fit", "predict_proba"]),
            HasMethods(["fit", "decision_function"]),
        ],
        "cv": [Interval(Integral, 2, None, closed="left")],
        "max_cells": _MAX_CELLS,
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def c2st_auc(
    real,
    synthetic,
    *,
    n_components=30,
    reference=None,
    classifier=None,
    cv=5,
    max_cells=2000,
    random_state=None,
):
    """Classifier two-sample test: cross-validated ROC AUC of telling real from synthetic.

    The larger group is subsampled to the size of the smaller (and both to at most
    ``max_cells``) so the classes are balanced; real cells are labelled 0 and synthetic cells 1;
    both are projected onto a common PCA (:func:`pca_embed`), and the score is the mean ROC AUC
    over stratified folds. 0.5 means the classifier cannot tell them apart (ideal); 1.0 means
    every synthetic cell is recognisable.

    The default classifier, a random forest, detects shifted means as well as collapsed or
    inflated spread (a linear classifier sees only the former). Note that exact copies of real
    cells score 0.5 here: check memorisation with :func:`dcr_ratio`.

    A cell found in both samples has all its copies kept in one fold (``StratifiedGroupKFold``),
    so no cell is scored by a classifier trained on its copy from the other sample: a sample
    against an exact copy of itself scores 0.5 (about 0.03 otherwise). A cell repeated within
    one sample only is a feature of that sample and stays free to be learnt. Without shared
    cells the folds are ``StratifiedKFold``'s. Degenerate input warns
    (:class:`DegenerateInputWarning`): fewer than 10 cells per sample (a noisy score), all cells
    of both samples identical (0.5 without fitting anything), and shared cells that leave no
    grouped fold with both samples on each side (for example a synthetic sample that is one
    real cell repeated): then the folds ignore copies, as ``StratifiedKFold`` does.

    Parameters
    ----------
    real, synthetic : array-like or scipy sparse matrix of shape (n_cells, n_genes)
        Log-normalised expression of real and synthetic cells, same genes.
    n_components : int, default=30
        Principal components used as features (see :func:`pca_embed`).
    reference : array-like or scipy sparse matrix of shape (n_reference, n_genes), optional
        Real cells to fit the PCA on, independent of ``real`` and ``synthetic`` (for example a
        generator's training cells). None: fitted on both samples pooled, balanced.
    classifier : {None, "random_forest", "knn", "logistic"} or estimator, default=None
        None or ``"random_forest"``: ``RandomForestClassifier(n_estimators=100,
        min_samples_leaf=2)``. ``"knn"``: 10-nearest-neighbours on standardised PCs.
        ``"logistic"``: logistic regression on standardised PCs. An estimator is cloned; it must
        offer ``predict_proba`` or ``decision_function``.
    cv : int, default=5
        Number of folds; reduced to the number of cells per class (or of distinct cells) when
        that is smaller.
    max_cells : int or None, default=2000
        Upper bound on the cells used per class.
    random_state : int, RandomState instance or None, default=None
        Seed for subsampling, folds and the default classifier.

    Returns
    -------
    float
        Mean cross-validated ROC AUC, in [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> from scaug.metrics import c2st_auc
    >>> rng = np.random.default_rng(0)
    >>> real = rng.normal(size=(200, 20))
    >>> c2st_auc(real, rng.normal(size=(200, 20)), random_state=0) < 0.6
    True
    >>> c2st_auc(real, rng.normal(1.0, size=(200, 20)), random_state=0) > 0.95
    True
    >>> round(c2st_auc(real, real.copy(), random_state=0), 6)  # identical samples
    0.5
    """
    real, synthetic = _check_pair(real, synthetic)
    reference = _check_reference(reference, real.shape[1])
    rng = check_random_state(random_state)
    seed = int(rng.randint(np.iinfo(np.int32).max))
    real, synthetic = _balanced(real, synthetic, max_cells, rng)
    groups = _shared_cell_groups(real, synthetic)
    if groups.max() == 0:
        _warn(
            f"All {groups.size} cells of the two samples pooled are identical; they cannot be "
            "told apart, and c2st_auc is 0.5."
        )
        return 0.5
    zr, zs = _embed(real, synthetic, n_components, reference, rng)
    n = zr.shape[0]
    X = np.vstack([zr, zs])
    y = np.r_[np.zeros(n, dtype=int), np.ones(n, dtype=int)]
    splits = _c2st_splits(X, y, groups, cv, seed)
    if not splits:
        _warn(
            f"The {groups.size} cells fall into only {groups.max() + 1} groups once the copies of "
            "each cell found in both samples are kept together, too few to have both samples "
            "on each side of a fold; c2st_auc falls back to folds that ignore copies, so a "
            "cell's copy may be trained on with the other label, which biases the score low."
        )
        splits = _c2st_splits(X, y, np.arange(y.size), cv, seed)
    model = _make_classifier(classifier, seed, min(len(train) for train, _ in splits))
    scores = cross_val_score(model, X, y, cv=splits, scoring="roc_auc")
    return float(np.mean(scores))


def _embedded_samples(real, synthetic, n_components, reference, max_cells, random_state):
    """Checked, balanced and projected samples of an embedding metric, and its generator."""
    real, synthetic = _check_pair(real, synthetic)
    reference = _check_reference(reference, real.shape[1])
    rng = check_random_state(random_state)
    real, synthetic = _balanced(real, synthetic, max_cells, rng)
    zr, zs = _embed(real, synthetic, n_components, reference, rng)
    return zr, zs, rng


def _offdiag_mean(K):
    n = K.shape[0]
    return (K.sum() - np.trace(K)) / (n * (n - 1))


@validate_params(
    {
        "real": _MATRIX,
        "synthetic": _MATRIX,
        "n_components": _N_COMPONENTS,
        "reference": _OPTIONAL_MATRIX,
        "bandwidths": ["array-like", Interval(Real, 0, None, closed="neither"), None],
        "max_cells": _MAX_CELLS,
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def mmd_rbf(
    real,
    synthetic,
    *,
    n_components=30,
    reference=None,
    bandwidths=None,
    max_cells=2000,
    random_state=None,
):
    """Squared maximum mean discrepancy with a mixture of RBF kernels, in PCA space.

    The kernel is the mean of ``exp(-|x - y|^2 / (2 sigma^2))`` over several bandwidths
    ``sigma``. The estimate is the unbiased U-statistic, so it scatters around 0 (and may be
    slightly negative) when the two samples come from the same distribution; larger is worse.

    Parameters
    ----------
    real, synthetic : array-like or scipy sparse matrix of shape (n_cells, n_genes)
        Log-normalised expression of real and synthetic cells, same genes.
    n_components : int, default=30
        Principal components used as coordinates (see :func:`pca_embed`).
    reference : array-like or scipy sparse matrix of shape (n_reference, n_genes), optional
        Real cells to fit the PCA on, independent of ``real`` and ``synthetic`` (for example a
        generator's training cells). None: fitted on both samples pooled, balanced.
    bandwidths : float, sequence of float or None, default=None
        Kernel widths ``sigma`` in PCA units, all positive. None: the median pairwise distance of
        the pooled (subsampled) cells times (0.25, 0.5, 1, 2, 4).
    max_cells : int or None, default=2000
        Both sides are randomly subsampled to ``min(n_real, n_synthetic, max_cells)`` cells
        (cost is quadratic).
    random_state : int, RandomState instance or None, default=None
        Seed for subsampling.

    Returns
    -------
    float
        Unbiased estimate of MMD^2. For identical samples of ``n`` cells it is slightly negative
        (``-2 (1 - mean off-diagonal kernel) / n``); fewer than 10 cells per sample warn.

    Examples
    --------
    >>> import numpy as np
    >>> from scaug.metrics import mmd_rbf
    >>> rng = np.random.default_rng(0)
    >>> real = rng.normal(size=(300, 10))
    >>> same = mmd_rbf(real, rng.normal(size=(300, 10)), random_state=0)
    >>> shifted = mmd_rbf(real, rng.normal(1.0, size=(300, 10)), random_state=0)
    >>> abs(same) < 0.01 < shifted
    True
    """
    zr, zs, rng = _embedded_samples(
        real, synthetic, n_components, reference, max_cells, random_state
    )
    d_rr = cdist(zr, zr, "sqeuclidean")
    d_ss = cdist(zs, zs, "sqeuclidean")
    d_rs = cdist(zr, zs, "sqeuclidean")
    if bandwidths is None:
        pooled = np.vstack([zr, zs])
        pooled = _subsample(pooled, 1000, rng)
        dist = cdist(pooled, pooled)
        median = float(np.median(dist[np.triu_indices(pooled.shape[0], k=1)]))
        if median <= 0:
            median = 1.0  # all cells identical: any width gives MMD 0
        sigmas = median * np.asarray(_BANDWIDTH_FACTORS)
    else:
        message = "`bandwidths` must be a non-empty sequence of positive numbers; got {!r}."
        try:
            sigmas = np.atleast_1d(np.asarray(bandwidths, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise ValueError(message.format(bandwidths)) from exc
        if sigmas.ndim != 1 or sigmas.size == 0 or not np.all(np.isfinite(sigmas) & (sigmas > 0)):
            raise ValueError(message.format(bandwidths))
    total = 0.0
    for sigma in sigmas:
        gamma = 1.0 / (2.0 * sigma**2)
        total += (
            _offdiag_mean(np.exp(-gamma * d_rr))
            + _offdiag_mean(np.exp(-gamma * d_ss))
            - 2.0 * np.exp(-gamma * d_rs).mean()
        )
    return float(total / sigmas.size)


@validate_params(
    {
        "real": _MATRIX,
        "synthetic": _MATRIX,
        "n_components": _N_COMPONENTS,
        "reference": _OPTIONAL_MATRIX,
        "max_cells": _MAX_CELLS,
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def energy_distance(
    real, synthetic, *, n_components=30, reference=None, max_cells=2000, random_state=None
):
    """Multivariate energy distance ``2 E|X-Y| - E|X-X'| - E|Y-Y'|`` in PCA space.

    This is the (squared) energy distance of Szekely and Rizzo, not its square root; the within-
    sample terms average over distinct pairs only, so the value is near 0 for two samples of one
    distribution and grows with any difference in location or shape. Units are PCA units.

    Parameters
    ----------
    real, synthetic : array-like or scipy sparse matrix of shape (n_cells, n_genes)
        Log-normalised expression of real and synthetic cells, same genes.
    n_components : int, default=30
        Principal components used as coordinates (see :func:`pca_embed`).
    reference : array-like or scipy sparse matrix of shape (n_reference, n_genes), optional
        Real cells to fit the PCA on, independent of ``real`` and ``synthetic`` (for example a
        generator's training cells). None: fitted on both samples pooled, balanced.
    max_cells : int or None, default=2000
        Both sides are randomly subsampled to ``min(n_real, n_synthetic, max_cells)`` cells
        (cost is quadratic).
    random_state : int, RandomState instance or None, default=None
        Seed for subsampling.

    Returns
    -------
    float
        Energy distance. For identical samples of ``n`` cells it is slightly negative
        (``-2 E|X-X'| / n``); fewer than 10 cells per sample warn.

    Examples
    --------
    >>> import numpy as np
    >>> from scaug.metrics import energy_distance
    >>> rng = np.random.default_rng(0)
    >>> real = rng.normal(size=(300, 10))
    >>> same = energy_distance(real, rng.normal(size=(300, 10)), random_state=0)
    >>> shifted = energy_distance(real, rng.normal(1.0, size=(300, 10)), random_state=0)
    >>> same < 0.1 < shifted
    True
    """
    zr, zs, _ = _embedded_samples(real, synthetic, n_components, reference, max_cells, random_state)
    between = cdist(zr, zs).mean()
    within_r = _offdiag_mean(cdist(zr, zr))
    within_s = _offdiag_mean(cdist(zs, zs))
    return float(2.0 * between - within_r - within_s)


def _covered(points, centres, radii):
    """Whether each point lies in at least one ball ``|x - centre_i| <= radius_i``."""
    out = np.empty(points.shape[0], dtype=bool)
    chunk = _chunk_rows(centres.shape[0])
    for start in range(0, points.shape[0], chunk):
        d = cdist(points[start : start + chunk], centres)
        out[start : start + chunk] = (d <= radii[None, :] * _ROUNDING).any(axis=1)
    return out


# A point on a ball's boundary is inside; this much slack keeps that decision the same whether the
# coordinates came from dense or sparse input (which round differently).
_ROUNDING = 1.0 + 1e-9


def _knn_radii(Z, k):
    """Distance from each row of ``Z`` to its k-th nearest other row (exact, via ``cdist``)."""
    radii = np.empty(Z.shape[0])
    step = _chunk_rows(Z.shape[0])
    for start in range(0, Z.shape[0], step):
        d = cdist(Z[start : start + step], Z)
        radii[start : start + step] = np.partition(d, k, axis=1)[:, k]  # column 0 is the self
    return radii


def _chunk_rows(n_columns):
    """Rows per block so that a block of distances stays near 128 MB."""
    return max(1, 2**24 // max(n_columns, 1))


def _nearest_distance(query, ref):
    """Distance from each row of ``query`` to the closest row of ``ref`` (exact, via ``cdist``).

    ``cdist`` rather than ``NearestNeighbors`` (whose brute-force metric expands squares and
    returns about 1e-7 instead of 0 for an exact copy).
    """
    out = np.empty(query.shape[0])
    step = _chunk_rows(ref.shape[0])
    for start in range(0, query.shape[0], step):
        out[start : start + step] = cdist(query[start : start + step], ref).min(axis=1)
    return out


@validate_params(
    {
        "real": _MATRIX,
        "synthetic": _MATRIX,
        "n_components": _N_COMPONENTS,
        "reference": _OPTIONAL_MATRIX,
        "k": [Interval(Integral, 1, None, closed="left")],
        "max_cells": _MAX_CELLS,
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def knn_precision_recall(
    real, synthetic, *, k=5, n_components=30, reference=None, max_cells=2000, random_state=None
):
    """Improved precision and recall (Kynkaanniemi et al., 2019) in PCA space.

    Each cell gets a ball reaching to its k-th nearest neighbour within its own sample.
    Precision is the fraction of synthetic cells inside at least one real ball (are synthetic
    cells realistic?); recall is the fraction of real cells inside at least one synthetic ball
    (is the real variety covered?). A collapsed generator keeps precision but loses recall.

    Parameters
    ----------
    real, synthetic : array-like or scipy sparse matrix of shape (n_cells, n_genes)
        Log-normalised expression of real and synthetic cells, same genes.
    k : int, default=5
        Neighbour that sets the ball radius; each side needs more than ``k`` cells.
    n_components : int, default=30
        Principal components used as coordinates (see :func:`pca_embed`).
    reference : array-like or scipy sparse matrix of shape (n_reference, n_genes), optional
        Real cells to fit the PCA on, independent of ``real`` and ``synthetic`` (for example a
        generator's training cells). None: fitted on both samples pooled, balanced.
    max_cells : int or None, default=2000
        Both sides are randomly subsampled to ``min(n_real, n_synthetic, max_cells)`` cells,
        so the k-NN radii of the two sides are comparable.
    random_state : int, RandomState instance or None, default=None
        Seed for subsampling.

    Returns
    -------
    precision, recall : tuple of float
        Both in [0, 1]; 1 is ideal.

    Examples
    --------
    >>> import numpy as np
    >>> from scaug.metrics import knn_precision_recall
    >>> rng = np.random.default_rng(0)
    >>> real = rng.normal(size=(300, 10))
    >>> collapsed = 0.1 * rng.normal(size=(300, 10))
    >>> precision, recall = knn_precision_recall(real, collapsed, random_state=0)
    >>> precision > 0.9 and recall < 0.2
    True
    """
    zr, zs, _ = _embedded_samples(real, synthetic, n_components, reference, max_cells, random_state)
    for name, z in (("real", zr), ("synthetic", zs)):
        if z.shape[0] <= k:
            raise ValueError(
                f"`k` ({k}) must be smaller than the number of {name} cells ({z.shape[0]})."
            )
    precision = _covered(zs, zr, _knn_radii(zr, k)).mean()
    recall = _covered(zr, zs, _knn_radii(zs, k)).mean()
    return float(precision), float(recall)


# ----------------------------------------------------------------------------------------------
# per-gene and per-cell statistics
# ----------------------------------------------------------------------------------------------
def _stat_correlation(real, synthetic, which, log):
    real, synthetic = _check_pair(real, synthetic)
    _warn_all_zero_genes(real, synthetic)
    (mr, vr), (ms, vs) = _gene_mean_var(real), _gene_mean_var(synthetic)
    a, b = (mr, ms) if which == "mean" else (vr, vs)
    if log:
        if min(a.min(), b.min()) <= -1:
            raise ValueError(
                f"log=True takes log1p of the per-gene {which}s, but some are <= -1 (min "
                f"{min(a.min(), b.min()):g}); pass log=False for data that can be negative."
            )
        a, b = np.log1p(a), np.log1p(b)
    constant = [name for name, v in (("real", a), ("synthetic", b)) if _constant(v)]
    if constant:
        _warn(
            f"The per-gene {which} is the same for every gene of {' and '.join(constant)} "
            f"({real.shape[1]} gene(s)), so its correlation is undefined: NaN. A {which} that "
            "varies across genes is needed (several genes; for the variance, cells that differ)."
        )
        return float("nan")
    return _pearson(a, b)


_GENE_STAT_CONSTRAINTS = {"real": _MATRIX, "synthetic": _MATRIX, "log": ["boolean"]}


@validate_params(_GENE_STAT_CONSTRAINTS, prefer_skip_nested_validation=True)
def gene_mean_correlation(real, synthetic, *, log=True):
    """Pearson correlation between the per-gene means of real and synthetic cells.

    Parameters
    ----------
    real, synthetic : array-like or scipy sparse matrix of shape (n_cells, n_genes)
        Real and synthetic cells, same genes (counts or log-normalised).
    log : bool, default=True
        Correlate ``log1p`` of the means, so that a few highly expressed genes do not dominate.

    Returns
    -------
    float
        Correlation in [-1, 1]; 1 is ideal. NaN, with a :class:`DegenerateInputWarning`, when
        the means are the same for every gene in either sample (one gene, or all genes equal):
        the correlation is undefined. Genes that are zero in every cell of both samples count
        as agreeing; when they are most genes, a warning says so.

    Examples
    --------
    >>> import numpy as np
    >>> from scaug.metrics import gene_mean_correlation
    >>> rng = np.random.default_rng(0)
    >>> mu = rng.gamma(0.5, 2.0, size=100)
    >>> real, synthetic = rng.poisson(mu, size=(200, 100)), rng.poisson(mu, size=(200, 100))
    >>> gene_mean_correlation(real, synthetic) > 0.95
    True
    """
    return _stat_correlation(real, synthetic, "mean", log)


@validate_params(_GENE_STAT_CONSTRAINTS, prefer_skip_nested_validation=True)
def gene_variance_correlation(real, synthetic, *, log=True):
    """Pearson correlation between the per-gene variances of real and synthetic cells.

    Variances are population variances (``ddof=0``), computed without densifying sparse input.

    Parameters
    ----------
    real, synthetic : array-like or scipy sparse matrix of shape (n_cells, n_genes)
        Real and synthetic cells, same genes (counts or log-normalised).
    log : bool, default=True
        Correlate ``log1p`` of the variances, so that a few highly variable genes do not
        dominate.

    Returns
    -------
    float
        Correlation in [-1, 1]; 1 is ideal. NaN, with a :class:`DegenerateInputWarning`, when
        the variances are the same for every gene in either sample (one gene, or a sample of
        one repeated cell, whose variances are all 0). All-zero genes warn as in
        :func:`gene_mean_correlation`.

    Examples
    --------
    >>> import numpy as np
    >>> from scaug.metrics import gene_variance_correlation
    >>> rng = np.random.default_rng(0)
    >>> mu = rng.gamma(0.5, 2.0, size=100)
    >>> real, synthetic = rng.poisson(mu, size=(200, 100)), rng.poisson(mu, size=(200, 100))
    >>> gene_variance_correlation(real, synthetic) > 0.9
    True
    """
    return _stat_correlation(real, synthetic, "variance", log)


@validate_params({"real": _MATRIX, "synthetic": _MATRIX}, prefer_skip_nested_validation=True)
def zero_fraction_error(real, synthetic):
    """Mean absolute difference between the per-gene fractions of zeros.

    Parameters
    ----------
    real, synthetic : array-like or scipy sparse matrix of shape (n_cells, n_genes)
        Real and synthetic cells, same genes; counts and log-normalised values give the same
        answer. Explicitly stored zeros in sparse input count as zeros.

    Returns
    -------
    float
        In [0, 1]; 0 is ideal. Genes that are zero in every cell of both samples contribute 0;
        when they are most genes, a :class:`DegenerateInputWarning` says so.

    Examples
    --------
    >>> import numpy as np
    >>> from scaug.metrics import zero_fraction_error
    >>> zero_fraction_error(np.array([[0, 1], [0, 2]]), np.array([[1, 1], [0, 3]]))
    0.25
    """
    real, synthetic = _check_pair(real, synthetic)
    _warn_all_zero_genes(real, synthetic)
    return float(np.mean(np.abs(_zero_fraction(real) - _zero_fraction(synthetic))))


@validate_params({"real": _MATRIX, "synthetic": _MATRIX}, prefer_skip_nested_validation=True)
def library_size_distance(real, synthetic):
    """Wasserstein-1 distance between the log1p library sizes of real and synthetic cells.

    Library size is the total count of a cell; comparing ``log1p`` of it makes the distance
    roughly a typical fold difference in sequencing depth (0.1 is about 10 %).

    Parameters
    ----------
    real, synthetic : array-like or scipy sparse matrix of shape (n_cells, n_genes)
        Raw counts (non-negative) of real and synthetic cells, same genes. Normalised data has
        equal totals by construction and makes this metric meaningless: negative values are
        refused, and non-integer values warn (:class:`DegenerateInputWarning`).

    Returns
    -------
    float
        Non-negative; 0 is ideal.

    Examples
    --------
    >>> import numpy as np
    >>> from scaug.metrics import library_size_distance
    >>> real = np.array([[1, 2], [3, 4]])
    >>> library_size_distance(real, real)
    0.0
    >>> round(library_size_distance(real, 2 * real), 2)
    0.59
    """
    real, synthetic = _check_pair(real, synthetic)
    for name, X in (("real", real), ("synthetic", synthetic)):
        _check_nonnegative(X, name, "library_size_distance")
        n_bad, example = _non_integer(X)
        if n_bad:
            _warn(
                f"`{name}` is not raw counts: {n_bad} of its values are not whole numbers (for "
                f"example {example:.6g}); library_size_distance compares the totals of raw "
                "counts, and normalised data has equal totals by construction."
            )
    return float(
        wasserstein_distance(np.log1p(_library_size(real)), np.log1p(_library_size(synthetic)))
    )


# ----------------------------------------------------------------------------------------------
# memorisation
# ----------------------------------------------------------------------------------------------
@validate_params(
    {
        "train": _MATRIX,
        "query": _MATRIX,
        "n_components": _N_COMPONENTS,
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def distance_to_closest_record(train, query, *, n_components=30, random_state=None):
    """Distance from each query cell to its nearest training cell, in the training cells' PCA space.

    A synthetic cell that copies a training cell has distance 0. Compare with held-out real
    cells through :func:`dcr_ratio`: raw distances depend on data scale and training-set size.

    Parameters
    ----------
    train : array-like or scipy sparse matrix of shape (n_train, n_genes)
        The real cells the generator was fitted on (log-normalised recommended).
    query : array-like or scipy sparse matrix of shape (n_query, n_genes)
        Cells to measure, for example synthetic or held-out real cells.
    n_components : int, default=30
        Principal components of the training cells used as coordinates.
    random_state : int, RandomState instance or None, default=None
        Seed for the PCA solver (only used for large inputs).

    Returns
    -------
    ndarray of shape (n_query,)
        Euclidean distance to the closest training cell.

    Examples
    --------
    >>> import numpy as np
    >>> from scaug.metrics import distance_to_closest_record
    >>> rng = np.random.default_rng(0)
    >>> train = rng.normal(size=(100, 10))
    >>> distance_to_closest_record(train, train[:3]).round(6)
    array([0., 0., 0.])
    """
    train, query = _check_pair(train, query, names=("train", "query"), min_rows=1)
    if train.shape[0] < 2:
        raise ValueError(f"`train` must have at least 2 cells (rows); got {train.shape[0]}.")
    mean, components = _fit_pca(train, n_components, random_state, name="train")
    zt, zq = _project(train, mean, components), _project(query, mean, components)
    return _nearest_distance(zq, zt)


@validate_params(
    {
        "train": _MATRIX,
        "synthetic": _MATRIX,
        "holdout": _MATRIX,
        "n_components": _N_COMPONENTS,
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def dcr_ratio(train, synthetic, holdout, *, n_components=30, random_state=None):
    """Median distance to closest training cell: synthetic cells over held-out real cells.

    Held-out real cells show how far a genuinely new cell of the population lies from the
    training cells. A healthy generator gives a ratio near 1; a ratio well below 1 means
    synthetic cells sit closer to training cells than new real cells do, i.e. the generator
    copies (memorises) training cells; exact copies give 0. A ratio well above 1 means the
    synthetic cells are off the data. Pair with :func:`c2st_auc`, which rewards copies.

    Parameters
    ----------
    train : array-like or scipy sparse matrix of shape (n_train, n_genes)
        Real cells the generator was fitted on.
    synthetic : array-like or scipy sparse matrix of shape (n_synthetic, n_genes)
        Generated cells.
    holdout : array-like or scipy sparse matrix of shape (n_holdout, n_genes)
        Real cells of the same population that the generator never saw.
    n_components : int, default=30
        Principal components of the training cells used as coordinates.
    random_state : int, RandomState instance or None, default=None
        Seed for the PCA solver (only used for large inputs).

    Returns
    -------
    float
        ``median(DCR(synthetic)) / median(DCR(holdout))``; NaN, with a
        :class:`DegenerateInputWarning`, when the held-out median is 0 (held-out cells duplicate
        training cells, so no reference exists). Training cells that are all identical are
        refused.

    Examples
    --------
    >>> import numpy as np
    >>> from scaug.metrics import dcr_ratio
    >>> rng = np.random.default_rng(0)
    >>> train, holdout = rng.normal(size=(200, 10)), rng.normal(size=(100, 10))
    >>> dcr_ratio(train, train[:100], holdout)
    0.0
    >>> 0.8 < dcr_ratio(train, rng.normal(size=(100, 10)), holdout) < 1.25
    True
    """
    train, synthetic = _check_pair(train, synthetic, names=("train", "synthetic"), min_rows=1)
    train, holdout = _check_pair(train, holdout, names=("train", "holdout"), min_rows=1)
    if train.shape[0] < 2:
        raise ValueError(f"`train` must have at least 2 cells (rows); got {train.shape[0]}.")
    mean, components = _fit_pca(train, n_components, random_state, name="train")
    zt = _project(train, mean, components)
    d_syn = np.median(_nearest_distance(_project(synthetic, mean, components), zt))
    d_hold = np.median(_nearest_distance(_project(holdout, mean, components), zt))
    if d_hold == 0:
        _warn(
            "The median held-out cell is a copy of a training cell (distance 0), so there is "
            "no reference distance and dcr_ratio is NaN; pass held-out cells the generator "
            "never saw."
        )
        return float("nan")
    return float(d_syn / d_hold)


# ----------------------------------------------------------------------------------------------
# everything at once
# ----------------------------------------------------------------------------------------------
@validate_params(
    {
        "real": _MATRIX,
        "synthetic": _MATRIX,
        "counts": ["boolean"],
        "train": _OPTIONAL_MATRIX,
        "n_components": _N_COMPONENTS,
        "k": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def evaluate(real, synthetic, *, counts=True, train=None, n_components=30, k=5, random_state=None):
    """Run every fidelity metric and return a flat dict of named floats.

    ``real`` should be held-out real cells of the population the synthetic cells imitate (never
    the cells used for tuning). With ``counts=True`` the embedding metrics and gene statistics
    run on :func:`normalize_log1p` of the inputs and the library-size distance on the raw counts;
    with ``counts=False`` the inputs are taken as already log-normalised and the library-size
    distance is left out. The embedding metrics use their default PCA (pooled, balanced), so
    scores are comparable whether or not ``train`` is given.

    ``counts=True`` refuses input that is not raw counts (negative or non-whole values): data
    normalised already would be normalised a second time. ``counts=False`` warns when the input
    looks like raw counts (whole numbers above 1). The warnings of the metrics it runs
    (:class:`DegenerateInputWarning`) are passed on once each.

    Parameters
    ----------
    real, synthetic : array-like or scipy sparse matrix of shape (n_cells, n_genes)
        Real (held-out) and synthetic cells, same genes.
    counts : bool, default=True
        Whether the inputs are raw counts (non-negative whole numbers) or log-normalised values.
    train : array-like or scipy sparse matrix of shape (n_train, n_genes), optional
        The real cells the generator was trained on, in the same form as ``real``. When given,
        ``dcr_ratio`` is added, with ``real`` as the held-out reference.
    n_components : int, default=30
        Principal components for the embedding metrics.
    k : int, default=5
        Neighbour for :func:`knn_precision_recall`; reduced when a side has too few cells.
    random_state : int, RandomState instance or None, default=None
        Seed; the same seed gives the same dict.

    Returns
    -------
    dict of str to float
        Keys ``c2st_auc``, ``mmd_rbf``, ``energy_distance``, ``precision``, ``recall``,
        ``gene_mean_corr``, ``gene_var_corr``, ``zero_fraction_error``, then
        ``library_size_distance`` (``counts=True``) and ``dcr_ratio`` (``train`` given). A
        score that is undefined on the input (see the metric) is NaN with a warning; in
        particular ``dcr_ratio`` is NaN when the cells of ``train`` are all identical.

    Examples
    --------
    >>> import numpy as np
    >>> from scaug.metrics import evaluate
    >>> rng = np.random.default_rng(0)
    >>> mu = rng.gamma(0.5, 2.0, size=50)
    >>> real, synthetic = rng.poisson(mu, size=(100, 50)), rng.poisson(mu, size=(100, 50))
    >>> scores = evaluate(real, synthetic, random_state=0)
    >>> sorted(scores)[:3]
    ['c2st_auc', 'energy_distance', 'gene_mean_corr']
    >>> scores["c2st_auc"] < 0.7
    True
    """
    real, synthetic = _check_pair(real, synthetic)
    if train is not None:
        real, train = _check_pair(real, train, names=("real", "train"))
    inputs = {"real": real, "synthetic": synthetic, "train": train}
    inputs = {name: X for name, X in inputs.items() if X is not None}
    for name, X in inputs.items():
        if counts:
            _check_counts(X, name, "evaluate(counts=True)")
        elif _looks_like_counts(X):
            _warn(
                f"`{name}` looks like raw counts (every value a whole number, up to "
                f"{X.max():g}), but evaluate(counts=False) takes log-normalised values and does "
                "not normalise them; pass counts=True for raw counts."
            )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = _evaluate(real, synthetic, train, counts, n_components, k, random_state)
    seen = set()
    for w in caught:  # pass each warning of the metrics on once
        if (w.category, str(w.message)) not in seen:
            seen.add((w.category, str(w.message)))
            _warn(w.message, w.category)
    return scores


def _evaluate(real, synthetic, train, counts, n_components, k, random_state):
    """The metrics of :func:`evaluate` on checked input."""
    rng = check_random_state(random_state)
    seeds = rng.randint(np.iinfo(np.int32).max, size=5)

    if counts:
        log_real, log_syn = normalize_log1p(real), normalize_log1p(synthetic)
        log_train = None if train is None else normalize_log1p(train)
    else:
        log_real, log_syn, log_train = real, synthetic, train

    k_eff = max(1, min(k, real.shape[0] - 1, synthetic.shape[0] - 1))
    precision, recall = knn_precision_recall(
        log_real, log_syn, k=k_eff, n_components=n_components, random_state=seeds[3]
    )
    scores = {
        "c2st_auc": c2st_auc(log_real, log_syn, n_components=n_components, random_state=seeds[0]),
        "mmd_rbf": mmd_rbf(log_real, log_syn, n_components=n_components, random_state=seeds[1]),
        "energy_distance": energy_distance(
            log_real, log_syn, n_components=n_components, random_state=seeds[2]
        ),
        "precision": precision,
        "recall": recall,
        "gene_mean_corr": gene_mean_correlation(log_real, log_syn),
        "gene_var_corr": gene_variance_correlation(log_real, log_syn),
        "zero_fraction_error": zero_fraction_error(real, synthetic),
    }
    if counts:
        scores["library_size_distance"] = library_size_distance(real, synthetic)
    if train is not None and _all_rows_equal(log_train):
        _warn(
            f"All {train.shape[0]} cells of `train` are identical, so distances to the closest "
            "training cell have no PCA to be measured in; dcr_ratio is NaN."
        )
        scores["dcr_ratio"] = float("nan")
    elif train is not None:
        scores["dcr_ratio"] = dcr_ratio(
            log_train, log_syn, log_real, n_components=n_components, random_state=seeds[4]
        )
    return scores


# ----------------------------------------------------------------------------------------------
# differential expression: marker genes of a type
# ----------------------------------------------------------------------------------------------
_LOGFC_CONSTRAINTS = {
    "counts": ["boolean"],
    "target_sum": [Interval(Real, 0, None, closed="neither")],
    "pseudocount": [Interval(Real, 0, None, closed="neither")],
}


def _log_normalised(X, name, counts, target_sum):
    """Checked ``X`` as log1p of counts normalised to ``target_sum`` per cell."""
    X = _check_matrix(X, name, min_rows=1)
    if counts:
        _check_counts(X, name, "counts=True")
        return normalize_log1p(X, target_sum=target_sum)
    _check_nonnegative(X, name, "counts=False (log-normalised values)")
    return X


def _logfc(group, rest, pseudocount):
    """scanpy's log2 fold change of log-normalised ``group`` over ``rest``."""
    mean_group = np.asarray(group.mean(axis=0)).ravel()
    mean_rest = np.asarray(rest.mean(axis=0)).ravel()
    return np.log2((np.expm1(mean_group) + pseudocount) / (np.expm1(mean_rest) + pseudocount))


@validate_params(
    {"group": _MATRIX, "rest": _MATRIX, **_LOGFC_CONSTRAINTS},
    prefer_skip_nested_validation=True,
)
def log_fold_change(group, rest, *, counts=True, target_sum=1e4, pseudocount=0.1):
    """Per-gene log2 fold change of a group of cells over the rest, in scanpy's convention.

    As :func:`scanpy.tl.rank_genes_groups` computes ``logfoldchanges``: on log-normalised
    values (``log1p`` of counts normalised to ``target_sum`` per cell), the mean of each gene in
    each set, back-transformed with ``expm1`` and compared as
    ``log2((expm1(mean_group) + pseudocount) / (expm1(mean_rest) + pseudocount))``.

    Parameters
    ----------
    group, rest : array-like or scipy sparse matrix of shape (n_cells, n_genes)
        Cells of the group (a cell type) and of the rest, same genes.
    counts : bool, default=True
        Whether the inputs are raw counts, normalised here, or already log-normalised values.
    target_sum : float, default=1e4
        Counts per cell after normalisation (``counts=True`` only).
    pseudocount : float, default=0.1
        Added to both back-transformed means. scanpy adds 1e-9, which sends a gene absent
        from one side to about +-30 whatever its level on the other; 0.1 (a tenth of a count
        per 10,000) bounds such genes by their expression, so that rankings and correlations of
        fold changes are not decided by genes that were merely not sampled.

    Returns
    -------
    ndarray of shape (n_genes,)
        log2 fold changes; positive where the group expresses the gene more.

    See Also
    --------
    marker_agreement : The fold changes recovered from synthetic cells vs from real ones.

    Examples
    --------
    >>> import numpy as np
    >>> from scaug.metrics import log_fold_change
    >>> group = np.array([[3.0, 0.0], [3.0, 0.0]])   # already log1p-normalised
    >>> rest = np.array([[1.0, 1.0], [1.0, 1.0]])
    >>> log_fold_change(group, rest, counts=False).round(3)
    array([ 3.399, -4.185])
    """
    group, rest = _check_pair(group, rest, names=("group", "rest"), min_rows=1)
    group = _log_normalised(group, "group", counts, target_sum)
    rest = _log_normalised(rest, "rest", counts, target_sum)
    return _logfc(group, rest, float(pseudocount))


@validate_params(
    {
        "real_type": _MATRIX,
        "real_rest": _MATRIX,
        "synthetic_type": _MATRIX,
        "n_markers": [Interval(Integral, 2, None, closed="left")],
        **_LOGFC_CONSTRAINTS,
    },
    prefer_skip_nested_validation=True,
)
def marker_agreement(real_type, real_rest, synthetic_type, *, n_markers=50, counts=True,
                     target_sum=1e4, pseudocount=0.1):
    """How well synthetic cells of a type recover its marker genes, judged on real cells.

    The log2 fold changes of the type against the rest (:func:`log_fold_change`) are computed
    twice against the same ``real_rest``: from held-out real cells of the type and from
    synthetic cells of it. The markers are the ``n_markers`` genes of largest absolute fold
    change in the real cells (differentially expressed either way). Generators that blur a type
    toward the others, or that copy a few training cells, lose this differential-expression
    signal even when their cells look realistic one by one.

    Parameters
    ----------
    real_type : array-like or scipy sparse matrix of shape (n_real, n_genes)
        Real cells of the type that the generator never saw (held-out cells).
    real_rest : array-like or scipy sparse matrix of shape (n_rest, n_genes)
        Real cells of the other types (held-out or not: both fold changes use them).
    synthetic_type : array-like or scipy sparse matrix of shape (n_synthetic, n_genes)
        Synthetic cells of the type.
    n_markers : int, default=50
        Markers to compare; all genes when there are fewer.
    counts, target_sum, pseudocount
        As in :func:`log_fold_change`.

    Returns
    -------
    dict of str to float
        - ``logfc_correlation``: Pearson correlation of the real and synthetic fold changes over
          the markers (1 ideal); NaN, with a :class:`DegenerateInputWarning`, when either is the
          same for every marker.
        - ``logfc_slope``: least-squares slope through the origin of the synthetic fold changes
          on the real ones over the markers: 1 keeps the markers' strength, below 1 attenuates
          it (cells pulled toward the rest), 0 loses it.
        - ``marker_recovery``: fraction of the real top ``n_markers`` genes that are also among
          the synthetic top ``n_markers`` (by absolute fold change).
        - ``sign_agreement``: fraction of the markers whose synthetic fold change has the sign of
          the real one.
        - ``n_markers``: the number of markers compared.

    Examples
    --------
    >>> import numpy as np
    >>> from scaug.metrics import marker_agreement
    >>> rng = np.random.default_rng(0)
    >>> base = rng.gamma(1.0, 2.0, size=100)
    >>> marked = base.copy()
    >>> marked[:10] *= 8                                  # genes 0-9 mark the type
    >>> real_type, rest = rng.poisson(marked, (60, 100)), rng.poisson(base, (300, 100))
    >>> good = marker_agreement(real_type, rest, rng.poisson(marked, (60, 100)), n_markers=10)
    >>> [round(good[k], 2) for k in ("logfc_correlation", "logfc_slope", "marker_recovery")]
    [1.0, 0.99, 0.9]
    >>> blurred = rng.poisson((marked + base) / 2, (60, 100))   # halfway to the rest
    >>> round(marker_agreement(real_type, rest, blurred, n_markers=10)["logfc_slope"], 2)
    0.84
    """
    real_type, real_rest = _check_pair(real_type, real_rest, names=("real_type", "real_rest"),
                                       min_rows=1)
    real_type, synthetic_type = _check_pair(real_type, synthetic_type,
                                            names=("real_type", "synthetic_type"), min_rows=1)
    rest = _log_normalised(real_rest, "real_rest", counts, target_sum)
    lfc_real = _logfc(_log_normalised(real_type, "real_type", counts, target_sum), rest,
                      float(pseudocount))
    lfc_syn = _logfc(_log_normalised(synthetic_type, "synthetic_type", counts, target_sum), rest,
                     float(pseudocount))
    k = min(int(n_markers), lfc_real.size)
    top_real = np.argsort(-np.abs(lfc_real), kind="stable")[:k]
    top_syn = np.argsort(-np.abs(lfc_syn), kind="stable")[:k]
    a, b = lfc_real[top_real], lfc_syn[top_real]
    constant = [name for name, v in (("real", a), ("synthetic", b)) if _constant(v)]
    if constant:
        _warn(
            f"The {' and '.join(constant)} fold change is the same for all {k} markers, so their "
            "correlation is undefined: NaN. Markers need fold changes that differ (more genes, "
            "or cells of the type that differ from the rest)."
        )
        correlation = float("nan")
    else:
        correlation = _pearson(a, b)
    return {
        "logfc_correlation": correlation,
        "logfc_slope": float(a @ b / (a @ a)) if a @ a > 0 else float("nan"),
        "marker_recovery": len(np.intersect1d(top_real, top_syn)) / k,
        "sign_agreement": float(np.mean(np.sign(a) == np.sign(b))),
        "n_markers": k,
    }
