"""Conditioning on a type within a donor, batch or sample: the guidance math against an analytic
case, the denoiser and its training, SCLD's fit/sample/save/load with conditions, the
oversampler's batch spread and metadata routing, scaug.tl, the CLI and the simulator's batches.
"""

import pickle
import warnings
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import sklearn
import torch
from imblearn.pipeline import Pipeline
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.preprocessing import LabelEncoder

from scaug import SCLD, CellAutoencoder, cli, tl
from scaug.conditions import check_conditions, resolve_conditions, spread_request
from scaug.datasets import simulate
from scaug.diffusion import GaussianDiffusion, composed_guidance
from scaug.nn import Denoiser
from scaug.oversampler import SCLDOverSampler
from scaug.preprocessing import NormalizeLog1p
from scaug.train import DenoiserPlan

TINY = dict(n_latent=4, ae_hidden=(16,), width=16, depth=1, diffusion_steps=10, max_epochs=1,
            n_sample_steps=3, verbose=False, device="cpu")


# -- the guidance against Gaussian data and its exact denoiser ------------------------------------
SD = torch.tensor([0.5, 1.0])
#: the data mean of each (type, batch) condition; index 2 of either is its null token. The type
#: looks different in each batch (an interaction), as in real data.
MEANS = {(0, 0): [0.0, 0.0], (0, 1): [1.0, 0.5], (1, 0): [3.0, -1.0], (1, 1): [2.0, 2.0],
         (2, 0): [1.5, -0.5], (2, 1): [1.5, 1.25], (0, 2): [0.5, 0.25], (1, 2): [2.5, 0.5],
         (2, 2): [1.5, 0.375]}
TABLE = torch.tensor([[MEANS[(y, b)] for b in range(3)] for y in range(3)])


class ExactDenoiser(torch.nn.Module):
    """The exact v-prediction of N(MEANS[type, batch], SD^2) for conditions (type, batch)."""

    def __init__(self, diffusion):
        super().__init__()
        self.diffusion = diffusion
        self.calls = 0

    def forward(self, z_t, t, c):
        self.calls += 1
        step = torch.round(t * self.diffusion.n_steps).long()
        abar = self.diffusion.alpha_bar[step].float()[:, None]
        a, sigma = abar.sqrt(), (1 - abar).sqrt()
        mu = TABLE[c[:, 0].long(), c[:, 1].long()]
        x0 = mu + a * SD**2 / (a**2 * SD**2 + sigma**2) * (z_t - a * mu)
        return (a * z_t - x0) / sigma


def guided_mean(w_type, w_batch, y=1, b=1):
    """What the guided sampler must return: eps is affine in the data mean (the exact Gaussian
    denoiser), and the guidance an affine combination (weights summing to 1) of predictions."""
    m = np.array(MEANS[(y, b)])
    return (m + (w_type - 1) * (m - np.array(MEANS[(2, b)]))
            + (w_batch - 1) * (m - np.array(MEANS[(y, 2)])))


@pytest.mark.parametrize(("w_type", "w_batch"), [(1.0, 1.0), (1.0, 0.0), (1.0, 2.0), (0.0, 1.0),
                                                 (2.0, 1.5)])
def test_composed_guidance_samples_the_analytic_gaussian(w_type, w_batch):
    diffusion = GaussianDiffusion(1000)
    n = 6000
    noise = torch.randn((n, 2), generator=torch.Generator().manual_seed(0))
    model = ExactDenoiser(diffusion)
    fn = composed_guidance(model, torch.ones((n, 1), dtype=torch.long), null_label=2,
                           attribute_nulls=[2], guidance_scale=w_type, attribute_scales=[w_batch])
    z = diffusion.sample(fn, torch.ones(n, dtype=torch.long), noise, null_label=2,
                         n_sample_steps=15, method="dpm-solver++")
    np.testing.assert_allclose(z.mean(0), guided_mean(w_type, w_batch), atol=0.05)
    # guidance moves the mean only: every condition of the family has the same spread
    np.testing.assert_allclose(z.std(0), SD, rtol=0.05)


def test_every_weight_one_is_the_joint_conditional_in_one_call_per_step():
    diffusion = GaussianDiffusion(1000)
    n = 4000
    noise = torch.randn((n, 2), generator=torch.Generator().manual_seed(1))
    model = ExactDenoiser(diffusion)
    fn = composed_guidance(model, torch.ones((n, 1), dtype=torch.long), null_label=2,
                           attribute_nulls=[2])
    z = diffusion.sample(fn, torch.ones(n, dtype=torch.long), noise, null_label=2,
                         n_sample_steps=20)
    assert model.calls == 20  # no guidance term evaluated at weight 1
    np.testing.assert_allclose(z.mean(0), MEANS[(1, 1)], atol=0.05)
    # CFGen's compositional form with unit weights, v(null) + sum_k [v(k) - v(null)], would
    # target the additive mean instead: on a type that looks different in each batch, not this
    additive = (np.array(MEANS[(1, 2)]) + np.array(MEANS[(2, 1)]) - np.array(MEANS[(2, 2)]))
    assert np.abs(additive - np.array(MEANS[(1, 1)])).max() > 0.5


