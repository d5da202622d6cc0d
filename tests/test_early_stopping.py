"""Early stopping on a validation split, and training only the stages the settings use."""

import numpy as np
import pytest
import torch

from scaug import SCLD, CellAutoencoder
from scaug.datasets import simulate
from scaug.diffusion import GaussianDiffusion
from scaug.nn import Denoiser
from scaug.train import ConvergenceStop, DenoiserPlan, MinibatchData, validation_split

SMALL = dict(n_latent=4, ae_hidden=(16,), width=16, depth=1, batch_size=64, verbose=False,
             device="cpu", random_state=0)


@pytest.fixture(scope="module")
def data():
    ad = simulate(n_cells=600, n_genes=40, n_types=3, rare_sizes=(12,), random_state=0)
    return ad.X.tocsr(), ad.obs["cell_type"].astype(str).to_numpy()


def test_convergence_stop_counts_checks_without_relative_improvement():
    stop = ConvergenceStop(patience=3, tol=0.01, check_every=10)
    losses = [1.0, 0.9, 0.895, 0.899, 0.85, 0.849, 0.848, 0.847]
    # 0.895 is within 1 % of 0.9: no improvement; 0.85 improves; then three stale checks
    decisions = [stop.update(10 * (i + 1), v) for i, v in enumerate(losses)]
    assert decisions == [False, False, False, False, False, False, False, True]
    assert stop.stopped_at == 80 and stop.best == 0.85
    assert [s for s, _ in stop.history] == list(range(10, 90, 10))


def test_convergence_stop_returns_to_the_lowest_loss():
    from types import SimpleNamespace

    class Plan:  # weights are a number; the loss follows a fixed schedule
        def __init__(self):
            self.weights, self.restored = 0, None

        def validation_loss(self):
            return {10: 1.0, 20: 0.8, 30: 0.9, 40: 0.95}[trainer.global_step]

        def checkpoint(self):
            return self.weights

        def restore(self, state):
            self.restored = state

    plan, trainer = Plan(), SimpleNamespace(global_step=0, should_stop=False)
    stop = ConvergenceStop(patience=2, tol=0.0, check_every=10)
    for step in (10, 20, 30, 40):
        trainer.global_step, plan.weights = step, step * 100
        stop.on_train_batch_end(trainer, plan, None, None, step - 1)
    assert trainer.should_stop and stop.stopped_at == 40 and stop.best_step == 20
    stop.on_train_end(trainer, plan)
    assert plan.restored == 2000  # the weights of step 20


def test_validation_split_keeps_rare_groups_whole():
    groups = np.repeat([0, 1, 2], [1000, 150, 99])
    mask = validation_split(groups, 0.1, seed=0)
    assert mask[groups == 0].sum() == 100 and mask[groups == 1].sum() == 15
    assert mask[groups == 2].sum() == 0
    assert np.array_equal(mask, validation_split(groups, 0.1, seed=0))  # seeded
    assert not np.array_equal(mask, validation_split(groups, 0.1, seed=1))
    assert validation_split(np.zeros(50, int), 0.1, seed=0) is None  # nothing big enough


def test_minibatch_rows_never_yield_held_out_rows():
    values = np.arange(20, dtype=np.float32)[:, None]
    rows = np.array([1, 3, 5, 7, 11])
    seen = np.concatenate([b[0].numpy().ravel() for b in
                           MinibatchData([values], batch_size=2, seed=0, rows=rows)])
    assert sorted(seen.tolist()) == rows.tolist()  # one pass over exactly these rows


def test_denoiser_validation_loss_uses_fixed_draws():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(40, 3)).astype(np.float32)
    labels = np.repeat([0, 1], 20)
    plan = DenoiserPlan(Denoiser(3, 2, width=8, depth=1), GaussianDiffusion(), null_label=2,
                        label_dropout=0.1, conditional=True, learning_rate=1e-3, n_steps=5,
                        seed=0, validation=(z, labels))
    plan.on_fit_start()  # builds the averaged network
    first, second = plan.validation_loss(), plan.validation_loss()
    assert first == second  # same network, same draws: the same loss
    # the loss is the v-prediction error of the averaged network on those draws
    z0, lab, t, noise = plan._validation
    diffusion = GaussianDiffusion()
    a, s = diffusion._coef(t, "cpu")
    v = a * noise - s * z0
    pred = plan.averaged(diffusion.q_sample(z0, t, noise), diffusion.time_input(t), lab)
    assert first == pytest.approx(float(((pred - v) ** 2).mean()), rel=1e-5)
    assert len(z0) == 8 * 40  # eight draws of every held-out latent


