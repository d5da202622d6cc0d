"""scaug.pl.real_vs_synthetic: what it draws (on a tiny augmented AnnData)."""

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from scaug import pl, tl  # noqa: E402
from scaug.datasets import simulate  # noqa: E402

TINY = dict(n_latent=4, ae_hidden=(16,), width=16, depth=1, diffusion_steps=10, max_epochs=1,
            n_sample_steps=3, verbose=False)


@pytest.fixture(scope="module")
def aug():
    adata = simulate(n_cells=120, n_genes=20, n_types=3, n_markers=5, rare_sizes=(10,),
                     random_state=0)
    adata.layers["counts"] = adata.X.copy()
    return tl.augment(adata, "cell_type", layer="counts", random_state=0, **TINY)


def _points(ax):
    return {c.get_label(): len(c.get_offsets()) for c in ax.collections}


def test_pca_real_dots_and_synthetic_crosses(aug):
    ax = pl.real_vs_synthetic(aug, "cell_type", basis="pca", show=False)
    # counts were read from the layer augment wrote (X is None)
    assert _points(ax) == {"type_2: real (10)": 10, "type_2: synthetic (45)": 45,
                           "other types": 110}
    fake = next(c for c in ax.collections if "synthetic" in c.get_label())
    real = next(c for c in ax.collections if "real" in c.get_label())
    assert np.allclose(fake.get_facecolor()[0], real.get_facecolor()[0], atol=0.11)
    assert ax.get_xlabel() == "PC1"
    plt.close("all")


def test_groups_and_a_given_embedding(aug):
    aug = aug.copy()
    aug.obsm["X_umap"] = np.arange(2 * aug.n_obs, dtype=float).reshape(-1, 2)
    fig, ax = plt.subplots()
    out = pl.real_vs_synthetic(aug, "cell_type", ["type_0", "type_2"], ax=ax, show=False)
    assert out is ax
    assert _points(ax) == {"type_0: real (55)": 55, "type_0: synthetic (0)": 0,
                           "type_2: real (10)": 10, "type_2: synthetic (45)": 45,
                           "other types": 55}
    first = next(c for c in ax.collections if c.get_label() == "type_2: synthetic (45)")
    assert np.array_equal(first.get_offsets()[0], aug.obsm["X_umap"][120])
    plt.close(fig)


def test_umap_through_scanpy(aug, monkeypatch):
    import scanpy as sc

    calls = []

    def fake_neighbors(adata, use_rep=None, random_state=0, **kwargs):
        assert use_rep == "X_pca"
        adata.uns["neighbors"] = {}

    def fake_umap(adata, random_state=0, **kwargs):
        calls.append(("neighbors" in adata.uns, random_state))
        adata.obsm["X_umap"] = adata.obsm["X_pca"][:, :2] * 2

    # scanpy's neighbours and UMAP JIT-compile for a minute on first use: stand-ins here
    monkeypatch.setattr(sc.pp, "neighbors", fake_neighbors)
    monkeypatch.setattr(sc.tl, "umap", fake_umap)
    ax = pl.real_vs_synthetic(aug, "cell_type", show=False, random_state=3)
    assert calls == [(True, 3)]
    assert ax.get_xlabel() == "UMAP1" and sum(_points(ax).values()) == aug.n_obs
    plt.close("all")


def test_clear_errors(aug):
    with pytest.raises(ValueError, match="type_9"):
        pl.real_vs_synthetic(aug, "cell_type", ["type_9"], show=False)
    with pytest.raises(ValueError, match="basis"):
        pl.real_vs_synthetic(aug, "cell_type", basis="tsne", show=False)
    with pytest.raises(KeyError, match="fake"):
        pl.real_vs_synthetic(aug, "cell_type", key_added="fake", show=False)
