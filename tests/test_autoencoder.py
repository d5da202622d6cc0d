"""CellAutoencoder on its own: fit with and without labels, determinism, balanced minibatches."""

import numpy as np
import pytest

from scaug import CellAutoencoder
from scaug.datasets import simulate
from scaug.train import BalancedDraws

KW = dict(n_latent=4, hidden=(32,), max_epochs=3, verbose=False, device="cpu")


@pytest.fixture(scope="module")
def data():
    ad = simulate(n_cells=300, n_genes=40, n_types=3, rare_sizes=(10,), random_state=1)
    return ad.X, ad.obs["cell_type"].astype(str).to_numpy()


def test_fit_transform_and_determinism(data):
    X, _ = data
    a = CellAutoencoder(random_state=0, **KW).fit(X).transform(X)
    b = CellAutoencoder(random_state=0, **KW).fit(X.toarray()).transform(X)
    assert a.shape == (300, 4) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)


def test_labels_only_change_the_minibatches(data):
    X, y = data
    plain = CellAutoencoder(random_state=0, **KW).fit(X)
    balanced = CellAutoencoder(random_state=0, class_balance=0.0, **KW).fit(X, y)
    assert balanced.likelihood_ == plain.likelihood_ == "nb"
    assert not np.array_equal(plain.transform(X), balanced.transform(X))
    with pytest.raises(ValueError, match="one label per cell"):
        CellAutoencoder(**KW).fit(X, y[:-1])


def test_balanced_draws_draw_rare_classes_often():
    y = np.array([0] * 990 + [1] * 10)
    rng = np.random.default_rng(0)
    equal = BalancedDraws(y, power=0.0)(20000, rng)
    assert abs(np.mean(y[equal] == 1) - 0.5) < 0.02
    proportional = BalancedDraws(y, power=1.0)(20000, rng)
    assert abs(np.mean(y[proportional] == 1) - 0.01) < 0.005


def test_nb_refuses_non_counts(data):
    X, _ = data
    with pytest.raises(ValueError, match="raw counts"):
        CellAutoencoder(likelihood="nb", **KW).fit(X.toarray() + 0.5)


def test_dataframe_genes_pass_through_scld_with_a_pretrained_autoencoder(data):
    import pandas as pd

    from scaug import SCLD

    X, y = data
    genes = [f"g{i}" for i in range(X.shape[1])]
    df = pd.DataFrame(X.toarray(), columns=genes)
    ae = CellAutoencoder(random_state=0, **KW).fit(df)
    model = SCLD(autoencoder=ae, diffusion_steps=5, width=16, depth=1, verbose=False,
                 device="cpu", random_state=0).fit(df, y)
    assert list(model.feature_names_in_) == genes
    # the same genes in another order are aligned by name (issue 16), not refused
    reordered = SCLD(autoencoder=ae, diffusion_steps=5, width=16, depth=1, verbose=False,
                     device="cpu", random_state=0).fit(df[genes[::-1]], y)
    assert list(reordered.feature_names_in_) == genes[::-1]
    assert reordered.gene_overlap_["overlap"] == 1.0 and reordered.autoencoder_.history_ == []
    with pytest.raises(ValueError, match="gene names differ"):
        reordered.check_genes(df)


def _two_noise_levels(rng):
    # type A: Poisson-like counts around 5; type B: strongly overdispersed counts around 20
    a = rng.poisson(5.0, size=(200, 20))
    b = rng.poisson(rng.gamma(0.5, 20.0 / 0.5, size=(200, 20)))
    return np.vstack([a, b]).astype(np.float32)


