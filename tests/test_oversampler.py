"""SCLDOverSampler: imbalanced-learn conventions, containers, model reuse, estimator checks."""

from collections import Counter

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from imblearn.over_sampling import SMOTE, RandomOverSampler
from imblearn.pipeline import Pipeline
from imblearn.utils.estimator_checks import (
    check_param_validation as imblearn_check_param_validation,
)
from imblearn.utils.estimator_checks import parametrize_with_checks as imblearn_checks
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.estimator_checks import check_param_validation as sklearn_check_param_validation
from sklearn.utils.estimator_checks import parametrize_with_checks as sklearn_checks

from scaug import SCLD, CellAutoencoder
from scaug.datasets import simulate
from scaug.oversampler import SCLDOverSampler
from scaug.preprocessing import NormalizeLog1p

TINY_SCLD = {"n_latent": 4, "ae_hidden": (16,), "width": 16, "depth": 1, "diffusion_steps": 5}
FAST = dict(max_epochs=1, n_sample_steps=3, screening=False, device="cpu", scld_params=TINY_SCLD)


def fast(**kw):
    return SCLDOverSampler(**{**FAST, "random_state": 0, **kw})


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # torch's thread pool spins badly when the cores are shared: 1 thread is ~100x faster here
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def counts():
    ad = simulate(n_cells=120, n_genes=20, n_types=3, n_markers=5, rare_sizes=(10,),
                  random_state=0)
    return ad.X.tocsr(), ad.obs["cell_type"].astype(str).to_numpy()


@pytest.fixture(scope="module")
def dense(counts):
    X, y = counts
    return X.toarray(), y


@pytest.fixture(scope="module")
def binary(dense):
    X, y = dense
    keep = y != "type_1"
    return X[keep], y[keep]


@pytest.fixture(scope="module")
def fitted_model(dense):
    X, y = dense
    return SCLD(max_epochs=2, random_state=0, verbose=False, device="cpu", n_sample_steps=3,
                screening=False, **TINY_SCLD).fit(X, y)


def check_output(X, y, X_res, y_res, sampler):
    n = X.shape[0]
    res = X_res.toarray() if sp.issparse(X_res) else np.asarray(X_res)
    orig = X.toarray() if sp.issparse(X) else np.asarray(X)
    np.testing.assert_array_equal(res[:n], orig)
    np.testing.assert_array_equal(np.asarray(y_res)[:n], np.asarray(y))
    assert sampler.n_synthetic_ == X_res.shape[0] - n
    assert sampler.synthetic_mask_.shape == (X_res.shape[0],)
    assert not sampler.synthetic_mask_[:n].any() and sampler.synthetic_mask_[n:].all()


# -- sampling_strategy ---------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["auto", "minority", "not minority", "not majority", "all",
                                      {"type_2": 40, "type_1": 60},
                                      lambda y: {"type_2": int((y == "type_2").sum()) * 3}])
def test_class_counts_match_imblearn(dense, strategy):
    X, y = dense
    sampler = fast(sampling_strategy=strategy)
    X_res, y_res = sampler.fit_resample(X, y)
    _, y_ros = RandomOverSampler(sampling_strategy=strategy, random_state=0).fit_resample(X, y)
    _, y_smote = SMOTE(sampling_strategy=strategy, random_state=0).fit_resample(X, y)
    assert Counter(y_res) == Counter(y_ros) == Counter(y_smote)
    check_output(X, y, X_res, y_res, sampler)
    # synthetic rows come class by class, in the order of sampling_strategy_
    expected = np.concatenate([[c] * n for c, n in sampler.sampling_strategy_.items()])
    np.testing.assert_array_equal(y_res[len(y):], expected)
    assert set(sampler.sampling_report_) == {c for c, n in sampler.sampling_strategy_.items() if n}


def test_float_strategy_binary(binary):
    X, y = binary
    sampler = fast(sampling_strategy=0.5)
    X_res, y_res = sampler.fit_resample(X, y)
    _, y_ros = RandomOverSampler(sampling_strategy=0.5, random_state=0).fit_resample(X, y)
    assert Counter(y_res) == Counter(y_ros)
    check_output(X, y, X_res, y_res, sampler)


