"""scaug.tl: AnnData in, AnnData out (tiny models: these test the plumbing, not the cells)."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scaug
from scaug import tl
from scaug.datasets import simulate

TINY = dict(n_latent=4, ae_hidden=(16,), width=16, depth=1, diffusion_steps=10, max_epochs=1,
            n_sample_steps=3, verbose=False)


def _adata():
    adata = simulate(n_cells=120, n_genes=20, n_types=3, n_markers=5, rare_sizes=(10,),
                     random_state=0)  # 55, 55 and 10 cells; CSR float32 counts
    adata.obs["flag"] = np.arange(adata.n_obs) % 2 == 0
    adata.obs["number"] = np.arange(adata.n_obs)
    adata.obs["batch"] = pd.Categorical(np.where(adata.obs["flag"], "b1", "b2"),
                                        categories=["b1", "b2", "b3"])
    adata.layers["counts"] = adata.X.copy()
    adata.layers["lognorm"] = adata.X.log1p()
    adata.obsm["X_pca"] = np.ones((adata.n_obs, 2))
    adata.uns["note"] = "kept"
    return adata


@pytest.fixture(scope="module")
def adata():
    return _adata()


@pytest.fixture(scope="module")
def model(adata):
    return tl.fit(adata, "cell_type", random_state=0, **TINY)


def _same(a, b):
    """Everything of two AnnData objects is equal."""
    def eq(x, y):
        if sp.issparse(x):
            return sp.issparse(y) and x.format == y.format and (x != y).nnz == 0
        return np.array_equal(np.asarray(x), np.asarray(y))

    assert a.obs.equals(b.obs) and a.var.equals(b.var)
    assert list(a.obs.dtypes) == list(b.obs.dtypes)
    assert eq(a.X, b.X)
    assert set(a.layers) == set(b.layers) and all(eq(a.layers[k], b.layers[k]) for k in a.layers)
    assert set(a.obsm) == set(b.obsm) and all(eq(a.obsm[k], b.obsm[k]) for k in a.obsm)
    assert set(a.uns) == set(b.uns)


def test_augment_layout_and_input_untouched(adata, tmp_path):
    before = adata.copy()
    aug = tl.augment(adata, "cell_type", random_state=0, **TINY)
    _same(adata, before)  # the input is never modified

    n, m = adata.n_obs, aug.n_obs - adata.n_obs
    assert m == 45  # "auto": type_2 (10 cells) up to 55
    # real cells first, unchanged; then the synthetic ones
    assert sp.issparse(aug.X) and aug.X.format == "csr" and aug.X.dtype == adata.X.dtype
    assert (aug.X[:n] != adata.X).nnz == 0
    syn = aug.X[n:].toarray()
    assert np.all(syn == np.round(syn)) and syn.min() >= 0
    assert aug.obs_names.is_unique and aug.obs_names[:n].equals(adata.obs_names)
    assert aug.obs_names[n] == "synthetic-0"
    assert aug.obs["synthetic"].dtype == bool
    assert not aug.obs["synthetic"][:n].any() and aug.obs["synthetic"][n:].all()
    # labels: categories kept, the synthetic cells have the requested type
    assert aug.obs["cell_type"].dtype == adata.obs["cell_type"].dtype
    assert (aug.obs["cell_type"][n:] == "type_2").all()
    assert aug.obs["cell_type"].value_counts()["type_2"] == 55
    # other obs columns: real values kept, NA for synthetic cells, categories kept
    assert list(aug.obs["batch"].cat.categories) == ["b1", "b2", "b3"]
    assert aug.obs["batch"][n:].isna().all() and aug.obs["batch"][:n].equals(adata.obs["batch"])
    assert str(aug.obs["flag"].dtype) == "boolean" and aug.obs["flag"][n:].isna().all()
    assert str(aug.obs["number"].dtype) == "Int64"
    assert (aug.obs["number"][:n].to_numpy() == adata.obs["number"].to_numpy()).all()
    assert aug.obs["n_counts"][n:].isna().all()
    assert aug.var.equals(adata.var)
    # counts in X: other layers, obsm cannot be derived for synthetic cells and are dropped
    assert set(aug.layers) == set() and set(aug.obsm) == set()
    info = aug.uns["scaug"]
    assert sorted(info["dropped"]) == ["layers/counts", "layers/lognorm", "obsm/X_pca"]
    assert aug.uns["note"] == "kept"
    assert info["version"] == scaug.__version__
    assert info["n_synthetic"] == 45 and info["n_generated"] == {"type_2": 45}
    assert info["sampling_report"]["type_2"]["requested"] == 45
    assert info["params"]["labels_key"] == "cell_type" and info["params"]["random_state"] == 0
    assert info["params"]["scld"]["n_latent"] == 4
    # writable as h5ad, and read back the same
    aug.write_h5ad(tmp_path / "aug.h5ad")
    back = ad.read_h5ad(tmp_path / "aug.h5ad")
    assert back.obs["synthetic"].sum() == 45 and back.uns["scaug"]["n_synthetic"] == 45


def test_counts_from_a_layer_and_dense_stays_dense(adata):
    dense = adata.copy()
    dense.layers["counts"] = dense.layers["counts"].toarray().astype(np.int64)
    aug = tl.augment(dense, "cell_type", layer="counts", sampling_strategy={"type_2": 20},
                     random_state=1, **TINY)
    assert aug.X is None  # X (log-normalised data, say) cannot be derived: dropped
    counts = aug.layers["counts"]
    assert isinstance(counts, np.ndarray) and counts.dtype == np.int64
    assert counts.shape == (130, 20) and np.array_equal(counts[:120], dense.layers["counts"])
    assert set(aug.uns["scaug"]["dropped"]) == {"X", "layers/lognorm", "obsm/X_pca"}


def test_same_seed_same_cells(adata):
    a = tl.augment(adata, "cell_type", sampling_strategy="minority", random_state=3, **TINY)
    b = tl.augment(adata, "cell_type", sampling_strategy="minority", random_state=3, **TINY)
    assert (a.X != b.X).nnz == 0


def test_missing_labels_are_unlabelled(adata):
    partial = adata.copy()
    labels = partial.obs["cell_type"].copy()
    labels[:30] = np.nan  # not annotated
    partial.obs["cell_type"] = labels
    model = tl.fit(partial, "cell_type", random_state=0, **TINY)
    assert model.n_unlabelled_ == 30 and int(model.class_counts_.sum()) == 90
    aug = tl.augment(partial, "cell_type", model=model, random_state=0)
    counts = partial.obs["cell_type"].value_counts()
    syn = aug.obs.loc[aug.obs["synthetic"], "cell_type"]
    assert not syn.isna().any()
    # "auto" counts labelled cells only: every type up to the largest labelled type
    assert syn.value_counts().to_dict() == (counts.max() - counts).to_dict()


def test_reuse_a_fitted_model(adata, model, tmp_path):
    params = model.get_params()
    aug = tl.augment(adata, "cell_type", model=model, sampling_strategy={"type_1": 60},
                     random_state=0, guidance_scale=2.0)
    assert aug.n_obs == 125 and aug.uns["scaug"]["params"]["model"] == "given SCLD"
    assert model.get_params() == params  # not refitted, not reconfigured
    path = tmp_path / "m.scld"
    model.save(path)
    aug = tl.augment(adata, "cell_type", model=str(path), sampling_strategy={"type_1": 60},
                     random_state=0, device="cpu")
    assert aug.n_obs == 125 and aug.uns["scaug"]["params"]["model"] == str(path)

    with pytest.raises(ValueError, match="not trained again"):
        tl.augment(adata, "cell_type", model=model, max_epochs=3)
    other = adata[:, ::-1].copy()  # the same genes in another order
    with pytest.raises(ValueError, match="gene names differ"):
        tl.augment(other, "cell_type", model=model)


def test_nothing_to_generate_trains_nothing(adata):
    aug = tl.augment(adata, "cell_type", sampling_strategy={"type_0": 55}, **TINY)
    assert aug.n_obs == adata.n_obs and aug.uns["scaug"]["n_synthetic"] == 0
    assert "scld" not in aug.uns["scaug"]["params"]


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(labels_key="nope"), KeyError, "not a column of adata.obs"),
    (dict(labels_key="cell_type", layer="nope"), KeyError, "not in adata.layers"),
    (dict(labels_key="cell_type", key_added="cell_type"), ValueError, "key_added"),
    (dict(labels_key="cell_type", sampling_strategy={"type_9": 80}), ValueError, "type_9"),
    (dict(labels_key="cell_type", sampling_strategy={"type_2": 5}), ValueError, "type_2"),
    (dict(labels_key="cell_type", model=3), TypeError, "The 'model' parameter of SCLDOverSampler"),
])
def test_clear_errors_before_training(adata, kwargs, error, match):
    with pytest.raises(error, match=match):
        tl.augment(adata, **kwargs, **TINY)


def test_fit_remembers_genes_and_sample_names_them(adata, model, tmp_path):
    assert list(model.feature_names_in_) == list(adata.var_names)
    syn = tl.sample(model, {"type_2": 4, "type_0": 2}, random_state=0)
    assert syn.shape == (6, 20) and syn.var_names.equals(adata.var_names)
    assert sp.issparse(syn.X)
    assert list(syn.obs["cell_type"].cat.categories) == ["type_0", "type_1", "type_2"]
    assert syn.obs["cell_type"].tolist() == ["type_2"] * 4 + ["type_0"] * 2
    assert syn.obs["synthetic"].all() and syn.obs_names.is_unique
    assert syn.uns["scaug"]["sampling_report"]["type_2"]["requested"] == 4
    syn.write_h5ad(tmp_path / "syn.h5ad")
    # from a saved model, by path
    model.save(tmp_path / "m.scld")
    again = tl.sample(str(tmp_path / "m.scld"), {"type_2": 4, "type_0": 2}, random_state=0,
                      device="cpu")
    assert again.var_names.equals(adata.var_names)
    with pytest.raises(ValueError, match="Unknown cell type"):
        tl.sample(model, {"type_7": 1})


def test_fit_without_labels_samples_holistically(adata):
    model = tl.fit(adata, layer="counts", random_state=0, **TINY)
    syn = tl.sample(model, 7, random_state=0)
    assert syn.shape == (7, 20) and "cell_type" not in syn.obs


def test_every_front_end_gives_the_same_cells(adata, tmp_path):
    """One core under the pipeline sampler, scaug.tl and the shell: the same request and seed
    give the same synthetic cells, bit for bit, and the same labels."""
    from scaug import SCLDOverSampler
    from scaug.cli import _QUICK_RUN, _QUICK_SCLD, main

    request = {"type_2": 40}
    settings = {**_QUICK_SCLD, **_QUICK_RUN}
    plain = adata.copy()
    del plain.layers["lognorm"]
    X, y = plain.X, plain.obs["cell_type"].to_numpy()

    by_tl = tl.augment(plain, "cell_type", sampling_strategy=request, random_state=7,
                       verbose=False, **settings)
    sampler = SCLDOverSampler(sampling_strategy=request, random_state=7, max_epochs=1,
                              n_sample_steps=_QUICK_RUN["n_sample_steps"], scld_params=_QUICK_SCLD)
    X_res, y_res = sampler.fit_resample(X, y)
    plain.write_h5ad(tmp_path / "in.h5ad")
    assert main(["augment", str(tmp_path / "in.h5ad"), "-o", str(tmp_path / "out.h5ad"),
                 "--labels-key", "cell_type", "--strategy", "type_2=40", "--seed", "7",
                 "--quick", "--quiet"]) == 0
    by_cli = ad.read_h5ad(tmp_path / "out.h5ad")

    n = adata.n_obs
    assert X_res.shape[0] - n == by_tl.n_obs - n == by_cli.n_obs - n == 30
    for other in (by_tl.X, by_cli.X):
        assert (sp.csr_matrix(X_res[n:]) != sp.csr_matrix(other[n:])).nnz == 0
    assert list(y_res[n:]) == list(by_tl.obs["cell_type"][n:]) == list(by_cli.obs["cell_type"][n:])
    assert X_res[n:].sum() > 0