def test_autoencoder_stops_before_its_budget_and_saves_where(data, tmp_path):
    X, _ = data
    ae = CellAutoencoder(n_latent=4, hidden=(16,), max_epochs=400, check_every=20, verbose=False,
                         random_state=0, device="cpu").fit(X)
    assert ae.stopped_at_ is not None and ae.stopped_at_ < 400 * 5
    assert len(ae.history_) < 400
    full = CellAutoencoder(n_latent=4, hidden=(16,), max_epochs=30, early_stopping=False,
                           verbose=False, random_state=0, device="cpu").fit(X)
    assert full.stopped_at_ is None and len(full.history_) == 30
    ae.save(tmp_path / "ae.pt")
    assert CellAutoencoder.load(tmp_path / "ae.pt").stopped_at_ == ae.stopped_at_


def test_validation_cells_are_checked(data):
    X, _ = data
    with pytest.raises(ValueError, match="validation_cells must be a boolean array"):
        CellAutoencoder(max_epochs=1, verbose=False).fit(X, validation_cells=np.ones(3, bool))


def test_scld_stops_both_stages_and_keeps_rare_cells(data, monkeypatch):
    X, y = data
    import scaug.stages as stages

    held_out = {}
    original = stages.validation_split

    def spy(groups, fraction, seed, **kw):
        held_out["mask"] = original(groups, fraction, seed, **kw)
        return held_out["mask"]

    monkeypatch.setattr(stages, "validation_split", spy)
    model = SCLD(max_epochs=400, diffusion_steps=4000, n_iter_no_change=2, tol=0.05,
                 **SMALL).fit(X, y)
    assert model.stopped_at_["autoencoder"] is not None
    assert model.stopped_at_["diffusion"] is not None and model.stopped_at_["diffusion"] < 4000
    rare = y == "type_2"
    assert rare.sum() == 12 and not held_out["mask"][rare].any()
    assert held_out["mask"].sum() == sum(round(0.1 * (y == t).sum()) for t in np.unique(y[~rare]))
    # the per-type summaries still count every cell
    assert list(model.class_counts_) == [int((y == t).sum()) for t in model.classes_]


def test_post_guidance_classifier_is_trained_only_when_used(data):
    X, y = data
    fast = dict(max_epochs=2, diffusion_steps=20, n_sample_steps=3, **SMALL)
    plain = SCLD(**fast).fit(X, y)
    assert plain.classifier_ is None and plain.classifier_history_ == []
    plain.sample({"type_2": 4})  # no post-guidance: fine
    with pytest.raises(ValueError, match="latent_classifier=True"):
        plain.sample({"type_2": 4}, classifier_scale=1.0)
    with pytest.raises(ValueError, match="latent_classifier=True"):
        plain.sample({"type_2": 4}, screening=True)
    assert SCLD(screening=True, **fast).fit(X, y).classifier_ is not None
    assert SCLD(classifier_scale=1.0, **fast).fit(X, y).classifier_ is not None
    both = SCLD(latent_classifier=True, **fast).fit(X, y)
    Xs, _ = both.sample({"type_2": 4}, classifier_scale=1.0, screening=True)
    assert Xs.shape == (4, X.shape[1])


def test_same_seed_same_early_stopped_model(data):
    X, y = data
    settings = dict(max_epochs=50, diffusion_steps=300, n_sample_steps=3, **SMALL)
    a = SCLD(**settings).fit(X, y)
    b = SCLD(**settings).fit(X, y)
    assert a.stopped_at_ == b.stopped_at_
    for pa, pb in zip(a.denoiser_.parameters(), b.denoiser_.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_without_early_stopping_the_full_budget_runs(data):
    X, y = data
    model = SCLD(max_epochs=20, diffusion_steps=120, early_stopping=False, **SMALL).fit(X, y)
    assert model.stopped_at_ == {"autoencoder": None, "diffusion": None}
    # history: one running mean every 50 steps and at the last step
    assert len(model.diffusion_history_) == 4


def test_oversampler_with_post_guidance_trains_the_classifier(data):
    from scaug import SCLDOverSampler

    X, y = data
    sampler = SCLDOverSampler(classifier_scale=1.0, screening=True, max_epochs=2, n_sample_steps=3,
                              device="cpu", verbose=False, random_state=0,
                              scld_params=dict(n_latent=4, ae_hidden=(16,), width=16, depth=1,
                                               diffusion_steps=20))
    X_res, y_res = sampler.fit_resample(X, y)
    assert sampler.model_.classifier_ is not None
    assert (y_res == "type_2").sum() == (y == "type_0").sum()  # raised to the largest type
