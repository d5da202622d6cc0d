"""Property-based tests (hypothesis) of scaug.metrics.

Over shapes (down to 2 cells and 1 gene), sparsity (all-zero genes and cells included), dtypes
(unsigned, signed, float32, float64, bool) and containers (ndarray, CSR, CSC, DataFrame): every
metric gives the same value whatever the container and dtype, stays in its range, scores
identical samples ideally, and never returns NaN without a :class:`DegenerateInputWarning`.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from scaug import metrics
from scaug.metrics import DegenerateInputWarning

FAST = settings(max_examples=40, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SLOW = settings(FAST, max_examples=8)  # the classifier two-sample test fits forests
DTYPES = [np.uint8, np.int32, np.int64, np.float32, np.float64]
CONTAINERS = ["ndarray", "csr", "csc", "dataframe"]

# Degenerate input is generated on purpose; _call records the warnings where they matter.
pytestmark = pytest.mark.filterwarnings("ignore::scaug.metrics.DegenerateInputWarning")


@pytest.fixture(autouse=True)
def _single_blas_thread():
    with threadpool_limits(limits=1):
        yield


def _counts(rng, n_cells, n_genes, density):
    X = rng.poisson(rng.gamma(0.7, 3.0, size=n_genes), size=(n_cells, n_genes))
    return X * (rng.random((n_cells, n_genes)) < density)


@st.composite
def count_pairs(draw, min_cells=2, max_cells=14):
    """Two count matrices with the same genes, as float64 ndarrays, and a seed."""
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    n_genes = draw(st.integers(1, 7))
    density = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    a = _counts(rng, draw(st.integers(min_cells, max_cells)), n_genes, density)
    b = _counts(rng, draw(st.integers(min_cells, max_cells)), n_genes, density)
    return a.astype(np.float64), b.astype(np.float64), seed


def _as(X, container, dtype):
    if dtype is np.bool_:
        X = X > 0
    X = X.astype(dtype)
    if container == "csr":
        return sp.csr_matrix(X)
    if container == "csc":
        return sp.csc_matrix(X)
    if container == "dataframe":
        return pd.DataFrame(X, columns=[f"g{i}" for i in range(X.shape[1])])
    return X


def _call(fn, *args, **kwargs):
    """(value, warnings of scaug) of a metric call; NaN must come with a warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = fn(*args, **kwargs)
    degenerate = [w for w in caught if issubclass(w.category, DegenerateInputWarning)]
    parts = value.values() if isinstance(value, dict) else value if isinstance(value, tuple) else [value]
    if any(np.any(np.isnan(np.asarray(part, dtype=float))) for part in parts):
        assert degenerate, f"{fn.__name__} returned NaN without a DegenerateInputWarning"
    return value, degenerate


def _same(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9, equal_nan=True)


# Metrics that need no more than 2 cells per side; c2st_auc is tested apart (it is slow).
CHEAP = {
    "mmd_rbf": lambda a, b: metrics.mmd_rbf(a, b, random_state=0),
    "energy_distance": lambda a, b: metrics.energy_distance(a, b, random_state=0),
    "knn_precision_recall": lambda a, b: metrics.knn_precision_recall(a, b, k=1, random_state=0),
    "gene_mean_correlation": metrics.gene_mean_correlation,
    "gene_variance_correlation": metrics.gene_variance_correlation,
    "zero_fraction_error": metrics.zero_fraction_error,
    "library_size_distance": metrics.library_size_distance,
    "pca_embed": lambda a, b: metrics.pca_embed(a, b, n_components=3, random_state=0),
}


@FAST
@given(count_pairs(), st.sampled_from(CONTAINERS), st.sampled_from(DTYPES))
def test_every_container_and_dtype_gives_the_same_value(pair, container, dtype):
    a, b, _ = pair
    for name, fn in CHEAP.items():
        expected, _ = _call(fn, a, b)
        got, _ = _call(fn, _as(a, container, dtype), _as(b, container, dtype))
        if name == "pca_embed":  # component signs are arbitrary; distances are not
            for e, g in zip(expected, got, strict=True):
                _same(np.abs(e), np.abs(g))
        else:
            _same(got, expected)


@FAST
@given(count_pairs(), st.sampled_from(CONTAINERS))
def test_bool_input_is_read_as_zero_one(pair, container):
    a, b, _ = pair
    expected, _ = _call(metrics.zero_fraction_error, a > 0, b > 0)
    got, _ = _call(metrics.zero_fraction_error, _as(a, container, np.bool_), b > 0)
    _same(got, expected)