def test_a_marginalised_row_ignores_its_weight():
    diffusion = GaussianDiffusion(1000)
    n = 4000
    noise = torch.randn((n, 2), generator=torch.Generator().manual_seed(2))
    attrs = torch.cat([torch.ones((n // 2, 1)), torch.full((n // 2, 1), 2)]).long()
    fn = composed_guidance(ExactDenoiser(diffusion), attrs, null_label=2, attribute_nulls=[2],
                           attribute_scales=[3.0])
    z = diffusion.sample(fn, torch.ones(n, dtype=torch.long), noise, null_label=2,
                         n_sample_steps=20)
    np.testing.assert_allclose(z[: n // 2].mean(0), guided_mean(1.0, 3.0), atol=0.06)
    np.testing.assert_allclose(z[n // 2:].mean(0), MEANS[(1, 2)], atol=0.06)


def test_composed_guidance_refuses_misshapen_attributes():
    with pytest.raises(ValueError, match=r"shape \(n, 1\)"):
        composed_guidance(lambda *a: None, torch.zeros((3, 2), dtype=torch.long), null_label=2,
                          attribute_nulls=[2])


# -- the denoiser and its training ---------------------------------------------------------------
def test_type_only_denoiser_is_unchanged_and_attributes_have_null_tokens():
    torch.manual_seed(0)
    plain = Denoiser(4, 3, width=16, depth=2)
    torch.manual_seed(0)
    batched = Denoiser(4, 3, width=16, depth=2, n_values=(2, 5))
    assert all(k.startswith("attributes.") for k in set(batched.state_dict()) - set(plain.state_dict()))
    assert not any(k.startswith("attributes.") for k in plain.state_dict())
    for key, value in plain.state_dict().items():  # attributes are built last: same draws
        torch.testing.assert_close(batched.state_dict()[key], value)
    assert batched.null_codes == (3, 2, 5)
    assert [e.num_embeddings for e in batched.attributes] == [3, 6]
    for block in batched.blocks:  # zero-initialised: the conditions would not show yet
        torch.nn.init.normal_(block.lin2.weight)
    z, t = torch.randn(6, 4), torch.rand(6)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    # a 1-D label is the type with every attribute at its null token
    full = torch.stack([y, torch.full_like(y, 2), torch.full_like(y, 5)], 1)
    torch.testing.assert_close(batched(z, t, y), batched(z, t, full))
    partial = torch.stack([y, torch.zeros_like(y)], 1)  # the last attribute left out: null
    torch.testing.assert_close(batched(z, t, partial),
                               batched(z, t, torch.cat([partial, full[:, 2:]], 1)))
    assert not torch.allclose(batched(z, t, partial), batched(z, t, y))
    with pytest.raises(ValueError, match="4 condition columns"):
        batched(z, t, torch.cat([full, full[:, :1]], 1))


@pytest.mark.parametrize("conditional", [True, False])
def test_training_drops_the_type_and_each_attribute_independently(conditional):
    plan = DenoiserPlan(Denoiser(2, 3, width=8, depth=1, n_values=(4,)), GaussianDiffusion(),
                        null_label=3, attribute_nulls=[4], label_dropout=0.2,
                        conditional=conditional, learning_rate=1e-3, n_steps=1, seed=0)
    torch.manual_seed(0)
    n = 200000
    labels = torch.stack([torch.zeros(n), torch.ones(n)], 1).long()
    dropped = plan._drop_conditions(labels)
    type_null, batch_null = (dropped[:, 0] == 3).float(), (dropped[:, 1] == 4).float()
    assert set(dropped[:, 0].tolist()) <= {0, 3} and set(dropped[:, 1].tolist()) <= {1, 4}
    assert abs(float(batch_null.mean()) - 0.2) < 0.005
    if conditional:
        assert abs(float(type_null.mean()) - 0.2) < 0.005
        # independent: both dropped about 0.2 * 0.2 of the time
        assert abs(float((type_null * batch_null).mean()) - 0.04) < 0.003
    else:  # a model without labels: the type is always the null label
        assert float(type_null.mean()) == 1.0


# -- checking conditions -------------------------------------------------------------------------
@pytest.mark.parametrize(("conditions", "error", "match"), [
    (np.zeros(5), TypeError, "must be a mapping"),
    ({"batch": np.zeros(4)}, ValueError, r"one value per cell of X \(5\)"),
    ({"batch": [0, 1, None, 1, 0]}, ValueError, "missing values"),
    ({"batch": [0.0, 1.0, np.nan, 1.0, 0.0]}, ValueError, "missing values"),
    ({"batch": pd.Series(["a", "b", pd.NA, "a", "b"])}, ValueError, "missing values"),
    ({"cell_type": np.zeros(5)}, ValueError, "may not be named 'cell_type'"),
    ({"n_cells": np.zeros(5)}, ValueError, "may not be named 'n_cells'"),
    ({3: np.zeros(5)}, ValueError, "non-empty strings"),
    ({"": np.zeros(5)}, ValueError, "non-empty strings"),
    ({"batch": np.array(["a", 1, "b", 2, "a"], dtype=object)}, ValueError, "mixes strings"),
    ({"batch": np.zeros((5, 2))}, ValueError, "must be 1-D"),
])
def test_bad_conditions_are_refused(conditions, error, match):
    with pytest.raises(error, match=match):
        check_conditions(conditions, 5)


def test_conditions_from_a_dataframe_keep_their_columns():
    frame = pd.DataFrame({"donor": pd.Categorical(["d1", "d2", "d1"]), "lane": [1, 1, 2]})
    out = check_conditions(frame, 3)
    assert list(out) == ["donor", "lane"]
    assert out["donor"].tolist() == ["d1", "d2", "d1"] and out["lane"].tolist() == [1, 1, 2]
    with pytest.raises(ValueError, match="duplicate column"):
        check_conditions(pd.DataFrame([[1, 2]], columns=["a", "a"]), 1)


def test_resolve_conditions_scalars_arrays_and_none():
    values = {"batch": np.array(["a", "b"], dtype=object), "donor": np.array([1, 2, 3])}
    codes = resolve_conditions({"batch": "b", "donor": [3, None, 1, 2]}, values, 4, per_cell=True)
    np.testing.assert_array_equal(codes, [[1, 2], [1, 3], [1, 0], [1, 1]])  # 3: donor's null
    np.testing.assert_array_equal(resolve_conditions(None, values, 2, per_cell=True),
                                  [[2, 3], [2, 3]])
    with pytest.raises(ValueError, match="Unknown value 'c' of condition 'batch'"):
        resolve_conditions({"batch": "c"}, values, 2, per_cell=True)
    with pytest.raises(ValueError, match="Unknown condition 'lane'"):
        resolve_conditions({"lane": 1}, values, 2, per_cell=True)
    with pytest.raises(ValueError, match="order of the cells"):
        resolve_conditions({"batch": ["a", "b"]}, values, 2, per_cell=False)
    with pytest.raises(ValueError, match=r"one per requested cell \(2"):
        resolve_conditions({"batch": ["a"]}, values, 2, per_cell=True)
    with pytest.raises(TypeError, match="must be a mapping"):
        resolve_conditions(["a"], values, 2, per_cell=True)


def test_spread_request_rules():
    frame = pd.DataFrame({"batch": ["a"] * 6 + ["b"] * 3 + ["c"]})
    labels = np.array(["T"] * 4 + ["B"] * 2 + ["T"] * 3 + ["B"])  # T: 4 a, 3 b; B: 2 a, 1 c
    spread = spread_request({"T": 10, "B": 4}, labels, frame)
    assert spread["batch"].tolist() == ["a"] * 6 + ["b"] * 4 + ["a"] * 3 + ["c"]
    uniform = spread_request({"B": 7}, labels, frame, "uniform")
    assert Counter(uniform["batch"]) == {"a": 3, "b": 2, "c": 2}  # remainders to the first
    seen = {}

    def rule(label, counts):
        seen[label] = counts.to_dict()
        return {"c": 1.0}

    assert spread_request({"T": 3}, labels, frame, rule)["batch"].tolist() == ["c"] * 3
    assert seen == {"T": {"a": 4, "b": 3, "c": 0}}
    pairs = pd.DataFrame({"batch": ["a", "a", "b"], "donor": [1, 2, 1]})
    two = spread_request({"T": 4}, ["T", "T", "T"], pairs)
    assert list(map(tuple, two.to_numpy())) == [("a", 1), ("a", 1), ("a", 2), ("b", 1)]
    with pytest.raises(ValueError, match="non-negative and not all 0"):
        spread_request({"T": 3}, labels, frame, lambda label, counts: {"a": -1.0})
    with pytest.raises(ValueError, match="spread rule must be"):
        spread_request({"T": 3}, labels, frame, "evenly")


# -- SCLD with conditions ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def batched():
    adata = simulate(n_cells=240, n_genes=30, n_types=3, n_markers=5, rare_sizes=(20,),
                     n_batches=3, random_state=0)
    # the rare type never in batch_2: a pair without training cells
    keep = ~((adata.obs["cell_type"] == "type_2") & (adata.obs["batch"] == "batch_2")).to_numpy()
    return adata[keep].copy()


@pytest.fixture(scope="module")
def model(batched):
    return SCLD(random_state=0, **TINY).fit(batched.X, batched.obs["cell_type"],
                                            conditions=batched.obs[["batch"]])


def test_fit_learns_the_attributes_and_their_counts(batched, model):
    assert list(model.conditions_) == ["batch"]
    np.testing.assert_array_equal(model.conditions_["batch"], ["batch_0", "batch_1", "batch_2"])
    expected = pd.crosstab(batched.obs["cell_type"].astype(str), batched.obs["batch"].astype(str))
    got = model.condition_counts_.pivot_table(index="cell_type", columns="batch",
                                              values="n_cells", aggfunc="sum", fill_value=0)
    np.testing.assert_array_equal(got.to_numpy(), expected.to_numpy())
    assert model.condition_counts_["n_cells"].sum() == batched.n_obs
    assert model.denoiser_.n_values == (3,)
    # the library shift of a (type, batch) pair: the median log library of its cells less the
    # type's median; of the batch's cells of every type for a pair of fewer than 10 cells
    log_lib = np.log(np.asarray(batched.X.sum(1), dtype=np.float64).ravel())
    types, batch = batched.obs["cell_type"].to_numpy(), batched.obs["batch"].to_numpy()
    resid = log_lib - pd.Series(log_lib).groupby(types).transform("median").to_numpy()
    shifts = model.library_shifts_["batch"]
    assert shifts.shape == (3, 3)
    small = 0
    for i, t in enumerate(model.classes_):
        for j, b in enumerate(model.conditions_["batch"]):
            pair = (types == t) & (batch == b)
            small += pair.sum() < 10
            cells = pair if pair.sum() >= 10 else batch == b
            np.testing.assert_allclose(shifts[i, j], np.median(resid[cells]))
    assert small >= 1  # the rare type's pairs use the batch's shift


def test_sample_within_a_batch_reports_training_cells_and_keeps_the_order(batched, model):
    per_cell = ["batch_1", None, "batch_0", "batch_1", "batch_0"]
    X, y = model.sample({"type_2": 3, "type_0": 2}, conditions={"batch": per_cell},
                        random_state=0)
    assert X.shape == (5, 30) and list(y) == ["type_2"] * 3 + ["type_0"] * 2
    assert model.sample_conditions_["batch"].tolist() == per_cell
    pairs = pd.crosstab(batched.obs["cell_type"], batched.obs["batch"])
    report = model.sampling_report_
    assert report["type_2"]["conditions"]["batch"] == {
        "batch_0": {"requested": 1, "training_cells": int(pairs.loc["type_2", "batch_0"])},
        "batch_1": {"requested": 1, "training_cells": int(pairs.loc["type_2", "batch_1"])}}
    assert report["type_0"]["conditions"]["batch"] == {
        "batch_0": {"requested": 1, "training_cells": int(pairs.loc["type_0", "batch_0"])},
        "batch_1": {"requested": 1, "training_cells": int(pairs.loc["type_0", "batch_1"])}}
    # the same request twice gives the same cells; marginalised cells differ from batch ones
    again, _ = model.sample({"type_2": 3, "type_0": 2}, conditions={"batch": per_cell},
                            random_state=0)
    assert (X != again).nnz == 0
    np.testing.assert_array_equal(model.sample_latents_.shape, (5, 4))


def test_a_type_never_seen_in_a_batch_can_be_asked_for_with_a_warning(model):
    with pytest.warns(UserWarning, match=r"'type_2' in batch='batch_2' \(4 cells\)"):
        X, _ = model.sample({"type_2": 4}, conditions={"batch": "batch_2"}, random_state=0)
    assert X.shape[0] == 4
    assert model.sampling_report_["type_2"]["conditions"]["batch"]["batch_2"] == {
        "requested": 4, "training_cells": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.sample({"type_2": 4}, conditions={"batch": "batch_1"}, random_state=0)


def test_holistic_sampling_within_a_batch_follows_its_type_proportions(batched, model):
    _, y = model.sample(3000, conditions={"batch": "batch_2"}, random_state=0, n_sample_steps=1)
    within = batched.obs.loc[batched.obs["batch"] == "batch_2", "cell_type"].astype(str)
    expected = within.value_counts(normalize=True)
    got = pd.Series(y).value_counts(normalize=True)
    assert "type_2" not in got.index  # no training cell of type_2 in batch_2
    np.testing.assert_allclose(got[expected.index], expected, atol=0.03)


def test_condition_scales_change_the_cells_and_are_checked(model):
    import copy

    perturbed = copy.deepcopy(model)  # 10 training steps leave the conditions almost unused
    with torch.no_grad():
        for p in perturbed.denoiser_.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))

    def latents(**kw):
        perturbed.sample({"type_0": 20}, conditions={"batch": "batch_0"}, random_state=0, **kw)
        return perturbed.sample_latents_

    base = latents()
    np.testing.assert_array_equal(latents(condition_scales={"batch": 1.0}), base)
    assert np.abs(latents(condition_scales={"batch": 3.0}) - base).max() > 1e-4
    for scales, match in [({"lane": 2.0}, "Unknown condition 'lane'"),
                          ({"batch": -1.0}, "must be a number >= 0"),
                          ({"batch": True}, "must be a number >= 0"),
                          ([2.0], "must be a mapping")]:
        with pytest.raises((ValueError, TypeError), match=match):
            model.sample({"type_0": 2}, condition_scales=scales)


def test_bad_sampling_conditions_fail_before_work(model, monkeypatch):
    import scaug.sampling as sampling

    monkeypatch.setattr(sampling, "draw_latents", lambda *a, **k: pytest.fail("drew latents"))
    for kwargs, match in [
        (dict(n={"type_0": 2}, conditions={"donor": "d1"}), "Unknown condition 'donor'"),
        (dict(n={"type_0": 2}, conditions={"batch": "batch_9"}), "Unknown value 'batch_9'"),
        (dict(n=5, conditions={"batch": ["batch_0"] * 5}), "order of the cells"),
        (dict(n={"type_0": 2}, conditions={"batch": ["batch_0"] * 3}), "one per requested"),
    ]:
        with pytest.raises(ValueError, match=match):
            model.sample(**kwargs)


def test_bad_fit_conditions_fail_before_any_training(batched, monkeypatch):
    monkeypatch.setattr(CellAutoencoder, "fit", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ValueError, match="missing values"):
        SCLD(**TINY).fit(batched.X, batched.obs["cell_type"],
                         conditions={"batch": np.r_[[None], batched.obs["batch"][1:]]})
    with pytest.raises(ValueError, match=r"one value per cell of X"):
        SCLD(**TINY).fit(batched.X, batched.obs["cell_type"], conditions={"batch": [1, 2]})


def test_model_without_conditions_refuses_them(batched):
    plain = SCLD(random_state=0, **TINY).fit(batched.X, batched.obs["cell_type"])
    assert plain.conditions_ == {} and plain.library_shifts_ == {}
    assert plain.condition_counts_["n_cells"].tolist() == plain.class_counts_.tolist()
    with pytest.raises(ValueError, match="fitted without conditions"):
        plain.sample({"type_0": 2}, conditions={"batch": "batch_0"})
    X, _ = plain.sample({"type_0": 2}, random_state=0)
    assert plain.sample_conditions_.shape == (2, 0) and "conditions" not in plain.sampling_report_["type_0"]


def test_unlabelled_model_samples_within_a_batch(batched):
    m = SCLD(random_state=0, **TINY).fit(batched.X, conditions={"batch": batched.obs["batch"]})
    X, y = m.sample(6, conditions={"batch": "batch_1"}, random_state=0)
    assert y is None and X.shape == (6, 30)
    n_batch1 = int((batched.obs["batch"] == "batch_1").sum())
    assert m.sampling_report_[None]["conditions"]["batch"] == {
        "batch_1": {"requested": 6, "training_cells": n_batch1}}
    assert set(m.condition_counts_["cell_type"]) == {-1}


def test_save_load_and_pickle_keep_the_conditions(model, tmp_path):
    path = tmp_path / "batched.scld"
    model.save(path)
    loaded = SCLD.load(path)
    assert list(loaded.conditions_) == ["batch"]
    np.testing.assert_array_equal(loaded.conditions_["batch"], model.conditions_["batch"])
    pd.testing.assert_frame_equal(loaded.condition_counts_, model.condition_counts_)
    np.testing.assert_array_equal(loaded.library_shifts_["batch"], model.library_shifts_["batch"])
    request = dict(n={"type_2": 3, "type_1": 2}, conditions={"batch": "batch_1"}, random_state=3)
    a, _ = model.sample(**request)
    b, _ = loaded.sample(**request)
    c, _ = pickle.loads(pickle.dumps(model)).sample(**request)
    assert (a != b).nnz == 0 and (a != c).nnz == 0


def test_load_checks_the_conditions(model, tmp_path):
    path = tmp_path / "batched.scld"
    model.save(path)
    state = torch.load(path, weights_only=True)

    def broken(change, name):
        damaged = {**state, "conditions": dict(state["conditions"])}
        change(damaged)
        torch.save(damaged, tmp_path / name)
        return tmp_path / name

    cases = [
        (lambda s: s["conditions"].update(values=[["batch_0", "batch_1", "batch_2", "batch_3"]]),
         "attribute embeddings of sizes \\[4\\]"),
        (lambda s: s["conditions"].update(values=[["batch_0", "batch_1"]]), "out of range"),
        (lambda s: s["conditions"].update(names=["cell_type"]), "names"),
        (lambda s: s["conditions"].update(values=[["a", "a", "b"]]), "values of 'batch'"),
        (lambda s: s["conditions"].update(count_codes=s["conditions"]["count_codes"] + 5),
         "out of range"),
        (lambda s: s.update(conditions=None), "attribute embeddings but no conditions"),
    ]
    for i, (change, match) in enumerate(cases):
        with pytest.raises(ValueError, match=match):
            SCLD.load(broken(change, f"bad{i}.scld"))


def test_files_without_conditions_still_load(batched, tmp_path):
    # a file of the previous format: no "conditions" entry at all
    plain = SCLD(random_state=0, **TINY).fit(batched.X, batched.obs["cell_type"])
    plain.save(tmp_path / "plain.scld")
    state = torch.load(tmp_path / "plain.scld", weights_only=True)
    del state["conditions"]
    torch.save(state, tmp_path / "old.scld")
    old = SCLD.load(tmp_path / "old.scld")
    assert old.conditions_ == {}
    pd.testing.assert_frame_equal(old.condition_counts_, plain.condition_counts_)
    a, _ = old.sample({"type_1": 3}, random_state=0)
    b, _ = plain.sample({"type_1": 3}, random_state=0)
    assert (a != b).nnz == 0


def test_cells_are_generated_within_their_batch():
    # strong batch effects: a batch classifier on real latents recognises the batch the
    # synthetic cells were generated within (not so the marginalised ones, a blend of both),
    # and their library sizes follow the batch's
    adata = simulate(n_cells=400, n_genes=30, n_types=2, n_markers=5, rare_sizes=(),
                     n_batches=2, batch_effect_sd=1.0, batch_library_sd=0.0, random_state=1)
    X = adata.X.toarray()
    batch = adata.obs["batch"].to_numpy()
    X[batch == "batch_1"] = np.round(X[batch == "batch_1"] * 2.0)  # a batch sequenced deeper
    m = SCLD(n_latent=4, ae_hidden=(32,), width=32, depth=1, max_epochs=200, diffusion_steps=400,
             n_sample_steps=10, verbose=False, device="cpu", random_state=0)
    m.fit(X, adata.obs["cell_type"], conditions={"batch": batch})
    clf = LogisticRegression(max_iter=1000).fit(m.autoencoder_.transform(X), batch)
    m.sample({"type_0": 200}, random_state=0)
    assert 0.2 < (clf.predict(m.sample_latents_) == "batch_0").mean() < 0.8
    for b in ("batch_0", "batch_1"):
        Xs, _ = m.sample({"type_0": 200}, conditions={"batch": b}, random_state=0)
        assert (clf.predict(m.sample_latents_) == b).mean() > 0.9
        real = X[(batch == b) & (adata.obs["cell_type"] == "type_0").to_numpy()].sum(1)
        assert abs(np.log(np.median(Xs.sum(1)) / np.median(real))) < 0.12


# -- SCLDOverSampler -----------------------------------------------------------------------------
FAST = dict(max_epochs=1, n_sample_steps=3, screening=False, device="cpu", random_state=0,
            scld_params={k: TINY[k] for k in ("n_latent", "ae_hidden", "width", "depth",
                                              "diffusion_steps")})


def test_oversampler_keeps_each_class_batch_make_up(batched):
    X, y = batched.X, batched.obs["cell_type"].astype(str).to_numpy()
    batch = batched.obs["batch"].reset_index(drop=True)  # categorical
    sampler = SCLDOverSampler(sampling_strategy={"type_2": 60}, **FAST)
    X_res, y_res = sampler.fit_resample(X, y, conditions=batch)
    real = Counter(batch[y == "type_2"])
    syn = sampler.synthetic_conditions_
    assert len(syn) == sampler.n_synthetic_ == 60 - (y == "type_2").sum()
    assert isinstance(syn["batch"].dtype, pd.CategoricalDtype)
    assert list(syn["batch"].cat.categories) == list(batch.cat.categories)
    got = Counter(syn["batch"])
    total = sum(real.values())
    for b, n in real.items():  # proportional, whole cells
        assert abs(got[b] - sampler.n_synthetic_ * n / total) < 1
    assert got.get("batch_2", 0) == 0
    assert sampler.model_.sample_conditions_["batch"].tolist() == syn["batch"].astype(str).tolist()
    assert Counter(y_res) == {**Counter(y), "type_2": 60}


def test_oversampler_uniform_spread_warns_about_absent_pairs_and_a_rule(batched):
    X, y = batched.X, batched.obs["cell_type"].astype(str).to_numpy()
    batch = batched.obs["batch"].astype(str).to_numpy()
    sampler = SCLDOverSampler(sampling_strategy={"type_2": 29}, condition_spread="uniform", **FAST)
    with pytest.warns(UserWarning, match="'type_2' in batch='batch_2'"):
        sampler.fit_resample(X, y, conditions={"batch": batch})
    m = 29 - int((y == "type_2").sum())  # equal thirds, remainders to the first batches
    assert Counter(sampler.synthetic_conditions_["batch"]) == {
        f"batch_{b}": m // 3 + (b < m % 3) for b in range(3)}
    ruled = SCLDOverSampler(sampling_strategy={"type_2": 29}, **{
        **FAST, "condition_spread": lambda label, counts: {"batch_1": 1.0}})
    ruled.fit_resample(X, y, conditions=batch)
    assert set(ruled.synthetic_conditions_["batch"]) == {"batch_1"}
    bad = SCLDOverSampler(condition_spread=lambda label, counts: {"batch_1": 0.0}, **FAST)
    with pytest.raises(ValueError, match="not all 0"):
        bad.fit_resample(X, y, conditions=batch)
    without = SCLDOverSampler(sampling_strategy={"type_2": 29}, **FAST)
    without.fit_resample(X, y)
    assert without.synthetic_conditions_ is None and without.model_.conditions_ == {}


def test_oversampler_reuses_a_conditioned_model(batched, model):
    X, y = batched.X, batched.obs["cell_type"].astype(str).to_numpy()
    batch = batched.obs["batch"].astype(str).to_numpy()
    sampler = SCLDOverSampler(model=model, sampling_strategy={"type_2": 29}, **FAST)
    sampler.fit_resample(X, y, conditions=batch)  # unnamed: the model's only attribute
    assert sampler.model_ is model and list(sampler.synthetic_conditions_) == ["batch"]
    with pytest.raises(ValueError, match=r"not fitted with the conditions \['donor'\]"):
        SCLDOverSampler(model=model, **FAST).fit_resample(X, y, conditions={"donor": batch})
    other = np.where(batch == "batch_0", "batch_9", batch)
    with pytest.raises(ValueError, match="Unknown value 'batch_9'"):
        SCLDOverSampler(model=model, **FAST).fit_resample(X, y, conditions=other)


def test_conditions_travel_by_metadata_routing_in_an_imblearn_pipeline(batched, monkeypatch):
    X, y = batched.X, LabelEncoder().fit_transform(batched.obs["cell_type"].astype(str))
    batch = batched.obs["batch"].astype(str).to_numpy()
    seen = []
    original = SCLDOverSampler._fit_resample

    def spy(self, X, y, conditions=None):
        seen.append(None if conditions is None else len(conditions))
        return original(self, X, y, conditions=conditions)

    monkeypatch.setattr(SCLDOverSampler, "_fit_resample", spy)
    with sklearn.config_context(enable_metadata_routing=True):
        aug = SCLDOverSampler(**FAST).set_fit_resample_request(conditions=True)
        pipe = Pipeline([("aug", aug), ("norm", NormalizeLog1p()),
                         ("clf", LogisticRegression(max_iter=300))])
        pipe.fit(X, y, conditions=batch)
        assert pipe.named_steps["aug"].synthetic_conditions_ is not None
        assert seen == [len(y)]
        cv = StratifiedKFold(n_splits=2, shuffle=True, random_state=0)
        scores = cross_val_score(pipe, X, y, cv=cv, params={"conditions": batch})
        assert scores.shape == (2,)
        # sliced with the training fold: one batch per training cell
        assert seen[1:] == [len(train) for train, _ in cv.split(X, y)]
        unrequested = Pipeline([("aug", SCLDOverSampler(**FAST)),
                                ("clf", LogisticRegression(max_iter=300))])
        with pytest.raises(ValueError, match="conditions"):
            unrequested.fit(X, y, conditions=batch)  # routing asks for an explicit request


# -- scaug.tl and the command line ---------------------------------------------------------------
def test_tl_fit_and_augment_with_batch_key(batched):
    adata = batched.copy()
    adata.obs["batch"] = adata.obs["batch"].cat.add_categories(["batch_9"])  # kept, unused
    m = tl.fit(adata, "cell_type", batch_key="batch", random_state=0, **TINY)
    assert list(m.conditions_) == ["batch"]
    aug = tl.augment(adata, "cell_type", batch_key="batch", sampling_strategy={"type_2": 40},
                     random_state=0, **TINY)
    syn = aug.obs[aug.obs["synthetic"]]
    assert list(aug.obs["batch"].cat.categories) == list(adata.obs["batch"].cat.categories)
    assert syn["batch"].notna().all()
    assert aug.uns["scaug"]["params"]["batch_key"] == "batch"
    real = adata.obs.loc[adata.obs["cell_type"] == "type_2", "batch"].value_counts()
    got = syn["batch"].value_counts()
    for b in ("batch_0", "batch_1"):
        assert abs(got[b] - len(syn) * real[b] / real.sum()) < 1
    # a reused model must know the batch key and its values
    reused = tl.augment(adata, "cell_type", batch_key="batch", model=m,
                        sampling_strategy={"type_2": 40}, random_state=0)
    assert reused.obs.loc[reused.obs["synthetic"], "batch"].notna().all()
    plain = tl.fit(adata, "cell_type", random_state=0, **TINY)
    with pytest.raises(ValueError, match=r"not fitted with the conditions \['batch'\]"):
        tl.augment(adata, "cell_type", batch_key="batch", model=plain)
    with pytest.raises(KeyError, match="batch_key 'donor' is not a column"):
        tl.fit(adata, "cell_type", batch_key="donor", **TINY)
    with pytest.raises(ValueError, match="is the labels_key"):
        tl.fit(adata, "cell_type", batch_key="cell_type", **TINY)
    syn_only = tl.sample(m, {"type_1": 3}, conditions={"batch": "batch_1"}, random_state=0)
    assert syn_only.obs["batch"].tolist() == ["batch_1"] * 3
    assert list(syn_only.obs["batch"].cat.categories) == ["batch_0", "batch_1", "batch_2"]


def test_cli_fit_info_and_augment_with_batch_key(batched, tmp_path, capsys):
    path = tmp_path / "in.h5ad"
    batched.write_h5ad(path)
    assert cli.main(["fit", str(path), "--labels-key", "cell_type", "--batch-key", "batch",
                     "-o", str(tmp_path / "m.scld"), "--quick", "--quiet"]) == 0
    assert cli.main(["info", str(tmp_path / "m.scld")]) == 0
    assert "condition batch (3 values): batch_0, batch_1, batch_2" in capsys.readouterr().out
    assert cli.main(["augment", str(path), "--labels-key", "cell_type", "--batch-key", "batch",
                     "--strategy", "type_2=40", "-o", str(tmp_path / "out.h5ad"), "--quick",
                     "--quiet"]) == 0
    import anndata as ad

    out = ad.read_h5ad(tmp_path / "out.h5ad")
    assert out.obs.loc[out.obs["synthetic"], "batch"].notna().all()
    assert cli.main(["augment", str(path), "--labels-key", "cell_type", "--batch-key", "donor",
                     "-o", str(tmp_path / "x.h5ad"), "--quick", "--quiet"]) == 2
    assert "batch_key 'donor' is not a column" in capsys.readouterr().err


# -- the simulator's batches ---------------------------------------------------------------------
def test_one_batch_is_the_simulation_without_batches():
    a = simulate(n_cells=200, n_genes=40, random_state=5)
    b = simulate(n_cells=200, n_genes=40, random_state=5, batch_effect_sd=2.0,
                 batch_library_sd=2.0)
    assert (a.X != b.X).nnz == 0 and a.obs.equals(b.obs) and "batch" not in a.obs
    assert "batch_shift" not in a.uns["simulation"]


def test_simulated_batch_effects_have_their_sizes():
    adata = simulate(n_cells=6000, n_genes=60, n_types=2, n_markers=5, rare_sizes=(),
                     n_batches=2, batch_effect_sd=0.5, batch_type_effect_sd=0.0,
                     batch_library_sd=0.4, library_size_sd=0.2, random_state=0)
    truth = adata.uns["simulation"]
    assert truth["batch_shift"].shape == (2, 60) and truth["batch_type_shift"].shape == (2, 2, 60)
    batch = adata.obs["batch"].to_numpy()
    assert set(np.unique(batch)) == {"batch_0", "batch_1"}
    X = adata.X.toarray()
    # per gene, the log ratio of the two batches' mean expression is the simulated shift
    # difference (plus the library shift difference, the same for every gene)
    ratio = np.log(X[batch == "batch_1"].mean(0) / X[batch == "batch_0"].mean(0))
    expected = (truth["batch_shift"][1] - truth["batch_shift"][0]
                + truth["batch_library_shift"][1] - truth["batch_library_shift"][0])
    assert np.corrcoef(ratio, expected)[0, 1] > 0.95
    np.testing.assert_allclose(np.median(ratio - expected), 0.0, atol=0.05)
    sf = adata.obs["size_factor"].to_numpy()
    np.testing.assert_allclose(np.log(np.median(sf[batch == "batch_1"]) / np.median(sf[batch == "batch_0"])),
                               np.diff(truth["batch_library_shift"])[0], atol=0.03)
