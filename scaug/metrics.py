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

Ideal values: ``c2st_auc`` 0.5; ``mmd_rbf``, ``energy_distance``, ``zero_fraction_error`` and
``library_size_distance`` 0; gene correlations, precision and recall 1; ``dcr_ratio`` about 1
(much lower means synthetic cells are copies of training cells).
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp
from scipy.spatial.distance import cdist
from scipy.stats import wasserstein_distance
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state

from .preprocessing import NormalizeLog1p

__all__ = [
    "c2st_auc",
    "dcr_ratio",
    "distance_to_closest_record",
    "energy_distance",
    "evaluate",
    "gene_mean_correlation",
    "gene_variance_correlation",
    "knn_precision_recall",
    "library_size_distance",
    "mmd_rbf",
    "normalize_log1p",
    "pca_embed",
    "zero_fraction_error",
]

# Above this many entries in the real matrix, PCA runs on it without densifying (ARPACK).
_DENSE_PCA_MAX_ENTRIES = 10_000_000
_BANDWIDTH_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------
def _check_matrix(X, name, *, min_rows=2):
    """Return ``X`` as a float64 ndarray or CSR matrix, or raise a ValueError saying why not."""
    if X is None:
        raise ValueError(f"`{name}` is None; expected a cells x genes matrix.")
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


