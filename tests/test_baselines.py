"""LatentOverSampler: the latent draws of each rule, the shared autoencoder, imbalanced-learn
conventions and the estimator checks."""

from collections import Counter

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from imblearn.over_sampling import RandomOverSampler
from imblearn.utils.estimator_checks import (
    check_param_validation as imblearn_check_param_validation,
)
from imblearn.utils.estimator_checks import parametrize_with_checks as imblearn_checks
from sklearn.base import clone
from sklearn.covariance import LedoitWolf
from sklearn.frozen import FrozenEstimator
from sklearn.preprocessing import LabelEncoder
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import check_param_validation as sklearn_check_param_validation
from sklearn.utils.estimator_checks import parametrize_with_checks as sklearn_checks

from scaug import CellAutoencoder
from scaug.baselines import LatentOverSampler
from scaug.datasets import simulate
from scaug.preprocessing import NormalizeLog1p

TINY_AE = {"n_latent": 3, "hidden": (16,)}


def fast(**kw):
    return LatentOverSampler(**{"max_epochs": 1, "device": "cpu", "random_state": 0,
                                "autoencoder_params": TINY_AE, **kw})


@pytest.fixture(scope="module")
def counts():
    ad = simulate(n_cells=160, n_genes=20, n_types=3, n_markers=5, rare_sizes=(12,),
                  random_state=0)
    return ad.X.tocsr(), ad.obs["cell_type"].astype(str).to_numpy()


@pytest.fixture(scope="module")
def dense(counts):
    X, y = counts
    return X.toarray(), y


@pytest.fixture(scope="module")
def ae(dense):
    X, _ = dense
    return CellAutoencoder(max_epochs=3, device="cpu", random_state=0, verbose=False,
                           **TINY_AE).fit(X)


def latents_of(sampler, X, y, label, n):
    """``n`` latents of ``label`` drawn by ``sampler``, and the type's training latents."""
    sampler.set_params(sampling_strategy={label: int((y == label).sum()) + n})
    sampler.fit_resample(X, y)
    return sampler.sample_latents_, sampler.autoencoder_.transform(X)[y == label]


# -- the three rules ---------------------------------------------------------------------------
def test_copies_are_the_training_latents_bit_for_bit(dense, ae):
    X, y = dense
    S, Zt = latents_of(fast(method="copies", autoencoder=ae), X, y, "type_2", 600)
    assert S.shape == (600, 3)
    match = (S[:, None, :] == Zt[None, :, :]).all(-1)
    assert match.any(1).all()  # every synthetic latent is one of the type's 12, exactly
    # drawn uniformly with replacement: each of the 12 about 50 times (binomial sd ~6.8)
    hits = match.sum(0)
    assert hits.min() > 20 and hits.max() < 80


def test_gaussian_matches_the_types_mean_and_shrunk_covariance(dense, ae):
    X, y = dense
    n = 8000
    S, Zt = latents_of(fast(method="gaussian", autoencoder=ae), X, y, "type_0", n)
    Z = ae.transform(X)
    mean, scale = Z.mean(0), Z.std(0) + 1e-6
    # expected: Ledoit-Wolf of the type's latents standardised over all cells, mapped back
    cov = LedoitWolf().fit((Zt - mean) / scale).covariance_ * np.outer(scale, scale)
    se = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(S.mean(0) - Zt.mean(0)) < 4 * se)
    err = np.linalg.norm(np.cov(S.T) - cov) / np.linalg.norm(cov)
    assert err < 0.08  # sampling error of a covariance from 8000 draws is ~2-3 %
    # a shrunk covariance, not the type's plain one: shrinkage moves it measurably here
    plain = np.cov(((Zt - mean) / scale).T, bias=True) * np.outer(scale, scale)
    assert np.linalg.norm(cov - plain) / np.linalg.norm(plain) > 0.01


