"""SCLD and CellAutoencoder state: all-or-nothing fits, clone, pickling, saved files, bounded work,
count decisions and parameter validation (scikit-learn's own checks)."""

import copy
import os
import pickle

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import check_param_validation
from sklearn.utils.validation import check_is_fitted

from scaug import SCLD, CellAutoencoder
from scaug.datasets import simulate
from scaug.train import plans

TINY = dict(n_latent=4, ae_hidden=(16,), width=16, depth=1, max_epochs=2, diffusion_steps=20,
            n_sample_steps=3, verbose=False, device="cpu")


@pytest.fixture(scope="module")
def data():
    a = simulate(n_cells=200, n_genes=30, n_types=3, rare_sizes=(15,), random_state=0)
    return a.X.tocsr(), a.obs["cell_type"].astype(str).to_numpy()


@pytest.fixture(scope="module")
def fitted(data):
    X, y = data
    return SCLD(random_state=0, **TINY).fit(X, y)


def _interrupt_in(monkeypatch, plan_class):
    def boom(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(plan_class, "training_step", boom)


@pytest.mark.parametrize("stage", [plans.AutoencoderPlan, plans.DenoiserPlan, plans.ClassifierPlan])
def test_interrupted_first_fit_leaves_the_model_unfitted(data, monkeypatch, stage):
    X, y = data
    # latent_classifier=True: the classifier stage runs (and is interrupted) too
    model = SCLD(random_state=0, latent_classifier=True, **TINY)
    _interrupt_in(monkeypatch, stage)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y)
    assert not [k for k in vars(model) if k.endswith("_")]
    with pytest.raises(NotFittedError):
        check_is_fitted(model)


@pytest.mark.parametrize("stage", [plans.AutoencoderPlan, plans.DenoiserPlan, plans.ClassifierPlan])
def test_interrupted_refit_keeps_the_old_model(data, monkeypatch, stage):
    X, y = data
    model = SCLD(random_state=0, latent_classifier=True, **TINY).fit(X, y)
    before = dict(vars(model))
    X_old, _ = model.sample({y[0]: 5}, random_state=1)
    other = simulate(n_cells=120, n_genes=40, n_types=2, random_state=1)
    _interrupt_in(monkeypatch, stage)
    with pytest.raises(KeyboardInterrupt):
        model.fit(other.X, other.obs["cell_type"].astype(str).to_numpy())
    assert model.n_features_in_ == X.shape[1] and list(model.classes_) == list(before["classes_"])
    assert model.denoiser_ is before["denoiser_"]
    X_again, _ = model.sample({y[0]: 5}, random_state=1)
    assert (X_old != X_again).nnz == 0


def test_failed_autoencoder_fit_keeps_the_old_one(data, monkeypatch):
    X, _ = data
    ae = CellAutoencoder(n_latent=4, hidden=(16,), max_epochs=2, verbose=False, random_state=0).fit(X)
    module = ae.module_
    _interrupt_in(monkeypatch, plans.AutoencoderPlan)
    with pytest.raises(KeyboardInterrupt):
        ae.fit(X[:50, :10])
    assert ae.module_ is module and ae.n_features_in_ == X.shape[1]


def test_clone_keeps_a_fitted_autoencoder_and_never_changes_it(data):
    X, y = data
    ae = CellAutoencoder(n_latent=4, hidden=(16,), max_epochs=2, verbose=False, random_state=0).fit(X)
    weights = {k: v.clone() for k, v in ae.module_.state_dict().items()}
    cloned = clone(SCLD(autoencoder=ae, random_state=0, **TINY))
    assert cloned.autoencoder is ae  # reused, not replaced by an unfitted copy
    model = cloned.fit(X, y)
    assert model.autoencoder_ is not ae  # SCLD works on its own copy
    for k, v in ae.module_.state_dict().items():
        assert torch.equal(v, weights[k])
    np.testing.assert_array_equal(model.autoencoder_.transform(X[:10]), ae.transform(X[:10]))
    # an unfitted autoencoder stays a template under clone
    template = CellAutoencoder(n_latent=3)
    assert clone(SCLD(autoencoder=template)).autoencoder is not template