def _check_positive_int(value, name, *, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def _check_nonnegative(X, name, what):
    values = X.data if sp.issparse(X) else X
    if values.size and values.min() < 0:
        raise ValueError(
            f"`{name}` contains negative values (min {values.min():g}); {what} expects "
            "non-negative counts."
        )


# ----------------------------------------------------------------------------------------------
# sparse-aware statistics
# ----------------------------------------------------------------------------------------------
def _gene_mean_var(X):
    """Per-gene mean and (population, ddof=0) variance; sparse-aware."""
    if sp.issparse(X):
        mean = np.asarray(X.mean(axis=0)).ravel()
        mean_sq = np.asarray(X.multiply(X).mean(axis=0)).ravel()
        var = np.maximum(mean_sq - mean**2, 0.0)
        return mean, var
    return X.mean(axis=0), X.var(axis=0)


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
    if not (isinstance(target_sum, numbers.Real) and target_sum > 0):
        raise ValueError(f"`target_sum` must be a positive number; got {target_sum!r}.")
    return NormalizeLog1p(target_sum=target_sum).fit_transform(X)


def _fit_pca(X, n_components, random_state):
    """Fit PCA on ``X``; return (mean, components) with components of shape (k, n_genes)."""
    n_cells, n_genes = X.shape
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


def _embed(real, synthetic, n_components, reference, max_cells, rng):
    """Balanced subsamples of both sides, projected on the PCA of ``reference`` or of both."""
    m = min(real.shape[0], synthetic.shape[0])
    if max_cells is not None:
        m = min(m, max_cells)
    real, synthetic = _subsample(real, m, rng), _subsample(synthetic, m, rng)
    fit_on = _vstack(real, synthetic) if reference is None else reference
    mean, components = _fit_pca(fit_on, n_components, rng)
    return _project(real, mean, components), _project(synthetic, mean, components)


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
    n_components = _check_positive_int(n_components, "n_components")
    reference = _check_reference(reference, real.shape[1])
    rng = check_random_state(random_state)
    if reference is None:
        m = min(real.shape[0], synthetic.shape[0])
        reference = _vstack(_subsample(real, m, rng), _subsample(synthetic, m, rng))
    mean, components = _fit_pca(reference, n_components, rng)
    return _project(real, mean, components), _project(synthetic, mean, components)


# ----------------------------------------------------------------------------------------------
# distribution-level metrics in PCA space
# ----------------------------------------------------------------------------------------------
_CLASSIFIERS = ("random_forest", "knn", "logistic")


def _make_classifier(classifier, seed):
    if classifier is None or classifier == "random_forest":
        return RandomForestClassifier(n_estimators=100, min_samples_leaf=2, random_state=seed)
    if isinstance(classifier, str):
        if classifier == "knn":
            return make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=10))
        if classifier == "logistic":
            return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        raise ValueError(
            f"`classifier` must be None, one of {_CLASSIFIERS}, or a scikit-learn classifier; "
            f"got {classifier!r}."
        )
    if not hasattr(classifier, "fit"):
        raise ValueError(
            f"`classifier` must be None, one of {_CLASSIFIERS}, or a scikit-learn classifier with "
            f"`fit`; got an object of type {type(classifier).__name__}."
        )
    return clone(classifier)


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
        Number of folds; reduced to the number of cells per class when that is smaller.
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
    """
    real, synthetic, reference, n_components, max_cells = _check_embedding_args(
        real, synthetic, reference, n_components, max_cells
    )
    cv = _check_positive_int(cv, "cv", minimum=2)
    rng = check_random_state(random_state)
    seed = int(rng.randint(np.iinfo(np.int32).max))
    model = _make_classifier(classifier, seed)
    zr, zs = _embed(real, synthetic, n_components, reference, max_cells, rng)
    n = zr.shape[0]
    X = np.vstack([zr, zs])
    y = np.r_[np.zeros(n, dtype=int), np.ones(n, dtype=int)]
    folds = StratifiedKFold(n_splits=min(cv, n), shuffle=True, random_state=seed)
    scores = cross_val_score(model, X, y, cv=folds, scoring="roc_auc")
    return float(np.mean(scores))


def _check_embedding_args(real, synthetic, reference, n_components, max_cells):
    real, synthetic = _check_pair(real, synthetic)
    reference = _check_reference(reference, real.shape[1])
    n_components = _check_positive_int(n_components, "n_components")
    if max_cells is not None:
        max_cells = _check_positive_int(max_cells, "max_cells", minimum=2)
    return real, synthetic, reference, n_components, max_cells


def _embedded_samples(real, synthetic, n_components, reference, max_cells, random_state):
    real, synthetic, reference, n_components, max_cells = _check_embedding_args(
        real, synthetic, reference, n_components, max_cells
    )
    rng = check_random_state(random_state)
    zr, zs = _embed(real, synthetic, n_components, reference, max_cells, rng)
    return zr, zs, rng


def _offdiag_mean(K):
    n = K.shape[0]
    return (K.sum() - np.trace(K)) / (n * (n - 1))


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
    bandwidths : sequence of float or None, default=None
        Kernel widths ``sigma`` in PCA units. None: the median pairwise distance of the pooled
        (subsampled) cells times (0.25, 0.5, 1, 2, 4).
    max_cells : int or None, default=2000
        Both sides are randomly subsampled to ``min(n_real, n_synthetic, max_cells)`` cells
        (cost is quadratic).
    random_state : int, RandomState instance or None, default=None
        Seed for subsampling.

    Returns
    -------
    float
        Unbiased estimate of MMD^2.

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
        Energy distance.

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
        out[start : start + chunk] = (d <= radii[None, :]).any(axis=1)
    return out


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
    k = _check_positive_int(k, "k")
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
    (mr, vr), (ms, vs) = _gene_mean_var(real), _gene_mean_var(synthetic)
    a, b = (mr, ms) if which == "mean" else (vr, vs)
    if log:
        if min(a.min(), b.min()) <= -1:
            raise ValueError(
                f"log=True takes log1p of the per-gene {which}s, but some are <= -1 (min "
                f"{min(a.min(), b.min()):g}); pass log=False for data that can be negative."
            )
        a, b = np.log1p(a), np.log1p(b)
    return _pearson(a, b)


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
        Correlation in [-1, 1]; 1 is ideal. NaN when the means are constant across genes in
        either sample (the correlation is undefined).

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
        Correlation in [-1, 1]; 1 is ideal. NaN when the variances are constant across genes in
        either sample.

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
        In [0, 1]; 0 is ideal.

    Examples
    --------
    >>> import numpy as np
    >>> from scaug.metrics import zero_fraction_error
    >>> zero_fraction_error(np.array([[0, 1], [0, 2]]), np.array([[1, 1], [0, 3]]))
    0.25
    """
    real, synthetic = _check_pair(real, synthetic)
    return float(np.mean(np.abs(_zero_fraction(real) - _zero_fraction(synthetic))))