def test_gaussian_of_a_tiny_type_borrows_the_covariance_of_all_cells(dense, ae):
    X, y = dense
    keep = np.r_[np.flatnonzero(y != "type_2"), np.flatnonzero(y == "type_2")[:2]]
    X2, y2 = X[keep], y[keep]
    S, Zt = latents_of(fast(method="gaussian", autoencoder=ae), X2, y2, "type_2", 6000)
    Z = ae.transform(X2)
    mean, scale = Z.mean(0), Z.std(0) + 1e-6
    overall = LedoitWolf().fit((Z - mean) / scale).covariance_ * np.outer(scale, scale)
    np.testing.assert_allclose(S.mean(0), Zt.mean(0), atol=4 * np.sqrt(np.diag(overall).max() / 6000))
    assert np.linalg.norm(np.cov(S.T) - overall) / np.linalg.norm(overall) < 0.08


@pytest.mark.parametrize("smoothing", [1.0, 4.0])
def test_bootstrap_keeps_the_types_mean_and_variance(dense, ae, smoothing):
    X, y = dense
    n = 8000
    S, Zt = latents_of(fast(method="bootstrap", autoencoder=ae, smoothing=smoothing), X, y,
                       "type_2", n)
    # shrink toward the mean by 1/sqrt(1+f^2), add noise of sd f*sd/sqrt(1+f^2): variance kept
    var = Zt.var(0)
    assert np.all(np.abs(S.mean(0) - Zt.mean(0)) < 4 * np.sqrt(var / n))
    np.testing.assert_allclose(S.var(0), var, rtol=0.08)
    # the noise makes new latents: none is a copy of a training latent
    d = np.linalg.norm(S[:, None, :] - Zt[None], axis=-1).min(1)
    assert np.median(d) > 0.1 * np.sqrt(var.sum())


def test_bootstrap_without_smoothing_copies(dense, ae):
    X, y = dense
    S, Zt = latents_of(fast(method="bootstrap", autoencoder=ae, smoothing=0.0), X, y, "type_2",
                       200)
    d = np.linalg.norm(S[:, None, :] - Zt[None], axis=-1).min(1)
    assert d.max() < 1e-5  # the training latents, up to the standardisation's rounding


def test_library_sizes_follow_the_types_real_cells(dense, ae):
    X, y = dense
    # type_0's cells made twice as deep: the decoder's library sizes must follow each type's
    X = X.copy()
    X[y == "type_0"] *= 2
    sampler = fast(method="copies", sampling_strategy={"type_0": 1500, "type_2": 1500})
    X_res, y_res = sampler.fit_resample(X, y)
    for t in ("type_0", "type_2"):
        real = np.median(X[y == t].sum(1))
        syn = np.median(X_res[len(y):][y_res[len(y):] == t].sum(1))
        assert abs(syn / real - 1) < 0.1, (t, syn, real)


def test_the_same_seed_gives_every_rule_the_same_library_sizes(dense, ae):
    X, y = dense
    # copies and an unsmoothed bootstrap draw the same training latents (the same picks from
    # the latent seed) and get the same library sizes: the same cells, up to the rounding of
    # the bootstrap's standardisation
    a, _ = fast(method="copies", autoencoder=ae).fit_resample(X, y)
    b, _ = fast(method="bootstrap", autoencoder=ae, smoothing=0.0).fit_resample(X, y)
    totals_a, totals_b = a[len(y):].sum(1), b[len(y):].sum(1)
    assert np.corrcoef(totals_a, totals_b)[0, 1] > 0.99


def test_a_new_autoencoder_has_scld_s_default_settings(dense):
    from scaug import SCLD

    X, y = dense
    sampler = LatentOverSampler(max_epochs=1, device="cpu", random_state=0)
    sampler.fit_resample(X, y)
    scld = SCLD()
    got = sampler.autoencoder_.get_params()
    assert (got["n_latent"], tuple(got["hidden"])) == (scld.n_latent, tuple(scld.ae_hidden))
    untouched = {"max_epochs", "device", "random_state", "verbose"}
    defaults = CellAutoencoder().get_params()
    assert {k: v for k, v in got.items() if k not in untouched} == \
        {k: v for k, v in defaults.items() if k not in untouched}
    assert sampler.sample_latents_.shape[1] == 16