def test_pickle_round_trip_samples_the_same_cells(fitted, data):
    _, y = data
    back = pickle.loads(pickle.dumps(fitted))
    a, _ = fitted.sample({y[0]: 8}, random_state=3)
    b, _ = back.sample({y[0]: 8}, random_state=3)
    assert (a != b).nnz == 0
    ae = pickle.loads(pickle.dumps(fitted.autoencoder_))
    np.testing.assert_array_equal(ae.transform(data[0][:5]), fitted.autoencoder_.transform(data[0][:5]))


def test_saved_file_does_not_grow_with_the_training_cells(tmp_path):
    sizes = []
    for n in (200, 2000):
        a = simulate(n_cells=n, n_genes=30, n_types=3, random_state=0)
        m = SCLD(random_state=0, **{**TINY, "max_epochs": 1}).fit(a.X, a.obs["cell_type"].astype(str))
        m.save(tmp_path / f"{n}.scld")
        sizes.append(os.path.getsize(tmp_path / f"{n}.scld"))
    assert abs(sizes[1] - sizes[0]) < 0.01 * sizes[0]
    back = SCLD.load(tmp_path / "2000.scld")
    assert back.provenance_["n_obs"] == 2000 and back.provenance_["n_features"] == 30
    assert back.provenance_["scaug_version"]


def test_type_summaries_match_the_real_library_sizes(fitted, data):
    X, y = data
    c = 0
    real = np.asarray(X[y == fitted.classes_[c]].sum(1)).ravel()
    drawn = fitted.type_summaries_.draw_library(np.zeros(4000, dtype=int), np.random.default_rng(0))
    assert abs(np.median(drawn) - np.median(real)) < 0.05 * np.median(real)
    assert drawn.min() >= real.min() - 1 and drawn.max() <= real.max() + 1


def test_requests_beyond_max_cells_are_refused_before_work(fitted, data):
    _, y = data
    with pytest.raises(ValueError, match="max_cells"):
        fitted.sample({y[0]: 10**9})
    X, _ = fitted.sample({y[0]: 3}, max_cells=3)
    assert X.shape[0] == 3


def test_counts_that_do_not_fit_the_input_dtype_are_widened(data):
    X, y = data
    X8 = X.astype(np.uint8)  # these counts fit uint8; synthetic ones may well not
    model = SCLD(random_state=0, **TINY).fit(X8, y)
    model.type_summaries_.library_quantiles[:] = np.log(1e5)  # huge libraries: counts > 255
    with pytest.warns(UserWarning, match="does not fit the input's dtype uint8"):
        Xs, _ = model.sample({y[0]: 5}, random_state=0)
    assert Xs.dtype == np.int32 and Xs.max() > 255


@pytest.mark.parametrize("bad", [-1.0, 0.5])
def test_almost_counts_are_refused_before_training(data, bad, monkeypatch):
    X, y = data
    X = X.toarray().astype(np.float32)
    X[0, 0] = bad
    monkeypatch.setattr(plans.AutoencoderPlan, "training_step", lambda *a: pytest.fail("trained"))
    with pytest.raises(ValueError, match="looks like counts"):
        SCLD(**TINY).fit(X, y)
    with pytest.raises(ValueError, match="looks like counts"):
        CellAutoencoder(max_epochs=1, verbose=False).fit(X)
    monkeypatch.undo()
    assert CellAutoencoder(likelihood="gaussian", max_epochs=1, verbose=False).fit(X).likelihood_ \
        == "gaussian"


def test_anndata_is_refused_with_the_way_forward(data, monkeypatch):
    X, y = data
    adata = ad.AnnData(X)
    monkeypatch.setattr(plans.AutoencoderPlan, "training_step", lambda *a: pytest.fail("trained"))
    with pytest.raises(TypeError, match="scaug.tl.fit"):
        SCLD(**TINY).fit(adata, y)


def test_mixed_string_and_int_labels_are_refused(data):
    X, y = data
    mixed = y.astype(object)
    mixed[0] = 3
    with pytest.raises(ValueError, match="mixes string labels"):
        SCLD(**TINY).fit(X, mixed)