@FAST
@given(count_pairs())
def test_values_stay_in_range_and_nan_is_never_silent(pair):
    a, b, _ = pair
    log_a, log_b = metrics.normalize_log1p(a), metrics.normalize_log1p(b)
    for fn in (metrics.gene_mean_correlation, metrics.gene_variance_correlation):
        value, _ = _call(fn, log_a, log_b)
        assert np.isnan(value) or -1.0 <= value <= 1.0
        assert _call(fn, log_b, log_a)[0] == pytest.approx(value, nan_ok=True)  # symmetric
    value, _ = _call(metrics.zero_fraction_error, a, b)
    assert 0.0 <= value <= 1.0 and value == metrics.zero_fraction_error(b, a)
    assert _call(metrics.library_size_distance, a, b)[0] >= 0.0
    precision, recall = _call(metrics.knn_precision_recall, log_a, log_b, k=1, random_state=0)[0]
    assert 0.0 <= precision <= 1.0 and 0.0 <= recall <= 1.0
    assert np.isfinite(_call(metrics.mmd_rbf, log_a, log_b, random_state=0)[0])
    assert np.isfinite(_call(metrics.energy_distance, log_a, log_b, random_state=0)[0])


@FAST
@given(count_pairs())
def test_identical_samples_score_ideally(pair):
    a, _, _ = pair
    log_a = metrics.normalize_log1p(a)
    assert _call(metrics.zero_fraction_error, a, a)[0] == 0.0
    assert _call(metrics.library_size_distance, a, a)[0] == 0.0
    assert _call(metrics.knn_precision_recall, log_a, log_a, k=1)[0] == (1.0, 1.0)
    assert _call(metrics.energy_distance, log_a, log_a)[0] <= 1e-9
    assert _call(metrics.mmd_rbf, log_a, log_a)[0] <= 1e-9
    corr, _ = _call(metrics.gene_mean_correlation, log_a, log_a)
    assert np.isnan(corr) or corr == pytest.approx(1.0)


@FAST
@given(count_pairs(), count_pairs())
def test_dcr_ratio_is_defined_or_refused_clearly(train_pair, other):
    train, synthetic, _ = train_pair
    holdout = other[0][:, : train.shape[1]] if other[0].shape[1] >= train.shape[1] else None
    if holdout is None:
        holdout = train[::-1] + 1
    try:
        value, _ = _call(metrics.dcr_ratio, train, synthetic, holdout)
    except ValueError as exc:  # cells all identical: the message names the argument
        assert "`train`" in str(exc)
        return
    assert np.isnan(value) or value >= 0.0
    copies, _ = _call(metrics.dcr_ratio, train, train, holdout)
    assert np.isnan(copies) or copies == 0.0


@SLOW
@given(
    count_pairs(max_cells=12),
    st.sampled_from(CONTAINERS),
    st.sampled_from(DTYPES),
    st.sampled_from([None, "logistic", "knn"]),
)
def test_c2st_of_identical_samples_is_one_half(pair, container, dtype, classifier):
    a, _, seed = pair
    X = _as(a, container, dtype)
    shuffled = _as(a[np.random.default_rng(seed).permutation(len(a))], container, dtype)
    for other in (X, shuffled):
        value, _ = _call(metrics.c2st_auc, X, other, classifier=classifier, random_state=seed)
        assert value == pytest.approx(0.5, abs=1e-12)


@SLOW
@given(count_pairs(max_cells=12), st.sampled_from(CONTAINERS))
def test_c2st_is_in_range_and_container_free(pair, container):
    a, b, seed = pair
    expected, _ = _call(metrics.c2st_auc, a, b, classifier="logistic", random_state=seed)
    assert np.isnan(expected) or 0.0 <= expected <= 1.0
    got, _ = _call(metrics.c2st_auc, _as(a, container, np.float64), _as(b, container, np.int64),
                   classifier="logistic", random_state=seed)
    _same(got, expected)


@settings(SLOW, max_examples=4)
@given(count_pairs(max_cells=10))
def test_evaluate_returns_floats_on_any_counts(pair):
    a, b, seed = pair
    scores, _ = _call(metrics.evaluate, a, b, train=b, random_state=seed)
    assert all(isinstance(v, float) for v in scores.values())
    for key, value in scores.items():
        assert not np.isnan(value) or key in ("gene_mean_corr", "gene_var_corr", "c2st_auc",
                                              "dcr_ratio"), key