# -- the autoencoder ---------------------------------------------------------------------------
def test_fitted_autoencoder_is_reused_frozen(dense, ae, monkeypatch, tmp_path):
    X, y = dense
    before = {k: v.clone() for k, v in ae.module_.state_dict().items()}
    monkeypatch.setattr(CellAutoencoder, "fit", lambda *a, **k: pytest.fail("retrained"))
    sampler = fast(autoencoder=ae)
    X_ref, _ = sampler.fit_resample(X, y)
    assert sampler.autoencoder_ is ae
    assert all((v == before[k]).all() for k, v in ae.module_.state_dict().items())
    cloned = clone(sampler)  # as in cross-validation: the fitted autoencoder is kept
    assert cloned.autoencoder is ae
    np.testing.assert_array_equal(cloned.fit_resample(X, y)[0], X_ref)
    np.testing.assert_array_equal(fast(autoencoder=FrozenEstimator(ae)).fit_resample(X, y)[0], X_ref)
    ae.save(tmp_path / "ae.scae")
    np.testing.assert_array_equal(fast(autoencoder=tmp_path / "ae.scae").fit_resample(X, y)[0],
                                  X_ref)


def test_unfitted_autoencoder_is_a_template(dense):
    X, y = dense
    template = CellAutoencoder(n_latent=2, hidden=(8,), max_epochs=5)
    sampler = LatentOverSampler(autoencoder=template, max_epochs=1, device="cpu", random_state=0)
    sampler.fit_resample(X, y)
    assert sampler.autoencoder_.n_latent == 2 and sampler.autoencoder_.max_epochs == 1
    assert len(sampler.autoencoder_.history_) == 1
    assert not hasattr(template, "module_")  # the template itself is never fitted


def test_refusals(dense, ae):
    X, y = dense
    with pytest.raises(ValueError, match="trained on 20 genes.*adapt"):
        fast(autoencoder=ae).fit_resample(X[:, :19], y)
    with pytest.raises(ValueError, match="not integer counts"):
        fast(autoencoder=ae).fit_resample(NormalizeLog1p().fit_transform(X), y)
    with pytest.raises(ValueError, match="may not set \\['max_epochs'\\]"):
        fast(autoencoder_params={"max_epochs": 3}).fit_resample(X, y)
    with pytest.raises(ValueError, match="not CellAutoencoder parameters"):
        fast(autoencoder_params={"n_latnet": 3}).fit_resample(X, y)
    with pytest.raises(InvalidParameterError, match="'method' parameter"):
        fast(method="smote").fit_resample(X, y)
    with pytest.raises(ValueError, match="wraps an unfitted"):
        fast(autoencoder=FrozenEstimator(CellAutoencoder())).fit_resample(X, y)
    mixed = np.where(np.arange(len(y)) < 5, -1, y.astype(object))
    with pytest.raises(ValueError, match="mixes string class labels with -1"):
        fast().fit_resample(X, mixed)
    with pytest.raises(TypeError):
        LatentOverSampler("auto")  # keyword-only


# -- imbalanced-learn conventions ----------------------------------------------------------------
@pytest.mark.parametrize("method", ["gaussian", "bootstrap", "copies"])
def test_counts_match_imblearn_and_originals_come_first(dense, method):
    X, y = dense
    sampler = fast(method=method)
    X_res, y_res = sampler.fit_resample(X, y)
    assert Counter(y_res) == Counter(RandomOverSampler().fit_resample(X, y)[1])
    np.testing.assert_array_equal(X_res[: len(y)], X)
    np.testing.assert_array_equal(y_res[: len(y)], y)
    expected = np.concatenate([[c] * n for c, n in sampler.sampling_strategy_.items()])
    np.testing.assert_array_equal(y_res[len(y):], expected)
    assert sampler.synthetic_mask_.sum() == sampler.n_synthetic_ == len(y_res) - len(y)
    syn = X_res[len(y):]
    assert np.all(syn >= 0) and np.array_equal(syn, np.round(syn))  # counts in, counts out