def test_feature_names_are_kept_and_checked(data, tmp_path):
    X, y = data
    genes = [f"g{i}" for i in range(X.shape[1])]
    model = SCLD(random_state=0, **TINY).fit(X, y, feature_names=genes)
    assert list(model.feature_names_in_) == genes
    assert list(model.autoencoder_.feature_names_in_) == genes
    model.save(tmp_path / "m.scld")
    assert list(SCLD.load(tmp_path / "m.scld").feature_names_in_) == genes
    with pytest.raises(ValueError, match="feature_names must be 30 gene names"):
        SCLD(**TINY).fit(X, y, feature_names=genes[:-1])
    with pytest.raises(ValueError, match="duplicate"):
        SCLD(**TINY).fit(X, y, feature_names=["g"] * X.shape[1])


def test_sparse_input_is_never_densified_whole(data, monkeypatch):
    X, y = data
    X, y = sp.vstack([X] * 25, format="csr"), np.tile(y, 25)  # more cells than one batch
    calls = []
    original = sp.csr_matrix.toarray

    def spy(self, *a, **k):
        calls.append(self.shape[0])
        return original(self, *a, **k)

    monkeypatch.setattr(sp.csr_matrix, "toarray", spy)
    SCLD(random_state=0, **{**TINY, "batch_size": 32}).fit(X, y)
    assert calls and max(calls) < X.shape[0]


@pytest.mark.parametrize("estimator", [SCLD(**TINY), CellAutoencoder(max_epochs=1, verbose=False)],
                         ids=["SCLD", "CellAutoencoder"])
def test_scikit_learn_param_validation(estimator):
    check_param_validation(type(estimator).__name__, estimator)


@pytest.mark.parametrize(("param", "value"), [
    ("learning_rate", 0.0), ("ae_hidden", (0,)), ("ae_hidden", ()), ("screening_quantile", 0.0),
    ("screening_tolerance", -1.0), ("n_latent", True), ("trainer_kwargs", {"max_epochs": 3})])
def test_bad_values_fail_before_work(data, param, value, monkeypatch):
    X, y = data
    monkeypatch.setattr(plans.AutoencoderPlan, "training_step", lambda *a: pytest.fail("trained"))
    with pytest.raises(ValueError, match=param):
        SCLD(**{**TINY, param: value}).fit(X, y)


def test_autoencoder_nan_latent_noise_and_class_balance_are_refused(data):
    X, _ = data
    for param, value in (("latent_noise", float("nan")), ("class_balance", 2.0)):
        with pytest.raises(ValueError, match=param):
            CellAutoencoder(**{param: value}).fit(X)


def test_cpu_threads_are_set_while_fitting_and_restored(data, monkeypatch):
    X, y = data
    seen = []
    original = plans.DenoiserPlan.training_step

    def spy(self, batch, batch_idx):
        seen.append(torch.get_num_threads())
        return original(self, batch, batch_idx)

    monkeypatch.setattr(plans.DenoiserPlan, "training_step", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = SCLD(random_state=0, cpu_threads=1, **TINY).fit(X, y)
        assert set(seen) == {1} and torch.get_num_threads() == 2
        model.sample({y[0]: 2})
        assert torch.get_num_threads() == 2
        seen.clear()
        SCLD(random_state=0, cpu_threads=None, **TINY).fit(X, y)
        assert set(seen) == {2}
    finally:
        torch.set_num_threads(before)


def test_a_model_fitted_on_a_gpu_unpickles_on_the_cpu(fitted, data):
    """No GPU here: a fitted model is marked as fitted on one. Its pickle must carry CPU weights
    and a CPU device, and, where torch sees no GPU, unpickle and sample on the CPU."""
    _, y = data
    model = copy.deepcopy(fitted)
    model.device_ = torch.device("cuda:0")
    state = model.__getstate__()
    assert state["device_"] == torch.device("cpu") and state["_fitted_device"] == "cuda:0"
    assert all(p.device.type == "cpu" for p in state["denoiser_"].parameters())
    back = pickle.loads(pickle.dumps(model))
    if not torch.cuda.is_available():
        assert back.device_ == torch.device("cpu")
        X, _ = back.sample({y[0]: 3}, random_state=0)
        assert X.shape[0] == 3
