"""A pretrained CellAutoencoder reused on data with other genes: alignment by name, surgery of the
gene-specific layers, fine-tuning, refusal below the overlap, SCLD and SCLDOverSampler on top."""

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from scaug import SCLD, CellAutoencoder, OnDiskCells, SCLDOverSampler
from scaug._utils import cpu_generator
from scaug.datasets import simulate
from scaug.preprocessing import NormalizeLog1p
from scaug.train import plans

AE_TINY = dict(n_latent=4, hidden=(16, 8), max_epochs=2, verbose=False, device="cpu",
               random_state=0)
SCLD_TINY = dict(width=16, depth=1, max_epochs=2, diffusion_steps=20, n_sample_steps=3,
                 verbose=False, device="cpu", random_state=0)
N_GENES = 40
GENES = [f"g{i}" for i in range(N_GENES)]


@pytest.fixture(scope="module")
def data():
    a = simulate(n_cells=240, n_genes=N_GENES, n_types=3, rare_sizes=(20,), random_state=0)
    return a.X.toarray().astype(np.float32), a.obs["cell_type"].astype(str).to_numpy()


@pytest.fixture(scope="module")
def pretrained(data):
    X, _ = data
    return CellAutoencoder(**AE_TINY).fit(X, feature_names=GENES)


@pytest.fixture(scope="module")
def other(data):
    """The same cells in the user's genes: 30 of the encoder's 40, shuffled, and 5 new ones."""
    X, y = data
    rng = np.random.default_rng(1)
    kept = list(rng.permutation(N_GENES)[:30])
    new = rng.poisson(3.0, size=(X.shape[0], 5)).astype(np.float32)
    genes = [GENES[i] for i in kept[:15]] + [f"new{i}" for i in range(5)] + [GENES[i] for i in kept[15:]]
    values = np.hstack([X[:, kept[:15]], new, X[:, kept[15:]]])
    return pd.DataFrame(values, columns=genes), y, kept


def _fails_if_trained(monkeypatch):
    for plan in (plans.AutoencoderPlan, plans.AdaptPlan):
        monkeypatch.setattr(plan, "training_step",
                            lambda *a, **k: pytest.fail("trained before refusing"))


def test_overlap_is_reported(pretrained, other):
    df, _, _ = other
    report = pretrained.gene_overlap(df)
    assert report == {"n_genes": 35, "n_encoder_genes": 40, "n_shared": 30, "n_missing": 10,
                      "n_new": 5, "overlap": 30 / 35}
    assert pretrained.gene_overlap(df.to_numpy(), feature_names=list(df.columns)) == report


def test_adapted_autoencoder_has_the_users_genes_in_order(pretrained, other):
    df, _, _ = other
    adapted = pretrained.adapt(df, max_epochs=1)
    assert list(adapted.feature_names_in_) == list(df.columns)
    assert adapted.n_features_in_ == 35 and adapted.gene_overlap_["n_new"] == 5
    assert adapted.transform(df).shape == (len(df), 4)
    Z = adapted.transform(df.iloc[:7])
    X_syn = adapted.generate(Z, df.iloc[:7].sum(1).to_numpy(), generator=cpu_generator(0))
    assert X_syn.shape == (7, 35)
    # the pretrained autoencoder is not changed, and still refuses the other genes itself
    assert pretrained.n_features_in_ == 40 and not hasattr(pretrained, "gene_overlap_")
    with pytest.raises(ValueError, match="genes"):
        pretrained.transform(df)