def test_containers_dtypes_and_seed(counts):
    X_csr, y = counts
    X = X_csr.toarray()
    X_ref, y_ref = fast().fit_resample(X, y)
    assert isinstance(X_ref, np.ndarray) and X_ref.dtype == np.float32
    X_sp, _ = fast().fit_resample(X_csr, y)
    assert sp.issparse(X_sp) and X_sp.format == "csr" and X_sp.dtype == np.float32
    np.testing.assert_array_equal(X_sp.toarray(), X_ref)
    assert fast().fit_resample(X_csr.tocsc(), y)[0].format == "csc"
    cols = [f"g{i}" for i in range(X.shape[1])]
    X_df, y_s = fast().fit_resample(pd.DataFrame(X, columns=cols), pd.Series(y, name="type"))
    assert list(X_df.columns) == cols and y_s.name == "type"
    np.testing.assert_array_equal(X_df.to_numpy(), X_ref)
    X_list, y_list = fast().fit_resample(X.tolist(), y.tolist())
    assert isinstance(X_list, list) and y_list == list(y_ref)
    X_int, y_int = fast().fit_resample(X.astype(np.int64), LabelEncoder().fit_transform(y).astype(np.int32))
    assert X_int.dtype == np.int64 and y_int.dtype == np.int32
    np.testing.assert_array_equal(fast().fit_resample(X, y)[0], X_ref)
    assert not np.array_equal(fast(random_state=1).fit_resample(X, y)[0][len(y):], X_ref[len(y):])


def test_continuous_in_continuous_out(dense):
    X, y = dense
    X_log = NormalizeLog1p().fit_transform(X)
    sampler = fast(sampling_strategy="minority")
    X_res, _ = sampler.fit_resample(X_log, y)
    assert sampler.autoencoder_.likelihood_ == "gaussian"
    syn = X_res[len(y):]
    assert not np.array_equal(syn, np.round(syn)) and syn.min() >= 0


def test_unlabelled_cells_are_kept_and_not_oversampled(dense):
    X, y = dense
    y_int = LabelEncoder().fit_transform(y)
    y_semi = y_int.copy()
    y_semi[np.flatnonzero(y_int == 0)[:40]] = -1
    sampler = fast()
    X_res, y_res = sampler.fit_resample(X, y_semi)
    labelled = Counter(y_int[y_semi != -1])
    assert Counter(y_res) == {**{t: max(labelled.values()) for t in labelled}, -1: 40}
    np.testing.assert_array_equal(X_res[: len(y)], X)


def test_nothing_to_generate_trains_nothing(dense, monkeypatch):
    X, y = dense
    keep = np.r_[np.flatnonzero(y == "type_0")[:12], np.flatnonzero(y == "type_2")]
    monkeypatch.setattr(CellAutoencoder, "fit", lambda *a, **k: pytest.fail("trained for nothing"))
    sampler = fast()
    X_res, _ = sampler.fit_resample(X[keep], y[keep])
    np.testing.assert_array_equal(X_res, X[keep])
    assert sampler.autoencoder_ is None and sampler.n_synthetic_ == 0


def test_params_round_trip():
    import scaug

    assert scaug.LatentOverSampler is LatentOverSampler and "LatentOverSampler" in scaug.__all__
    sampler = LatentOverSampler()
    assert set(sampler.get_params()) == set(LatentOverSampler._parameter_constraints)
    assert sampler.method == "gaussian" and sampler.smoothing == 4.0 and sampler.verbose is False


def test_parameter_validation():
    imblearn_check_param_validation("LatentOverSampler", CHECK_CONFIG)
    sklearn_check_param_validation("LatentOverSampler", CHECK_CONFIG)


# -- estimator checks ----------------------------------------------------------------------------
CHECK_CONFIG = fast(method="bootstrap")

# Checks expected to fail, {check name: reason}. None is: the checks' small random float data
# (continuous, negative values, one-cell classes) go through the Gaussian likelihood, an int
# random_state makes dense, sparse, DataFrame and list input give the same rows, and dtypes and
# containers are kept.
IMBLEARN_XFAIL: dict = {}
SKLEARN_XFAIL: dict = {}


@imblearn_checks([CHECK_CONFIG], expected_failed_checks=lambda est: IMBLEARN_XFAIL)
def test_imblearn_estimator_checks(estimator, check):
    check(estimator)


@sklearn_checks([CHECK_CONFIG], expected_failed_checks=lambda est: SKLEARN_XFAIL)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