def test_unlabelled_cells_are_kept_and_not_oversampled(dense):
    X, y = dense
    # integer labels, as scikit-learn's semi-supervised estimators expect them
    y = LabelEncoder().fit_transform(y)
    y_semi = y.copy()
    y_semi[np.flatnonzero(y == 0)[:50]] = -1  # 50 unlabelled: the largest group
    sampler = fast()
    X_res, y_res = sampler.fit_resample(X, y_semi)
    labelled = Counter(y[y_semi != -1])
    # 'auto' raises every labelled type to the largest labelled one; -1 is no class
    assert dict(sampler.sampling_strategy_) == {
        t: max(labelled.values()) - n for t, n in labelled.items() if n < max(labelled.values())}
    assert Counter(y_res) == {**{t: max(labelled.values()) for t in labelled}, -1: 50}
    np.testing.assert_array_equal(X_res[: len(y)], X)
    assert list(y_res[: len(y)]) == list(y_semi)
    assert sampler.model_.n_unlabelled_ == 50
    mixed = np.where(y_semi == -1, -1, dense[1].astype(object))  # string types and -1
    with pytest.raises(ValueError, match="mixes string class labels with -1"):
        fast().fit_resample(X, mixed)


def test_counts_in_counts_out_and_continuous_in_continuous_out(dense):
    X, y = dense
    X_res, _ = fast(sampling_strategy="minority").fit_resample(X, y)
    syn = X_res[len(y):]
    assert np.all(syn >= 0) and np.array_equal(syn, np.round(syn))
    X_log = NormalizeLog1p().fit_transform(X)
    X_res, _ = fast(sampling_strategy="minority").fit_resample(X_log, y)
    assert not np.array_equal(X_res[len(y):], np.round(X_res[len(y):]))


def test_nothing_to_generate_trains_nothing(dense, monkeypatch):
    X, y = dense
    keep = np.r_[np.flatnonzero(y == "type_0")[:10], np.flatnonzero(y == "type_2")]
    monkeypatch.setattr(SCLD, "fit", lambda *a, **k: pytest.fail("trained for nothing"))
    sampler = fast()
    X_res, y_res = sampler.fit_resample(X[keep], y[keep])
    np.testing.assert_array_equal(X_res, X[keep])
    assert sampler.model_ is None and sampler.n_synthetic_ == 0


# -- containers, dtypes, seeds ------------------------------------------------------------------
def test_containers_dtypes_and_seed(counts):
    X_csr, y = counts
    X = X_csr.toarray()
    X_ref, y_ref = fast().fit_resample(X, y)
    assert isinstance(X_ref, np.ndarray) and X_ref.dtype == X.dtype == np.float32

    X_sp, y_sp = fast().fit_resample(X_csr, y)
    assert sp.issparse(X_sp) and X_sp.format == "csr" and X_sp.dtype == np.float32
    np.testing.assert_allclose(X_sp.toarray(), X_ref)

    X_csc, _ = fast().fit_resample(X_csr.tocsc(), y)
    assert X_csc.format == "csc"

    cols = [f"gene_{i}" for i in range(X.shape[1])]
    df, ys = pd.DataFrame(X, columns=cols), pd.Series(y, name="cell_type")
    sampler = fast()
    X_df, y_s = sampler.fit_resample(df, ys)
    assert isinstance(X_df, pd.DataFrame) and list(X_df.columns) == cols
    assert isinstance(y_s, pd.Series) and y_s.name == "cell_type"
    np.testing.assert_allclose(X_df.to_numpy(), X_ref)
    np.testing.assert_array_equal(sampler.model_.feature_names_in_, cols)

    X_list, y_list = fast().fit_resample(X.tolist(), y.tolist())
    assert isinstance(X_list, list) and isinstance(y_list, list)
    np.testing.assert_allclose(np.asarray(X_list), X_ref)
    assert y_list == list(y_ref)

    X64, _ = fast().fit_resample(X.astype(np.float64), y)
    assert X64.dtype == np.float64
    X_again, _ = fast().fit_resample(X, y)
    np.testing.assert_array_equal(X_again, X_ref)
    X_other, _ = fast(random_state=1).fit_resample(X, y)
    assert not np.array_equal(X_other[len(y):], X_ref[len(y):])


def test_integer_labels_and_dtypes_kept(dense):
    X, y = dense
    y_int = LabelEncoder().fit_transform(y).astype(np.int32)
    X_res, y_res = fast().fit_resample(X.astype(np.int64), y_int)
    assert X_res.dtype == np.int64 and y_res.dtype == np.int32