def test_shared_genes_weights_are_copied_before_fine_tuning(pretrained, other):
    df, _, kept = other
    adapted = pretrained.adapt(df, max_epochs=0)
    old, new = pretrained.module_.state_dict(), adapted.module_.state_dict()
    user_cols = np.r_[0:15, 20:35]   # where the shared genes are in the user's order
    src = torch.as_tensor(kept)
    cols = torch.as_tensor(user_cols)
    assert torch.equal(new["encoder.0.0.weight"][:, cols], old["encoder.0.0.weight"][:, src])
    for key in ("decoder.1.weight", "decoder.1.bias", "gene_log_scale"):
        assert torch.equal(new[key][cols], old[key][src]), key
    # new genes: no input weight, no output weight (they change nothing before fine-tuning)
    assert not new["encoder.0.0.weight"][:, 15:20].any()
    assert not new["decoder.1.weight"][15:20].any()
    assert torch.isfinite(new["decoder.1.bias"][15:20]).all()
    # the trunk is copied whole
    for key, value in old.items():
        if key.startswith(("encoder.0.1", "encoder.0.3", "encoder.1", "decoder.0")):
            assert torch.equal(new[key], value), key
    # so the latents of cells with no new-gene counts are those of the pretrained encoder on the
    # shared genes (the encoder's input is normalised over the genes it is given)
    X_shared = df.to_numpy().copy()
    X_shared[:, 15:20] = 0
    full = np.zeros((len(df), N_GENES), np.float32)
    full[:, kept] = X_shared[:, user_cols]
    np.testing.assert_allclose(adapted.transform(pd.DataFrame(X_shared, columns=df.columns)),
                               pretrained.transform(pd.DataFrame(full, columns=GENES)), rtol=1e-5, atol=1e-5)


