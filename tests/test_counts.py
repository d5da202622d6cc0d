"""The exact NB count draw (scaug.nn.autoencoder_module.nb_counts) against scipy, and the sparse decode."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy import stats

from scaug import sampling
from scaug.nn import AutoencoderModule
from scaug.nn.autoencoder_module import INVERSION_MAX_MEAN, INVERSION_MAX_RATIO, nb_counts

# means far below 1 (most entries of single-cell counts), about 1, and large; inverse
# dispersions from a heavy tail to nearly Poisson. Each (mu, theta) pair is one gene.
MUS = [1e-3, 0.05, 0.5, 1.0, 3.0, 7.5, 20.0, 100.0]
THETAS = [0.05, 0.5, 5.0, 200.0]
GRID = [(m, t) for m in MUS for t in THETAS]
N = 40000


@pytest.fixture(scope="module")
def grid_draws():
    mu = np.tile(np.array([m for m, _ in GRID], dtype=np.float32), (N, 1))
    theta = np.array([t for _, t in GRID], dtype=np.float32)
    return nb_counts(mu, theta, np.random.default_rng(0)).toarray()


def test_the_grid_covers_both_ways_of_drawing():
    ratio = np.array([m / (m + t) for m, t in GRID])
    mu = np.array([m for m, _ in GRID])
    inverted = (mu <= INVERSION_MAX_MEAN) & (ratio <= INVERSION_MAX_RATIO)
    assert inverted.sum() >= 10 and (~inverted).sum() >= 10


@pytest.mark.parametrize("j", range(len(GRID)), ids=[f"mu={m}-theta={t}" for m, t in GRID])
def test_draws_follow_scipys_negative_binomial(grid_draws, j):
    mu, theta = GRID[j]
    x = grid_draws[:, j]
    ref = stats.nbinom(theta, theta / (theta + mu))  # scipy's (n, p) with mean mu
    # mean and variance within 5 standard errors (the variance's from the sample's 4th moment)
    assert abs(x.mean() - mu) < 5 * np.sqrt(ref.var() / N)
    dev2 = (x - x.mean()) ** 2
    assert abs(x.var() - ref.var()) < 5 * dev2.std() / np.sqrt(N) + 1e-12
    # chi-square over the values expected at least 5 times (a range lo..hi, the pmf being
    # unimodal), the values below lo lumped into lo's bin and those above hi into hi's
    k = np.arange(int(ref.ppf(1 - 1e-12)) + 2)
    keep = k[N * ref.pmf(k) >= 5]
    lo, hi = int(keep.min()), max(int(keep.max()), int(keep.min()) + 1)
    observed = np.bincount(np.clip(x, lo, hi) - lo, minlength=hi - lo + 1)
    expected = N * ref.pmf(np.arange(lo, hi + 1))
    expected[0] += N * ref.cdf(lo - 1) if lo > 0 else 0.0
    expected[-1] = N * ref.sf(hi - 1)
    p = stats.chisquare(observed, expected * N / expected.sum()).pvalue
    assert p > 1e-4, (mu, theta, p)


def test_tiny_means_give_the_right_number_of_nonzeros():
    # mu = 1e-5 over 2M entries: 20 nonzeros expected, each a count of 1 almost surely
    mu = np.full((2000, 1000), 1e-5, dtype=np.float32)
    x = nb_counts(mu, np.full(1000, 2.0), np.random.default_rng(3))
    p_nonzero = 1 - stats.nbinom.pmf(0, 2.0, 2.0 / (2.0 + 1e-5))
    assert stats.binomtest(x.nnz, mu.size, p_nonzero).pvalue > 1e-3


def test_zero_means_give_zeros_and_the_output_is_canonical_integer_csr():
    rng = np.random.default_rng(1)
    mu = rng.gamma(0.3, 2.0, size=(300, 50)).astype(np.float32)
    mu[:, [0, 7]] = 0.0
    mu[5] = 0.0
    theta = np.full(50, 0.01, dtype=np.float32)  # a heavy tail must not leak into zero means
    x = nb_counts(mu, theta, np.random.default_rng(2))
    assert sp.isspmatrix_csr(x) and x.dtype == np.int64 and x.shape == (300, 50)
    assert x.has_canonical_format and (x.data > 0).all()
    dense = x.toarray()
    assert not dense[:, [0, 7]].any() and not dense[5].any()
    assert dense.sum() > 0


def test_same_generator_state_same_counts_and_per_entry_theta_agrees():
    rng = np.random.default_rng(5)
    mu = rng.gamma(0.5, 4.0, size=(200, 30)).astype(np.float32)
    theta = rng.uniform(0.05, 20, size=30).astype(np.float32)
    a = nb_counts(mu, theta, np.random.default_rng(9))
    b = nb_counts(mu, theta, np.random.default_rng(9))
    assert (a != b).nnz == 0
    # a per-entry theta (the "gene-cell" dispersion) equal to the per-gene one: the same draw
    c = nb_counts(mu, np.tile(theta, (200, 1)), np.random.default_rng(9))
    assert (a != c).nnz == 0
    assert (a != nb_counts(mu, theta, np.random.default_rng(10))).nnz > 0


def _nb_module(n_genes=40):
    torch.manual_seed(0)
    m = AutoencoderModule(n_genes=n_genes, n_latent=3, hidden=(8,), likelihood="nb")
    with torch.no_grad():
        # theta from 0.05 (genes whose larger means are Gamma-Poisson) to 20
        m.gene_log_scale.copy_(torch.linspace(-3, 3, n_genes))
    return m.eval()


def test_sample_counts_is_the_dense_draw_made_sparse():
    m = _nb_module()
    z, library = torch.randn(64, 3), torch.full((64,), 300.0)
    sparse = m.sample_counts(z, library, generator=torch.Generator().manual_seed(4))
    dense = m.sample_expression(z, library, generator=torch.Generator().manual_seed(4))
    np.testing.assert_array_equal(sparse.toarray(), dense.numpy())
    assert dense.dtype == torch.float32 and sparse.nnz > 0


def _fitted(module):
    """A CellAutoencoder around ``module``, as fitting would leave it (what decode needs)."""
    from scaug import CellAutoencoder

    ae = CellAutoencoder(n_latent=module.decoder[0][0].in_features, device="cpu")
    ae.module_, ae.likelihood_, ae.nonnegative_ = module, "nb", True
    ae.n_features_in_, ae.device_ = module.gene_log_scale.shape[0], torch.device("cpu")
    return ae


def _decode_peak(fitted, n_cells, *, sparse, cells_per_batch=100, seed=0):
    """decode's output for ``n_cells`` cells and the peak of numpy memory it took."""
    import tracemalloc

    Z = np.random.default_rng(0).normal(size=(n_cells, 3)).astype(np.float32)
    library = np.full(n_cells, 300.0, dtype=np.float32)  # about 12 % nonzero (cbmc's synthetic cells: 6 %)
    tracemalloc.start()
    try:
        X = sampling.decode(fitted, Z, library, torch.Generator().manual_seed(seed),
                            sparse=sparse, cells_per_batch=cells_per_batch)
        return X, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_decode_sparse_and_dense_agree_and_hold_only_a_block():
    n_genes = 2000
    fitted = _fitted(_nb_module(n_genes))
    dense, _ = _decode_peak(fitted, 1200, sparse=False)
    sparse, peak = _decode_peak(fitted, 1200, sparse=True)
    assert sp.isspmatrix_csr(sparse) and sparse.dtype == np.float32 and dense.dtype == np.float32
    np.testing.assert_array_equal(sparse.toarray(), dense)
    # beyond the output (twice, while the blocks are stacked), what one block of 100 cells
    # takes: 4.4 MB measured for one block, 6.5 MB for 12 (the dense counts: 9.6 MB)
    _, one_block = _decode_peak(fitted, 100, sparse=True)
    output = sparse.data.nbytes + sparse.indices.nbytes + sparse.indptr.nbytes
    assert peak < 2 * output + 1.5 * one_block, (peak, output, one_block)
    assert peak < dense.nbytes
    empty = sampling.decode(fitted, np.zeros((0, 3), np.float32), np.zeros(0, np.float32),
                            torch.Generator(), sparse=True, cells_per_batch=100)
    assert empty.shape == (0, n_genes) and empty.dtype == np.float32


def test_csr_from_torch_keeps_every_count():
    from scaug.nn.autoencoder_module import csr_from_torch

    x = torch.tensor([[0.0, 3.0, 0.0], [0.0, 0.0, 0.0], [7.0, 0.0, 1.0]])
    out = csr_from_torch(x)
    assert sp.isspmatrix_csr(out) and out.dtype == np.int64 and out.nnz == 3
    np.testing.assert_array_equal(out.toarray(), x.numpy())