# -- model reuse ---------------------------------------------------------------------------------
def test_fitted_model_is_reused_not_refitted(dense, fitted_model, monkeypatch):
    X, y = dense
    params = fitted_model.get_params()
    monkeypatch.setattr(SCLD, "fit", lambda *a, **k: pytest.fail("the given model was refitted"))
    sampler = fast(model=fitted_model)
    X_res, y_res = sampler.fit_resample(X, y)
    assert sampler.model_ is fitted_model
    assert Counter(y_res) == Counter(RandomOverSampler().fit_resample(X, y)[1])
    assert fitted_model.get_params() == params
    assert sampler.sampling_report_ == fitted_model.sampling_report_
    assert sampler.sampling_report_ is not fitted_model.sampling_report_
    # the frozen wrapper survives clone(), as in cross-validation
    frozen = clone(fast(model=FrozenEstimator(fitted_model)))
    assert frozen.fit_resample(X, y)[0].shape == X_res.shape
    assert frozen.model_ is fitted_model


def test_sampler_reaches_the_model_it_fits_and_the_one_it_is_given(dense, fitted_model):
    X, y = dense
    for solver in ("dpm-solver++", "ddim"):
        sampler = fast(sampler=solver)
        sampler.fit_resample(X, y)
        assert sampler.model_.sampler == solver
    # a given model samples with the sampler's solver, and is left as it was
    by_dpm = fast(model=fitted_model).fit_resample(X, y)[0]
    by_ddim = fast(model=fitted_model, sampler="ddim").fit_resample(X, y)[0]
    n = X.shape[0]
    np.testing.assert_array_equal(by_dpm[:n], by_ddim[:n])  # the real cells
    assert not np.array_equal(by_dpm[n:], by_ddim[n:])  # the same noise, another solver
    assert fitted_model.sampler == "dpm-solver++"


def test_saved_model_path(dense, fitted_model, tmp_path):
    X, y = dense
    path = tmp_path / "scld.pt"
    fitted_model.save(path)
    a = fast(model=str(path)).fit_resample(X, y)[0]
    b = fast(model=path).fit_resample(X, y)[0]
    c = fast(model=fitted_model).fit_resample(X, y)[0]
    np.testing.assert_allclose(a, b)
    np.testing.assert_allclose(a, c)


def test_autoencoder_trains_only_diffusion(dense, tmp_path, monkeypatch):
    X, y = dense
    ae = CellAutoencoder(n_latent=4, hidden=(16,), max_epochs=2, verbose=False, device="cpu",
                         random_state=0).fit(X)
    ae.save(tmp_path / "ae.pt")
    monkeypatch.setattr(CellAutoencoder, "fit", lambda *a, **k: pytest.fail("AE retrained"))
    sampler = fast(model=ae)
    X_res, _ = sampler.fit_resample(X, y)
    # reused as is (not retrained), on SCLD's own copy: the user's object is never changed
    assert sampler.model_.autoencoder_ is not ae
    np.testing.assert_array_equal(sampler.model_.autoencoder_.transform(X[:5]), ae.transform(X[:5]))
    assert X_res.shape[0] > X.shape[0]
    from_path = fast(model=tmp_path / "ae.pt")
    from_path.fit_resample(X, y)
    assert isinstance(from_path.model_.autoencoder_, CellAutoencoder)


def test_refusals(dense, fitted_model):
    X, y = dense
    with pytest.raises(ValueError, match="trained on 20 genes"):
        fast(model=fitted_model).fit_resample(X[:, :19], y)
    with pytest.raises(ValueError, match="cannot generate the classes"):
        fast(model=fitted_model).fit_resample(X, np.where(y == "type_2", "other", y))
    with pytest.raises(ValueError, match="integer counts"):
        fast(model=fitted_model).fit_resample(NormalizeLog1p().fit_transform(X), y)
    with pytest.raises(ValueError, match="unfitted SCLD.*FrozenEstimator"):
        fast(model=clone(fitted_model)).fit_resample(X, y)
    with pytest.raises(ValueError, match="scld_params may not set"):
        fast(scld_params={"max_epochs": 3}).fit_resample(X, y)
    with pytest.raises(ValueError, match="not SCLD parameters"):
        fast(scld_params={"n_latnet": 3}).fit_resample(X, y)
    with pytest.raises(ValueError, match="The 'model' parameter"):
        fast(model=3).fit_resample(X, y)


