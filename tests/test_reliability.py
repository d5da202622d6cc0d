"""A model never lies about its state; one validation reaches every nested setting.

The single bad inputs are in the failure table (tests/failure_cases.py); these are the
behaviours that need a before and an after.
"""

import numpy as np
import pytest
import sklearn
from sklearn.utils._param_validation import InvalidParameterError

import scaug
from scaug import SCLD, CellAutoencoder, SCLDOverSampler
from scaug.exceptions import TrainingDivergedError

rng = np.random.default_rng(0)
X = rng.poisson(3.0, size=(60, 8)).astype(np.float32)
X[:30, :3] += 5
y = np.repeat(["a", "b"], 30)
TINY = {"n_latent": 2, "ae_hidden": (8,), "width": 8, "depth": 1, "diffusion_steps": 20,
        "max_epochs": 5, "n_sample_steps": 3, "verbose": False, "random_state": 0}


@pytest.fixture(scope="module")
def fitted():
    return SCLD(**TINY).fit(X, y)


def test_a_diverging_refit_keeps_the_previous_model(fitted):
    before, _ = fitted.sample({"b": 20}, random_state=1)
    weights = {k: v.clone() for k, v in fitted.denoiser_.state_dict().items()}
    fitted.set_params(learning_rate=1e6)
    try:
        with pytest.raises(TrainingDivergedError, match="learning rate \\(1e\\+06\\)"):
            fitted.fit(X, y)
    finally:
        fitted.set_params(learning_rate=1e-3)
    assert all(np.array_equal(v, fitted.denoiser_.state_dict()[k]) for k, v in weights.items())
    after, _ = fitted.sample({"b": 20}, random_state=1)
    np.testing.assert_array_equal(before, after)
    assert np.isfinite(after).all() and after.sum() > 0


def test_the_error_names_the_stage_that_diverged():
    """The autoencoder trained at a sane rate; only the diffusion stage gets the bad one."""
    ae = CellAutoencoder(n_latent=2, hidden=(8,), max_epochs=5, verbose=False,
                         random_state=0).fit(X)
    with pytest.raises(TrainingDivergedError, match="The diffusion stage diverged"):
        SCLD(**{**TINY, "learning_rate": 1e6, "autoencoder": ae}).fit(X, y)
    with pytest.raises(TrainingDivergedError, match="The autoencoder stage diverged"):
        CellAutoencoder(n_latent=2, hidden=(8,), max_epochs=5, learning_rate=1e6,
                        verbose=False).fit(X)


def test_learning_rate_reaches_the_autoencoder_scld_trains():
    slow = SCLD(**{**TINY, "learning_rate": 1e-5}).fit(X, y)
    fast = SCLD(**{**TINY, "learning_rate": 1e-2}).fit(X, y)
    assert slow.autoencoder_.learning_rate == 1e-5 and fast.autoencoder_.learning_rate == 1e-2
    # a hundred times the step size moves the autoencoder's loss further in the same epochs
    drop = [m.autoencoder_.history_[0] - m.autoencoder_.history_[-1] for m in (slow, fast)]
    assert drop[1] > 10 * drop[0]
    # a template keeps its own rate
    template = CellAutoencoder(n_latent=2, hidden=(8,), learning_rate=3e-4)
    kept = SCLD(**{**TINY, "learning_rate": 1e-2, "autoencoder": template}).fit(X, y)
    assert kept.autoencoder_.learning_rate == 3e-4


@pytest.mark.parametrize("call", [
    lambda: SCLD(**{**TINY, "label_dropout": 5.0}).fit(X, y),
    lambda: SCLD(**{**TINY, "autoencoder": CellAutoencoder(hidden=())}).fit(X, y),
    lambda: CellAutoencoder(n_latent="a").fit(X),
    lambda: SCLDOverSampler(scld_params={"n_latent": "a"}).fit_resample(X, y),
    lambda: scaug.LatentOverSampler(autoencoder_params={"latent_noise": -1.0}).fit_resample(X, y),
], ids=["SCLD", "SCLD's autoencoder template", "CellAutoencoder", "scld_params",
        "autoencoder_params"])
def test_nested_settings_are_validated_even_when_sklearn_skips_it(call):
    """scikit-learn sets skip_parameter_validation inside a parent's fit; scaug checks anyway,
    and before any training (the calls fail in well under a second)."""
    with sklearn.config_context(skip_parameter_validation=True):
        with pytest.raises(InvalidParameterError):
            call()


def test_load_returns_what_the_file_holds(fitted, tmp_path):
    fitted.save(tmp_path / "model.scld")
    fitted.autoencoder_.save(tmp_path / "encoder.pt")
    assert isinstance(scaug.load(tmp_path / "model.scld"), SCLD)
    encoder = scaug.load(tmp_path / "encoder.pt")
    assert isinstance(encoder, CellAutoencoder)
    np.testing.assert_allclose(encoder.transform(X), fitted.autoencoder_.transform(X))
    # a saved autoencoder as the oversampler's model: a new SCLD is trained on top of it
    sampler = SCLDOverSampler(model=tmp_path / "encoder.pt", max_epochs=2, random_state=0,
                              scld_params={"width": 8, "depth": 1, "diffusion_steps": 5})
    X_res, y_res = sampler.fit_resample(X, np.r_[y[:40], ["c"] * 20])
    assert (y_res == "b").sum() == (y_res == "c").sum() == 30
    assert X_res.shape == (90, 8)
