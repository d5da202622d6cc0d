import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from numpy.testing import assert_allclose
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import check_param_validation, parametrize_with_checks

from scaug.preprocessing import NormalizeLog1p


@pytest.fixture
def counts():
    rng = np.random.default_rng(0)
    X = rng.poisson(rng.gamma(0.5, 4.0, size=(30, 12))).astype(np.float64)
    X[3] = 0.0  # a cell with no counts
    return X


def scanpy_reference(X, target_sum):
    adata = ad.AnnData(X.copy())
    sc.pp.normalize_total(adata, target_sum=target_sum)
    sc.pp.log1p(adata)
    return adata.X.toarray() if sp.issparse(adata.X) else adata.X


@pytest.mark.filterwarnings("ignore:Some cells have zero counts:UserWarning")
@pytest.mark.parametrize("container", [np.asarray, sp.csr_matrix, sp.csc_matrix, sp.csr_array])
@pytest.mark.parametrize("target_sum", [1e4, 1.0, None])
def test_matches_scanpy(counts, container, target_sum):
    X = container(counts)
    expected = scanpy_reference(sp.csr_matrix(counts), target_sum)

    Xt = NormalizeLog1p(target_sum=target_sum).fit_transform(X)

    assert type(Xt) is type(X)
    if sp.issparse(X):
        assert Xt.format == X.format
        Xt = Xt.toarray()
    assert_allclose(Xt, expected, rtol=1e-6, atol=1e-7)
    assert_allclose(Xt[3], 0.0)


def test_sparse_stays_sparse_and_input_untouched(counts):
    X = sp.csr_matrix(counts)
    before = X.copy()

    Xt = NormalizeLog1p().fit_transform(X)

    assert sp.issparse(Xt) and Xt.format == "csr"
    assert Xt.nnz == X.nnz
    assert (X != before).nnz == 0
    dense = counts.copy()
    NormalizeLog1p().fit_transform(dense)
    assert_allclose(dense, counts)


@pytest.mark.parametrize("container", [np.asarray, sp.csr_matrix])
def test_float32_kept(counts, container):
    X = container(counts.astype(np.float32))
    Xt = NormalizeLog1p().fit_transform(X)
    assert Xt.dtype == np.float32
    assert NormalizeLog1p().fit_transform(counts.astype(int)).dtype == np.float64


def test_target_sum_none_is_median_of_nonzero_totals(counts):
    totals = counts.sum(axis=1)
    transformer = NormalizeLog1p(target_sum=None).fit(counts)
    assert transformer.target_sum_ == pytest.approx(np.median(totals[totals > 0]))
    # The median is learned in fit and reused on new data.
    Xt = transformer.transform(counts[:5])
    assert_allclose(np.expm1(Xt[[0, 1, 2, 4]]).sum(axis=1), transformer.target_sum_)
    assert NormalizeLog1p(target_sum=5.0).fit(counts).target_sum_ == 5.0


def test_all_zero_rows_with_median_raises():
    with pytest.raises(ValueError, match="every row of X has a total of zero"):
        NormalizeLog1p(target_sum=None).fit(np.zeros((3, 4)))


@pytest.mark.parametrize("container", [np.asarray, sp.csr_matrix])
def test_negative_values_raise(counts, container):
    X = counts.copy()
    X[0, 0] = -1.0
    with pytest.raises(ValueError, match="Negative values"):
        NormalizeLog1p().fit(container(X))
    transformer = NormalizeLog1p().fit(counts)
    with pytest.raises(ValueError, match="Negative values"):
        transformer.transform(container(X))


@pytest.mark.parametrize("target_sum", [0, -1.0, "1e4"])
def test_bad_target_sum_raises(counts, target_sum):
    with pytest.raises(ValueError, match="target_sum"):
        NormalizeLog1p(target_sum=target_sum).fit(counts)


def test_feature_names(counts):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(counts, columns=[f"g{i}" for i in range(counts.shape[1])])
    transformer = NormalizeLog1p().fit(df)
    assert transformer.n_features_in_ == counts.shape[1]
    assert list(transformer.feature_names_in_) == list(df.columns)
    assert list(transformer.get_feature_names_out()) == list(df.columns)


def test_in_pipeline(counts):
    y = np.arange(len(counts)) % 2
    pipe = make_pipeline(NormalizeLog1p(), LogisticRegression()).fit(sp.csr_matrix(counts), y)
    assert pipe.predict(sp.csr_matrix(counts)).shape == y.shape


@parametrize_with_checks([NormalizeLog1p(), NormalizeLog1p(target_sum=None)])
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.mark.parametrize("estimator", [NormalizeLog1p(), NormalizeLog1p(target_sum=None)])
def test_param_validation(estimator):
    # scikit-learn's own check: every bad type or value gets its message naming the parameter
    check_param_validation(type(estimator).__name__, estimator)


@pytest.mark.parametrize("target_sum", [True, float("inf"), float("nan")])
def test_flag_or_non_finite_target_sum_is_refused(counts, target_sum):
    with pytest.raises(InvalidParameterError, match="The 'target_sum' parameter of NormalizeLog1p"):
        NormalizeLog1p(target_sum=target_sum).fit(counts)
