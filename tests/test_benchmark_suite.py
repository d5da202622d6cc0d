"""The benchmark suite's machinery (benchmarks/_suite.py): intervals, cache keys, the registry,
and synthesis through one shared autoencoder."""

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import _suite as S  # noqa: E402


def test_paired_interval_is_scipys_paired_t():
    rng = np.random.default_rng(0)
    a = dict(enumerate(rng.normal(0.7, 0.05, size=5)))
    b = {s: v - 0.03 + rng.normal(0, 0.02) for s, v in a.items()}
    got = S.paired(a, b)
    ci = stats.ttest_rel(list(a.values()), list(b.values())).confidence_interval(0.95)
    assert got["n"] == 5
    np.testing.assert_allclose([got["lo"], got["hi"]], [ci.low, ci.high], rtol=1e-12)
    assert got["verdict"] == ("win" if ci.low > 0 else "loss" if ci.high < 0 else
                              "no difference shown")


def test_a_win_needs_an_interval_that_excludes_zero():
    base = {0: 0.5, 1: 0.6, 2: 0.7}
    assert S.paired({s: v + 0.1 for s, v in base.items()}, base)["verdict"] == "win"
    # a positive mean difference with a wide spread is no win
    noisy = {0: 0.5 + 0.3, 1: 0.6 - 0.2, 2: 0.7 + 0.05}
    p = S.paired(noisy, base)
    assert p["diff"] > 0 and p["lo"] < 0 < p["hi"] and p["verdict"] == "no difference shown"
    # lower is better (an AUC): the same difference is a loss
    assert S.paired({s: v + 0.1 for s, v in base.items()}, base, False)["verdict"] == "loss"
    one = S.paired({0: 0.9}, {0: 0.5})
    assert one["verdict"] == "n/a" and one["diff"] == pytest.approx(0.4)
    assert S.paired({0: 0.9}, {1: 0.5})["n"] == 0  # only seeds both have are paired


def test_cache_keys_cover_settings_and_code(tmp_path, monkeypatch):
    monkeypatch.setattr(S, "CACHE", str(tmp_path))
    cache = S.Cache()
    key = dict(experiment="x", augmenter=S.setting("SCLD", quick=False), seed=10)
    assert cache.get(key) is None
    cache.put(key, {"f1": 0.5})
    assert cache.get(key) == {"f1": 0.5}
    other = dict(key, augmenter=S.setting("SCLD, CFG w=2", quick=False))
    assert cache.path(other) != cache.path(key) and cache.get(other) is None
    assert cache.get(dict(key, augmenter=S.setting("SCLD", quick=True))) is None
    cache.code = "other code"  # any change of code leaves every entry behind
    assert cache.get(key) is None


def test_registry_states_settings_in_full_and_names_them_plainly():
    quick = S.setting("SCLD", quick=True)
    assert quick["diffusion"]["diffusion_steps"] == 150
    assert S.REGISTRY["SCLD"]["diffusion"]["diffusion_steps"] is None  # not changed by quick
    for name, s in S.REGISTRY.items():
        assert "revision" not in name and "v2" not in name
        if s["kind"] == "scld":
            assert set(s["diffusion"]) == set(S.DIFFUSION) and set(s["sampling"]) == set(S.SAMPLING)
        if s["kind"] in ("scld", "latent"):
            assert set(s["autoencoder"]) == set(S.AUTOENCODER)
    # the latent baselines decode through SCLD's autoencoder settings
    assert all(S.REGISTRY[a]["autoencoder"] == S.REGISTRY["SCLD"]["autoencoder"] for a in S.LATENT)
    # and an ablation's latent baseline through the autoencoder of an SCLD ablation
    scld_aes = [s["autoencoder"] for s in S.REGISTRY.values() if s["kind"] == "scld"]
    assert all(s["autoencoder"] in scld_aes for s in S.REGISTRY.values() if s["kind"] == "latent")
    assert set(S.default_augmenters(dev=False)) < set(S.default_augmenters(dev=True))
    assert set(S.DEV_DATASETS).isdisjoint(S.REPORTING_ONLY)
    assert set(S.DEV_SEEDS).isdisjoint(S.REPORT_SEEDS) and len(S.REPORT_SEEDS) >= 5


def test_target_counts():
    y = np.array(["a"] * 100 + ["b"] * 10 + ["c"] * 30)
    assert S.target_counts(y, 1.0) == {"b": 100, "c": 100}
    assert S.target_counts(y, 0.2) == {"b": 20}
    assert S.target_counts(y, 1.0, only={"b"}) == {"b": 100}


def test_latent_baselines_and_scld_share_the_fitted_autoencoder():
    from scaug.datasets import simulate

    ad = simulate(n_cells=150, n_genes=20, n_types=3, n_markers=5, rare_sizes=(10,),
                  random_state=0)
    X, y = ad.X.tocsr(), ad.obs["cell_type"].astype(str).to_numpy()
    fits = S.Fits(X, y, seed=0, device="cpu")
    strategy = S.target_counts(y, 1.0)
    gauss = S.synthesize("latent Gaussian", S.setting("latent Gaussian", True), fits, X, y,
                         strategy, 0)
    scld = S.synthesize("SCLD", S.setting("SCLD", True), fits, X, y, strategy, 0)
    assert len(fits.models) == 2  # one autoencoder, one diffusion model
    np.testing.assert_array_equal(gauss["ae"].transform(X), scld["ae"].transform(X))
    assert gauss["fit_s"] == 0 and scld["fit_s"] > 0 and gauss["ae_fit_s"] == scld["ae_fit_s"]
    for syn in (gauss, scld):
        assert syn["X"].shape[0] == len(syn["y"]) == sum(strategy.values()) - sum(
            (y == t).sum() for t in strategy)
        assert syn["latents"].shape == (len(syn["y"]), 8)
    smote = S.synthesize("SMOTE", S.setting("SMOTE", True), fits, X, y, strategy, 0)
    assert smote["space"] == "log" and smote["latents"] is None
    none = S.synthesize("none", S.setting("none", True), fits, X, y, strategy, 0)
    assert none["X"].shape == (0, 20) and S.synthetic_log(none).shape == (0, 20)
