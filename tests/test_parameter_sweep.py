"""A property-based sweep over the public estimators' parameters (hypothesis).

Each example sets one parameter of SCLD, CellAutoencoder, SCLDOverSampler or LatentOverSampler
(directly, or nested through ``scld_params`` / ``autoencoder_params`` / ``autoencoder=``) to an
awkward value: the wrong type, a bound, NaN/inf, empty, a bool where an int belongs. The call
must either succeed with finite output of the right shape, or raise a ``ValueError`` or
``TypeError`` (scikit-learn's ``InvalidParameterError`` is both) whose message names the
parameter, never an error from inside torch, numpy or pandas. It runs inside
``skip_parameter_validation=True`` too, the setting scikit-learn uses for nested estimators.

Values are small: a valid huge width or step count would only make an example slow, not find a
bug. The cases the sweep found are in the failure table (tests/failure_cases.py).
"""

import math
import os

import numpy as np
import pytest
import sklearn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scaug import SCLD, CellAutoencoder, LatentOverSampler, SCLDOverSampler

rng = np.random.default_rng(0)
X = rng.poisson(3.0, size=(40, 6)).astype(np.float32)
X[:20, :2] += 4  # two types that differ
y = np.repeat(["a", "b"], 20)
REQUEST = {"b": 30}

TINY_SCLD = {"n_latent": 2, "ae_hidden": (8,), "width": 8, "depth": 1, "diffusion_steps": 3,
             "max_epochs": 1, "n_sample_steps": 2, "verbose": False, "random_state": 0}
TINY_AE = {"n_latent": 2, "hidden": (8,), "max_epochs": 1, "verbose": False, "random_state": 0}

AWKWARD = st.sampled_from([
    None, True, False, -1, 0, 1, 2, 3, -0.5, 0.0, 0.5, 1.0, 2.5, math.nan, math.inf, -math.inf,
    "", "a", "auto", (), (0,), (2,), [3], {}, {"devices": 1}, np.int64(2), np.float32(0.25),
    object(),
])
#: parameters whose valid values have nothing to sweep, or cost a real fit each
SKIP = {"random_state", "verbose", "device", "cpu_threads"}


def _swept(estimator_class, exclude=()):
    names = sorted(set(estimator_class._parameter_constraints) - SKIP - set(exclude))
    return st.sampled_from(names)


def _check_call(call, name, value):
    """Run ``call``; pass if it returns, or raises a clear ValueError/TypeError naming ``name``."""
    try:
        out = call()
    except (ValueError, TypeError) as err:
        message = str(err)
        assert name in message, (
            f"{name}={value!r}: {type(err).__name__} does not name the parameter: {message}")
        frames = []
        tb = err.__traceback__
        while tb is not None:
            frames.append(tb.tb_frame.f_code.co_filename)
            tb = tb.tb_next
        raised_in = frames[-1]
        assert "scaug" in raised_in or "sklearn" in raised_in or "imblearn" in raised_in, (
            f"{name}={value!r}: raised inside {raised_in}: {type(err).__name__}: {message}")
        return None
    return out


def _finite(X_out):
    values = X_out.data if hasattr(X_out, "data") and not isinstance(X_out, np.ndarray) else X_out
    return bool(np.all(np.isfinite(np.asarray(values, dtype=np.float64))))