def library_size_distance(real, synthetic):
    """Wasserstein-1 distance between the log1p library sizes of real and synthetic cells.

    Library size is the total count of a cell; comparing ``log1p`` of it makes the distance
    roughly a typical fold difference in sequencing depth (0.1 is about 10 %).

    Parameters
    ----------
    real, synthetic : array-like or scipy sparse matrix of shape (n_cells, n_genes)
        Raw counts (non-negative) of real and synthetic cells, same genes. Normalised data has
        equal totals by construction and makes this metric meaningless.

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
    _check_nonnegative(real, "real", "library_size_distance")
    _check_nonnegative(synthetic, "synthetic", "library_size_distance")
    return float(
        wasserstein_distance(np.log1p(_library_size(real)), np.log1p(_library_size(synthetic)))
    )


# ----------------------------------------------------------------------------------------------
# memorisation
# ----------------------------------------------------------------------------------------------
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
    n_components = _check_positive_int(n_components, "n_components")
    mean, components = _fit_pca(train, n_components, random_state)
    zt, zq = _project(train, mean, components), _project(query, mean, components)
    return _nearest_distance(zq, zt)


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
        ``median(DCR(synthetic)) / median(DCR(holdout))``; NaN when the held-out median is 0
        (held-out cells duplicate training cells, so no reference exists).

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
    n_components = _check_positive_int(n_components, "n_components")
    mean, components = _fit_pca(train, n_components, random_state)
    zt = _project(train, mean, components)
    d_syn = np.median(_nearest_distance(_project(synthetic, mean, components), zt))
    d_hold = np.median(_nearest_distance(_project(holdout, mean, components), zt))
    if d_hold == 0:
        return float("nan")
    return float(d_syn / d_hold)


# ----------------------------------------------------------------------------------------------
# everything at once
# ----------------------------------------------------------------------------------------------
def evaluate(real, synthetic, *, counts=True, train=None, n_components=30, k=5, random_state=None):
    """Run every fidelity metric and return a flat dict of named floats.

    ``real`` should be held-out real cells of the population the synthetic cells imitate (never
    the cells used for tuning). With ``counts=True`` the embedding metrics and gene statistics
    run on :func:`normalize_log1p` of the inputs and the library-size distance on the raw counts;
    with ``counts=False`` the inputs are taken as already log-normalised and the library-size
    distance is left out. The embedding metrics use their default PCA (pooled, balanced), so
    scores are comparable whether or not ``train`` is given.

    Parameters
    ----------
    real, synthetic : array-like or scipy sparse matrix of shape (n_cells, n_genes)
        Real (held-out) and synthetic cells, same genes.
    counts : bool, default=True
        Whether the inputs are raw counts.
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
        ``library_size_distance`` (``counts=True``) and ``dcr_ratio`` (``train`` given).

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
        train = _check_matrix(train, "train")
        if train.shape[1] != real.shape[1]:
            raise ValueError(
                f"`train` has {train.shape[1]} genes (columns) but `real` has {real.shape[1]}; "
                "both must have the same genes in the same order."
            )
    k = _check_positive_int(k, "k")
    rng = check_random_state(random_state)
    seeds = rng.randint(np.iinfo(np.int32).max, size=5)

    if counts:
        _check_nonnegative(real, "real", "evaluate(counts=True)")
        _check_nonnegative(synthetic, "synthetic", "evaluate(counts=True)")
        log_real, log_syn = normalize_log1p(real), normalize_log1p(synthetic)
        log_train = None
        if train is not None:
            _check_nonnegative(train, "train", "evaluate(counts=True)")
            log_train = normalize_log1p(train)
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
    if train is not None:
        scores["dcr_ratio"] = dcr_ratio(
            log_train, log_syn, log_real, n_components=n_components, random_state=seeds[4]
        )
    return scores