def test_reordered_genes_are_an_exact_permutation(pretrained, data):
    X, _ = data
    order = np.random.default_rng(2).permutation(N_GENES)
    df = pd.DataFrame(X[:, order], columns=[GENES[i] for i in order])
    adapted = pretrained.adapt(df)  # no fine-tuning needed by default
    assert adapted.history_ == [] and adapted.gene_overlap_["overlap"] == 1.0
    np.testing.assert_allclose(adapted.transform(df), pretrained.transform(pd.DataFrame(X, columns=GENES)),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("finetune", ["genes", "all"])
def test_fine_tuning_trains_the_gene_layers_and_keeps_the_trunk(pretrained, other, finetune):
    df, _, _ = other
    before = {k: v.clone() for k, v in pretrained.module_.state_dict().items()}
    start = pretrained.adapt(df, max_epochs=0).module_.state_dict()
    tuned = pretrained.adapt(df, max_epochs=2, finetune=finetune)
    assert len(tuned.history_) == 2
    after = tuned.module_.state_dict()
    assert not torch.equal(after["encoder.0.0.weight"], start["encoder.0.0.weight"])
    new = torch.from_numpy(df.columns.str.startswith("new"))
    report = tuned.adaptation_
    kept = report["decoder"] == "pretrained"
    if finetune == "genes":  # the rows under which held-out cells are more likely
        assert set(report["validation_loglik"]) == {"pretrained", "fitted"}
        assert report["decoder"] == max(report["validation_loglik"], key=report["validation_loglik"].get)
        assert report["n_validation_cells"] > 0
    else:
        assert report["decoder"] == "all" and not kept
    # the new genes' output rows are learned; the shared genes' rows stay the pretrained
    # decoder's exactly (weight decay included) when those were kept, and train otherwise
    for key in ("decoder.1.weight", "decoder.1.bias", "gene_log_scale"):
        assert not torch.equal(after[key][new], start[key][new])
        assert torch.equal(after[key][~new], start[key][~new]) == kept
    for key in ("encoder.1.weight", "decoder.0.0.weight"):
        assert torch.equal(after[key], start[key]) == (finetune == "genes")
    assert all(p.requires_grad for p in tuned.module_.parameters())  # nothing left frozen
    assert all(not p._backward_hooks for p in tuned.module_.parameters())  # no gradient mask left
    for k, v in pretrained.module_.state_dict().items():
        assert torch.equal(v, before[k])


def test_fine_tuning_teaches_the_encoder_the_pretrained_latents(data):
    """The adapted encoder learns, from the user's cells alone, the latents the pretrained one
    gives the same cells with all its genes: closer to them than the transplanted weights."""
    X, y = data
    ae = CellAutoencoder(**{**AE_TINY, "max_epochs": 20}).fit(X, feature_names=GENES)
    full = ae.transform(pd.DataFrame(X, columns=GENES))
    df = pd.DataFrame(X[:, :20], columns=GENES[:20])  # half of the genes measured
    transplanted = ae.adapt(df, max_epochs=0).transform(df)
    tuned = ae.adapt(df, y, max_epochs=20).transform(df)

    def r2(z):
        return 1 - ((z - full) ** 2).sum() / ((full - full.mean(0)) ** 2).sum()

    assert r2(tuned) > r2(transplanted) + 0.2, (r2(tuned), r2(transplanted))
    assert r2(tuned) > 0.0


def test_encode_observed_imputes_the_missing_genes(data):
    X, _ = data
    ae = CellAutoencoder(**{**AE_TINY, "max_epochs": 20}).fit(X)
    m, full = ae.module_, torch.from_numpy(ae.transform(X))

    def encode(x, genes, n_iter):
        return m.encode_observed(torch.from_numpy(x), torch.as_tensor(genes), n_iter=n_iter,
                                 generator=cpu_generator(0))

    # every gene measured: the plain encoder, whatever the iterations
    torch.testing.assert_close(encode(X, np.arange(N_GENES), 3), full)
    # half of them: the zero-filled start is far off, imputing draws from the decoder pulls the
    # latents toward those of the full cells
    sst = ((full - full.mean(0)) ** 2).sum()
    r2 = {n: float(1 - ((encode(X[:, :20], np.arange(20), n) - full) ** 2).sum() / sst)
          for n in (0, 8)}
    assert r2[8] > r2[0] + 0.3, r2
    assert torch.equal(encode(X[:, :20], np.arange(20), 8), encode(X[:, :20], np.arange(20), 8))


def test_decoder_rows_chosen_by_held_out_likelihood(data, monkeypatch):
    """Both versions of the shared genes' output rows are trained; the one under which held-out
    cells are more likely is kept, and the report survives saving."""
    from scaug import transfer as module

    X, _ = data
    ae = CellAutoencoder(**AE_TINY).fit(X, feature_names=GENES)
    df = pd.DataFrame(X[:, :30], columns=GENES[:30])
    for favoured in ("pretrained", "fitted"):
        calls = []

        def loglik(*args, calls=calls, favoured=favoured, **kwargs):  # fitted rows come second
            calls.append(1)
            return 1.0 if (len(calls) == 1) == (favoured == "pretrained") else 0.0

        monkeypatch.setattr(module, "held_out_loglik", loglik)
        tuned = ae.adapt(df, max_epochs=1)
        assert tuned.adaptation_["decoder"] == favoured and len(calls) == 2
        shared_rows = tuned.module_.state_dict()["decoder.1.weight"]
        start = ae.adapt(df, max_epochs=0).module_.state_dict()["decoder.1.weight"]
        assert torch.equal(shared_rows, start) == (favoured == "pretrained")
    # without cells to hold out (no type of 100 cells), the pretrained rows, and nothing compared
    small = ae.adapt(df.iloc[:60], max_epochs=1)
    assert small.adaptation_["decoder"] == "pretrained"
    assert small.adaptation_["n_validation_cells"] == 0 and small.adaptation_["validation_loglik"] == {}


def test_teacher_rows_keep_every_class():
    from scaug.transfer import teacher_rows

    codes = np.repeat([0, 1, 2], [5, 300, 1000])
    rows = teacher_rows(codes, len(codes), 100, seed=0)
    assert len(rows) == 100 and len(np.unique(rows)) == 100 and np.all(np.diff(rows) > 0)
    assert np.bincount(codes[rows]).tolist() == [5, 47, 48]  # the rare class whole, the rest even
    assert np.array_equal(teacher_rows(None, 50, 100, seed=0), np.arange(50))
    assert len(teacher_rows(None, 500, 100, seed=0)) == 100


def test_refused_below_the_overlap_before_training(pretrained, data, monkeypatch):
    X, y = data
    _fails_if_trained(monkeypatch)
    genes = GENES[:10] + [f"x{i}" for i in range(30)]  # 10 of 40 known: 25 %
    df = pd.DataFrame(X, columns=genes)
    with pytest.raises(ValueError, match=r"Only 10 of X's 40 genes \(25.0 %\).*min_overlap=0.5"):
        pretrained.adapt(df)
    with pytest.raises(ValueError, match="min_overlap=0.3"):
        SCLD(autoencoder=pretrained, min_gene_overlap=0.3, **SCLD_TINY).fit(df, y)
    with pytest.raises(ValueError, match="min_overlap"):
        SCLDOverSampler(model=pretrained, max_epochs=1, random_state=0).fit_resample(df, y)
    with pytest.raises(ValueError, match="aligning other genes needs their names"):
        pretrained.adapt(X[:, :30])
    with pytest.raises(ValueError, match="give gene names to both"):
        SCLD(autoencoder=pretrained, **SCLD_TINY).fit(X[:, :30], y)
    with pytest.raises(ValueError, match="duplicates"):
        pretrained.adapt(pd.DataFrame(X[:, :2], columns=["g0", "g0"]))
    with pytest.raises(ValueError, match="min_overlap"):
        pretrained.adapt(df, min_overlap=1.5)
    with pytest.raises(ValueError, match="needs raw counts"):
        pretrained.adapt(pd.DataFrame(NormalizeLog1p().fit_transform(X), columns=GENES[::-1]))
    assert pretrained.adapt(df, min_overlap=0.25, max_epochs=0).gene_overlap_["n_shared"] == 10


def test_scld_on_other_genes_and_all_or_nothing(pretrained, data, other, monkeypatch):
    X, y = data
    df, _, _ = other
    model = SCLD(autoencoder=pretrained, **SCLD_TINY).fit(df.to_numpy(), y,
                                                          feature_names=list(df.columns))
    assert list(model.feature_names_in_) == list(df.columns)
    assert model.gene_overlap_["n_new"] == 5 and len(model.autoencoder_.history_) == 2
    X_syn, y_syn = model.sample({"type_2": 9}, random_state=0)
    assert X_syn.shape == (9, 35) and set(y_syn) == {"type_2"}
    model.check_genes(df)
    # same genes: reused as is, nothing reported
    same = SCLD(autoencoder=pretrained, **SCLD_TINY).fit(X, y, feature_names=GENES)
    assert same.gene_overlap_ is None
    # a refused refit keeps the old model whole
    before = dict(vars(model))
    bad = pd.DataFrame(X, columns=GENES[:5] + [f"x{i}" for i in range(35)])
    with pytest.raises(ValueError, match="min_overlap"):
        model.fit(bad, y)
    assert model.autoencoder_ is before["autoencoder_"] and model.denoiser_ is before["denoiser_"]


def test_oversampler_with_a_saved_autoencoder_on_other_genes(pretrained, other, tmp_path):
    df, y, _ = other
    path = tmp_path / "encoder.scae"
    pretrained.save(path)
    sampler = SCLDOverSampler(model=path, sampling_strategy={"type_2": 40}, max_epochs=2,
                              n_sample_steps=3, random_state=0,
                              scld_params=dict(width=16, depth=1, diffusion_steps=20))
    X_res, y_res = sampler.fit_resample(df, pd.Series(y))
    assert isinstance(X_res, pd.DataFrame) and list(X_res.columns) == list(df.columns)
    assert len(X_res) == len(df) + 20 and (y_res == "type_2").sum() == 40
    assert sampler.model_.gene_overlap_["n_shared"] == 30
    synthetic = X_res.to_numpy()[sampler.synthetic_mask_]
    assert np.array_equal(synthetic, np.round(synthetic)) and synthetic.min() >= 0
    # a fitted SCLD with other genes is refused, with the way to reuse its encoder
    fitted = sampler.model_
    with pytest.raises(ValueError, match=r"model=<the SCLD>\.autoencoder_"):
        SCLDOverSampler(model=fitted).fit_resample(df.iloc[:, :30], y)


def test_adapted_models_save_and_load(pretrained, other, data, tmp_path):
    df, _, _ = other
    _, y = data
    adapted = pretrained.adapt(df, max_epochs=1)
    adapted.save(tmp_path / "adapted.scae")
    back = CellAutoencoder.load(tmp_path / "adapted.scae", device="cpu")
    assert list(back.feature_names_in_) == list(df.columns)
    assert back.gene_overlap_ == adapted.gene_overlap_
    assert back.adaptation_ == adapted.adaptation_ and adapted.adaptation_["n_teaching_cells"] > 0
    np.testing.assert_array_equal(back.transform(df), adapted.transform(df))
    model = SCLD(autoencoder=tmp_path / "adapted.scae", **SCLD_TINY).fit(df, y)  # same genes now
    assert model.gene_overlap_ is None
    model = SCLD(autoencoder=pretrained, **SCLD_TINY).fit(df, y)
    model.save(tmp_path / "m.scld")
    loaded = SCLD.load(tmp_path / "m.scld", device="cpu")
    assert loaded.gene_overlap_ == model.gene_overlap_
    assert list(loaded.feature_names_in_) == list(df.columns)
    a, _ = model.sample({"type_0": 5}, random_state=3)
    b, _ = loaded.sample({"type_0": 5}, random_state=3)
    np.testing.assert_array_equal(a, b)


def test_continuous_data(data):
    X, _ = data
    logx = NormalizeLog1p().fit_transform(X).astype(np.float32)
    ae = CellAutoencoder(**AE_TINY).fit(logx, feature_names=GENES)
    assert ae.likelihood_ == "gaussian"
    extra = np.random.default_rng(0).normal(5.0, 2.0, size=(len(X), 3)).astype(np.float32)
    df = pd.DataFrame(np.hstack([logx[:, 10:], extra]), columns=GENES[10:] + ["a", "b", "c"])
    adapted = ae.adapt(df, max_epochs=0)
    gm = adapted.module_.gene_mean
    assert torch.equal(gm[:30], ae.module_.gene_mean[10:])
    np.testing.assert_allclose(gm[30:].numpy(), extra.mean(0), rtol=1e-4)
    assert not adapted.nonnegative_  # the new genes have negative values


def test_adapt_from_disk(pretrained, other, tmp_path):
    df, _, _ = other
    a = ad.AnnData(sp.csr_matrix(df.to_numpy()))
    a.var_names = list(df.columns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        a.write_h5ad(tmp_path / "cells.h5ad")
    cells = OnDiskCells(tmp_path / "cells.h5ad")
    assert pretrained.gene_overlap(cells)["n_new"] == 5
    adapted = pretrained.adapt(cells, max_epochs=1)
    assert list(adapted.feature_names_in_) == list(df.columns)
    in_memory = pretrained.adapt(df, max_epochs=0)
    start = pretrained.adapt(cells, max_epochs=0)
    np.testing.assert_allclose(start.transform(df), in_memory.transform(df), rtol=1e-5, atol=1e-6)


def test_adapt_matches_detection_on_the_cells_it_adapts_to(data, other):
    X, _ = data
    df, _, _ = other
    matched = CellAutoencoder(match_detection=True, **AE_TINY).fit(X, feature_names=GENES)
    adapted = matched.adapt(df, max_epochs=2)
    Z, cells = adapted.transform(df), df.to_numpy()
    x = torch.as_tensor(cells)
    with torch.no_grad():
        mu, theta = adapted.module_.nb_parameters(adapted.module_.encode(
            adapted.module_.transform_input(x)), x.sum(1))
        expected = (1 - (theta / (theta + mu)) ** theta).mean(0).numpy()
    observed = (cells > 0).mean(0)
    reachable = (1 - np.exp(-mu.numpy())).mean(0) > observed + 0.01  # the Poisson limit
    np.testing.assert_allclose(expected[reachable], observed[reachable], atol=1e-3)
    assert reachable.sum() >= 20 and Z.shape == (len(df), 4)
