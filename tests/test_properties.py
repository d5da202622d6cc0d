"""Property-based tests (hypothesis) of SCLDOverSampler and SCLD on tiny settings.

Over shapes, sparsity, dtypes, containers and label sets: the original cells come back first and
unchanged, the class counts are imbalanced-learn's, the container and dtype are kept, synthetic
counts are non-negative integers, and a request is met exactly.
"""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from imblearn.over_sampling import RandomOverSampler

from scaug import SCLD
from scaug.oversampler import SCLDOverSampler

TINY_SCLD = {"n_latent": 2, "ae_hidden": (8,), "width": 8, "depth": 1, "diffusion_steps": 3}
SETTINGS = settings(max_examples=12, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def labelled_counts(draw):
    n_classes = draw(st.integers(2, 4))
    sizes = draw(st.lists(st.integers(2, 25), min_size=n_classes, max_size=n_classes))
    n_genes = draw(st.integers(2, 12))
    density = draw(st.sampled_from([0.05, 0.3, 1.0]))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    X = rng.poisson(5.0, size=(n, n_genes)) * (rng.random((n, n_genes)) < density)
    X[:, 0] += 1  # every cell expresses something
    labels = draw(st.sampled_from(["str", "int"]))
    y = np.repeat(np.arange(n_classes), sizes)
    y = np.array([f"t{c}" for c in y]) if labels == "str" else y
    dtype = draw(st.sampled_from([np.int32, np.int64, np.float32, np.float64]))
    container = draw(st.sampled_from(["ndarray", "csr", "dataframe"]))
    X = X.astype(dtype)
    if container == "csr":
        X = sp.csr_matrix(X)
    elif container == "dataframe":
        X = pd.DataFrame(X, columns=[f"g{i}" for i in range(n_genes)])
    return X, y, seed


def _dense(X):
    if sp.issparse(X):
        return X.toarray()
    return X.to_numpy() if hasattr(X, "to_numpy") else np.asarray(X)


@SETTINGS
@given(labelled_counts())
def test_oversampler_properties(case):
    X, y, seed = case
    sampler = SCLDOverSampler(max_epochs=1, n_sample_steps=2, device="cpu", random_state=seed,
                              scld_params=TINY_SCLD)
    X_res, y_res = sampler.fit_resample(X, y)
    n = len(y)
    assert type(X_res) is type(X) or (sp.issparse(X) and sp.issparse(X_res))
    dense = _dense(X_res)
    assert dense.dtype == _dense(X).dtype
    np.testing.assert_array_equal(dense[:n], _dense(X))
    np.testing.assert_array_equal(np.asarray(y_res)[:n], y)
    _, y_ros = RandomOverSampler(random_state=0).fit_resample(_dense(X), y)
    assert sorted(np.unique(y_res, return_counts=True)[1]) == sorted(
        np.unique(y_ros, return_counts=True)[1])
    synthetic = dense[n:]
    assert (synthetic >= 0).all() and np.array_equal(synthetic, np.round(synthetic))
    if isinstance(X, pd.DataFrame):
        assert list(X_res.columns) == list(X.columns)


@SETTINGS
@given(labelled_counts(), st.integers(0, 30))
def test_scld_meets_every_request_exactly(case, k):
    X, y, seed = case
    model = SCLD(max_epochs=1, n_sample_steps=2, device="cpu", verbose=False, random_state=seed,
                 **TINY_SCLD).fit(X, y)
    request = {c: k + i for i, c in enumerate(model.classes_)}
    X_syn, y_syn = model.sample(request, random_state=seed)
    assert X_syn.shape == (sum(request.values()), X.shape[1])
    for c, m in request.items():
        assert (y_syn == c).sum() == m
    values = X_syn.data if sp.issparse(X_syn) else X_syn
    assert (values >= 0).all() and np.array_equal(values, np.round(values))
    again, _ = model.sample(request, random_state=seed)
    np.testing.assert_array_equal(_dense(again), _dense(X_syn))


@pytest.mark.parametrize("bad", [60.7, -3, "ten", True])
def test_requests_that_are_not_whole_cell_numbers_are_refused(bad):
    rng = np.random.default_rng(0)
    X = rng.poisson(3.0, size=(30, 5))
    y = np.repeat(["a", "b"], 15)
    model = SCLD(max_epochs=1, n_sample_steps=2, device="cpu", verbose=False, random_state=0,
                 **TINY_SCLD).fit(X, y)
    with pytest.raises(ValueError, match="int >= 0"):
        model.sample({"a": bad})
    sampler = SCLDOverSampler(sampling_strategy={"a": bad}, max_epochs=1, device="cpu",
                              scld_params=TINY_SCLD)
    with pytest.raises((ValueError, TypeError)):
        sampler.fit_resample(X, y)