def test_gene_names_are_checked(dense):
    X, y = dense
    cols = [f"g{i}" for i in range(X.shape[1])]
    sampler = fast()
    sampler.fit_resample(pd.DataFrame(X, columns=cols), y)
    with pytest.raises(ValueError, match="gene names differ"):
        fast(model=sampler.model_).fit_resample(pd.DataFrame(X, columns=cols[::-1]), y)


def test_params_round_trip():
    sampler = SCLDOverSampler()
    assert sampler.verbose is False
    params = sampler.get_params()
    assert set(params) == set(SCLDOverSampler._parameter_constraints)
    clone_params = clone(sampler.set_params(guidance_scale=3.0, scld_params={"width": 8}))
    assert clone_params.get_params()["guidance_scale"] == 3.0
    assert clone_params.get_params()["scld_params"] == {"width": 8}
    with pytest.raises(TypeError):
        SCLDOverSampler("auto")  # keyword-only


def test_grid_search_in_pipeline(dense, fitted_model, tmp_path):
    X, y = dense
    path = tmp_path / "scld.pt"
    fitted_model.save(path)
    pipe = Pipeline([("aug", fast(model=path)), ("norm", NormalizeLog1p()),
                     ("clf", LogisticRegression(max_iter=200))])
    search = GridSearchCV(pipe, {"aug__guidance_scale": [1.0, 3.0]}, cv=2, scoring="f1_macro")
    search.fit(X, y)
    assert search.best_params_["aug__guidance_scale"] in (1.0, 3.0)
    assert search.best_estimator_.named_steps["aug"].model_ is not None


# -- the user's pipelines ------------------------------------------------------------------------
def _classifiers():
    xgboost = pytest.importorskip("xgboost")
    return [xgboost.XGBClassifier(n_estimators=20, max_depth=3, n_jobs=1),
            LogisticRegression(max_iter=300),
            RandomForestClassifier(n_estimators=20, random_state=0, n_jobs=1)]


@pytest.mark.parametrize("log_first", [False, True], ids=["counts", "lognorm"])
def test_users_pipeline_cross_validates(dense, log_first):
    X, y = dense
    y_enc = LabelEncoder().fit_transform(y)
    cv = StratifiedKFold(n_splits=2, shuffle=True, random_state=0)
    for clf in _classifiers():
        steps = [("aug", fast()), ("norm", NormalizeLog1p()), ("clf", clf)]
        if log_first:  # already log-normalised input: no normalisation after the sampler
            X_in, steps = NormalizeLog1p().fit_transform(X), [steps[0], steps[2]]
        else:
            X_in = X
        scores = cross_val_score(Pipeline(steps), X_in, y_enc, cv=cv, scoring="f1_macro")
        assert scores.shape == (2,) and np.all(scores > 0.5)


def test_single_cell_class_and_constant_gene():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(21, 5))
    X[:, 2] = 1.0
    y = np.array([0] * 20 + [1])
    sampler = fast()
    X_res, y_res = sampler.fit_resample(X, y)
    assert Counter(y_res) == {0: 20, 1: 20} and np.isfinite(X_res).all()


def test_parameter_validation():
    # every __init__ parameter has a constraint, and a wrong type or value is a clear ValueError
    imblearn_check_param_validation("SCLDOverSampler", CHECK_CONFIG)
    sklearn_check_param_validation("SCLDOverSampler", CHECK_CONFIG)


# -- estimator checks ----------------------------------------------------------------------------
CHECK_CONFIG = fast(max_epochs=1, n_sample_steps=2)

# Checks expected to fail, {check name: reason}. None is: SCLDOverSampler handles the checks'
# small random float data (continuous, negative values, one-cell classes) through SCLD's Gaussian
# likelihood, is deterministic for an int random_state on the CPU (so dense, sparse, DataFrame and
# list inputs give the same rows) and keeps dtypes and containers. scikit-learn's checks only call
# fit, which validates and resolves sampling_strategy_, like every imbalanced-learn sampler.
IMBLEARN_XFAIL: dict = {}
SKLEARN_XFAIL: dict = {}


@imblearn_checks([CHECK_CONFIG], expected_failed_checks=lambda est: IMBLEARN_XFAIL)
def test_imblearn_estimator_checks(estimator, check):
    check(estimator)


@sklearn_checks([CHECK_CONFIG], expected_failed_checks=lambda est: SKLEARN_XFAIL)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