def test_gene_cell_dispersion_learns_each_types_noise():
    import torch

    X = _two_noise_levels(np.random.default_rng(0))
    # the two types differ in their noise only, which strong latent noise would drown out of the
    # latent (the difference in log theta falls to 0.16 with latent_noise=0.5)
    kw = dict(KW, max_epochs=60, n_latent=2, latent_noise=0.1)
    ae = CellAutoencoder(dispersion="gene-cell", random_state=0, **kw).fit(X)
    z = torch.as_tensor(ae.transform(X))
    with torch.no_grad():
        log_theta = ae.module_._decode_with_scale(z)[1].numpy()
    # B's inverse dispersion is about 0.5, A's is large (Poisson): the model must tell them apart
    assert np.median(log_theta[:200]) > np.median(log_theta[200:]) + 0.5  # 1.2 measured
    gene = CellAutoencoder(dispersion="gene", random_state=0, **kw).fit(X)
    with torch.no_grad():
        assert gene.module_._decode_with_scale(z)[1].shape == (20,)  # one value per gene


def test_gene_cell_dispersion_round_trips_and_checks(tmp_path, data):
    import torch

    X, _ = data
    ae = CellAutoencoder(dispersion="gene-cell", random_state=0, **KW).fit(X)
    ae.save(tmp_path / "ae.pt")
    back = CellAutoencoder.load(tmp_path / "ae.pt", device="cpu")
    assert back.dispersion == "gene-cell"
    Z, lib = ae.transform(X[:20]), np.full(20, 500.0)
    a = ae.generate(Z, lib, generator=torch.Generator().manual_seed(0))
    b = back.generate(Z, lib, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="'dispersion' parameter of CellAutoencoder must be a str among"):
        CellAutoencoder(dispersion="cell", **KW).fit(X)


def test_match_detection_shifts_only_the_dispersion(data):
    import torch

    X, _ = data
    kw = dict(KW, max_epochs=30)  # a decoder whose means are near enough to match every gene
    plain = CellAutoencoder(random_state=0, **kw).fit(X)
    matched = CellAutoencoder(random_state=0, match_detection=True, **kw).fit(X)
    a, b = plain.module_.state_dict(), matched.module_.state_dict()
    for name in a:  # the same training: every weight equal but the gene dispersions
        if name != "gene_log_scale":
            torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)
    assert not torch.equal(a["gene_log_scale"], b["gene_log_scale"])
    # re-drawn at their own latents and libraries, the cells are as often nonzero as the real ones
    dense = X.toarray()
    detected = {}
    for name, ae in (("plain", plain), ("matched", matched)):
        draws = [ae.generate(ae.transform(X), dense.sum(1), generator=torch.Generator().manual_seed(s))
                 for s in range(5)]
        detected[name] = np.mean([(d > 0).mean() for d in draws])
    real = (dense > 0).mean()
    assert abs(detected["matched"] - real) < 0.01 < abs(detected["plain"] - real)


def test_match_detection_from_disk(tmp_path):
    from scaug.train import OnDiskCells

    cells = simulate(n_cells=200, n_genes=30, n_types=2, random_state=0)
    cells.write_h5ad(tmp_path / "c.h5ad")
    store = OnDiskCells(tmp_path / "c.h5ad", chunk_size=16, buffer_chunks=4)
    ae = CellAutoencoder(random_state=0, match_detection=True, **KW).fit(store)
    plain = CellAutoencoder(random_state=0, **KW).fit(store)
    assert not np.array_equal(ae.module_.gene_log_scale.detach().numpy(),
                              plain.module_.gene_log_scale.detach().numpy())


def test_public_encode_state_and_device(data):
    import torch

    from scaug import conditions
    from scaug.autoencoder import is_fitted_autoencoder

    X, _ = data
    ae = CellAutoencoder(random_state=0, **KW)
    assert not is_fitted_autoencoder(ae)
    ae.fit(X)
    assert is_fitted_autoencoder(ae) and not is_fitted_autoencoder("ae.pt")
    np.testing.assert_array_equal(ae.encode(X), ae.transform(X))
    again = CellAutoencoder.from_state(ae.state(), device="cpu")
    np.testing.assert_array_equal(again.transform(X), ae.transform(X))
    assert ae.to(torch.device("cpu")) is ae and ae.device_ == torch.device("cpu")
    assert conditions.values_of(ae) == {}  # anything without conditions_