#: SCAUG_SWEEP_EXAMPLES=400 sweeps deeper (and randomly) than the suite's quick, fixed sweep
_DEEP = int(os.environ.get("SCAUG_SWEEP_EXAMPLES", "0"))
SWEEP = settings(max_examples=_DEEP or 25, deadline=None, derandomize=not _DEEP,
                 suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("skip_validation", [False, True])
@SWEEP
@given(name=_swept(SCLD, exclude=("autoencoder",)), value=AWKWARD)
def test_scld_parameters(skip_validation, name, value):
    params = {**TINY_SCLD, name: value}

    def call():
        model = SCLD(**params).fit(X, y)
        return model.sample(REQUEST, random_state=0)

    with sklearn.config_context(skip_parameter_validation=skip_validation):
        out = _check_call(call, name, value)
    if out is not None:
        X_syn, y_syn = out
        assert X_syn.shape == (30, 6) and _finite(X_syn) and list(np.unique(y_syn)) == ["b"]


@SWEEP
@given(name=_swept(CellAutoencoder), value=AWKWARD, nested=st.booleans())
def test_autoencoder_parameters(name, value, nested):
    """Directly, and as the template of an SCLD (nested)."""
    params = {**TINY_AE, name: value}
    if nested:
        def call():
            return SCLD(**{**TINY_SCLD, "autoencoder": CellAutoencoder(**params)}).fit(
                X, y).sample(REQUEST, random_state=0)[0]
    else:
        def call():
            ae = CellAutoencoder(**params).fit(X)
            return ae.transform(X)
    out = _check_call(call, name, value)
    if out is not None:
        assert out.shape[0] in (30, 40) and _finite(out)


@SWEEP
@given(name=_swept(SCLD, exclude=("autoencoder",)) | _swept(SCLDOverSampler, exclude=("model",)),
       value=AWKWARD)
def test_oversampler_parameters(name, value):
    """SCLDOverSampler's own parameters, and SCLD's through scld_params."""
    own = set(SCLDOverSampler._parameter_constraints)
    scld = {k: v for k, v in TINY_SCLD.items()
            if k not in ("max_epochs", "n_sample_steps", "verbose", "random_state")}
    if name in own:
        sampler = SCLDOverSampler(**{"max_epochs": 1, "n_sample_steps": 2, "scld_params": scld,
                                     "random_state": 0, name: value})
    elif name in {"max_epochs", "n_sample_steps", "verbose", "random_state", "guidance_scale",
                  "classifier_scale", "screening", "sampler", "device"}:
        return  # set on the sampler itself, covered above
    else:
        sampler = SCLDOverSampler(max_epochs=1, n_sample_steps=2, random_state=0,
                                  scld_params={**scld, name: value})
    out = _check_call(lambda: sampler.fit_resample(X, y), name, value)
    if out is not None:
        X_res, y_res = out
        assert X_res.shape[1] == 6 and len(y_res) == X_res.shape[0] and _finite(X_res)
        assert np.array_equal(X_res[:40], X)


@SWEEP
@given(name=_swept(LatentOverSampler, exclude=("autoencoder",)) | _swept(CellAutoencoder),
       value=AWKWARD)
def test_latent_oversampler_parameters(name, value):
    """LatentOverSampler's own parameters, and the autoencoder's through autoencoder_params."""
    own = set(LatentOverSampler._parameter_constraints)
    ae = {"n_latent": 2, "hidden": (8,)}
    if name in own:
        sampler = LatentOverSampler(**{"max_epochs": 1, "autoencoder_params": ae,
                                       "random_state": 0, name: value})
    elif name in {"max_epochs", "device", "random_state", "verbose"}:
        return
    else:
        sampler = LatentOverSampler(max_epochs=1, random_state=0,
                                    autoencoder_params={**ae, name: value})
    out = _check_call(lambda: sampler.fit_resample(X, y), name, value)
    if out is not None:
        X_res, y_res = out
        assert X_res.shape[1] == 6 and len(y_res) == X_res.shape[0] and _finite(X_res)


_FITTED = {}


def _fitted():
    if "model" not in _FITTED:
        _FITTED["model"] = SCLD(**TINY_SCLD).fit(X, y)
    return _FITTED["model"]


SAMPLE_ARGS = ["n", "random_state", "guidance_scale", "classifier_scale", "refinement",
               "screening", "screening_threshold", "n_sample_steps", "sampler", "batch_size",
               "max_cells", "conditions", "condition_scales"]


@SWEEP
@given(name=st.sampled_from(SAMPLE_ARGS),
       value=AWKWARD | st.sampled_from([{"b": -1}, {"b": 2.5}, {"c": 2}, {"b": True}, 10**12]))
def test_sample_arguments(name, value):
    model = _fitted()
    kwargs = {"n": {"b": 5}, "random_state": 0, name: value}
    n = kwargs.pop("n")
    out = _check_call(lambda: model.sample(n, **kwargs), name, value)
    if out is not None:
        X_syn, y_syn = out
        assert X_syn.shape[1] == 6 and X_syn.shape[0] == len(y_syn) and _finite(X_syn)


def _matrices():
    """Awkward cells x genes matrices: empty, NaN/inf, negative, bools, strings, wrong shapes."""
    return st.sampled_from([
        np.zeros((0, 6)), np.zeros((40, 0)), X[:, 0], X[None], np.full((40, 6), np.nan),
        np.where(X > 5, np.inf, X), -X, X.astype(bool), X.astype(str), X.astype(object),
        X.astype(np.float16), X + 0.5, X.astype(np.float64) * 1e39, [[1, 2]] * 40, "cells.h5ad", None,
    ])


@SWEEP
@given(matrix=_matrices(), labels=st.sampled_from([
    y, y[:10], y.astype(object), np.repeat([0.5, 1.5], 20), np.r_[y[:-1], [None]], None, "a"]))
def test_fit_inputs(matrix, labels):
    """X and y given to SCLD.fit and SCLDOverSampler.fit_resample."""
    def fit():
        return SCLD(**TINY_SCLD).fit(matrix, labels).sample(REQUEST, random_state=0)[0]

    def resample():
        return SCLDOverSampler(max_epochs=1, n_sample_steps=2, random_state=0, scld_params={
            k: TINY_SCLD[k] for k in ("n_latent", "ae_hidden", "width", "depth",
                                       "diffusion_steps")}).fit_resample(matrix, labels)[0]

    for call in (fit, resample):
        try:
            out = call()
        except (ValueError, TypeError) as err:
            message = str(err)
            assert "X" in message or "y" in message, f"{type(err).__name__}: {message}"
            frames = []
            tb = err.__traceback__
            while tb is not None:
                frames.append(tb.tb_frame.f_code.co_filename)
                tb = tb.tb_next
            assert any(k in frames[-1] for k in ("scaug", "sklearn", "imblearn")), (
                f"raised inside {frames[-1]}: {type(err).__name__}: {message}")
        else:
            assert _finite(out)
