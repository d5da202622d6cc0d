"""OnDiskCells: AnnData files streamed in shuffled, class-balanced minibatches; fits from disk."""

import warnings

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import scaug
from scaug import SCLD, CellAutoencoder, OnDiskCells
from scaug.datasets import simulate
from scaug.train import disk
from scaug.train.data import gene_moments

TINY = dict(n_latent=4, ae_hidden=(16,), width=16, depth=1, max_epochs=2, diffusion_steps=20,
            n_sample_steps=3, verbose=False, device="cpu")
AE_TINY = dict(n_latent=4, hidden=(16,), max_epochs=2, verbose=False, device="cpu", random_state=0)
N = 300


def _write(adata, path):
    with warnings.catch_warnings():  # anndata's notice that zarr v3 will become its default
        warnings.simplefilter("ignore", UserWarning)
        if str(path).endswith(".zarr"):
            adata.write_zarr(path)
        else:
            adata.write_h5ad(path)
    return str(path)


@pytest.fixture(scope="module")
def cells():
    """Simulated counts with a rare type; gene 0 is the row's number, so rows can be traced."""
    a = simulate(n_cells=N, n_genes=40, n_types=3, rare_sizes=(20,), random_state=0)
    X = sp.hstack([np.arange(N)[:, None], a.X]).tocsr().astype(np.float32)
    out = ad.AnnData(X, obs=a.obs[["cell_type"]].astype({"cell_type": "category"}))
    out.var_names = ["row"] + list(a.var_names)
    return out


@pytest.fixture(scope="module")
def stores(cells, tmp_path_factory):
    """The same cells as one .h5ad, one .zarr, a collection of both halves, and dense X."""
    d = tmp_path_factory.mktemp("stores")
    dense = cells.copy()
    dense.X = dense.X.toarray()
    return {
        "h5ad": [_write(cells, d / "all.h5ad")],
        "zarr": [_write(cells, d / "all.zarr")],
        "collection": [_write(cells[:130], d / "part1.h5ad"), _write(cells[130:], d / "part2.zarr")],
        "dense": [_write(dense, d / "dense.zarr")],
    }


def _ids(batches):
    return np.concatenate([b[0][:, 0].numpy() for b in batches]).astype(int)


@pytest.mark.parametrize("kind", ["h5ad", "zarr", "collection", "dense"])
def test_store_matches_the_cells_and_every_row_comes_once_per_pass(cells, stores, kind):
    store = OnDiskCells(stores[kind], labels_key="cell_type", chunk_size=16, buffer_chunks=4)
    assert store.shape == cells.shape and list(store.var_names) == list(cells.var_names)
    assert store.sparse == (kind != "dense") and store.dtype == np.float32
    np.testing.assert_array_equal(store.labels, cells.obs["cell_type"].astype(str).to_numpy())
    block = store.read(120, 140)  # across the boundary of the two files of the collection
    np.testing.assert_array_equal(sp.csr_matrix(block).toarray(), cells.X[120:140].toarray())
    data = store.minibatches(batch_size=10, seed=0)
    first, second = _ids(data), _ids(data)
    assert len(data) == int(np.ceil(N / 10))
    np.testing.assert_array_equal(np.sort(first), np.arange(N))
    np.testing.assert_array_equal(np.sort(second), np.arange(N))
    assert not np.array_equal(first, second)  # a new permutation every pass
    # each batch holds the right expression for its rows
    x = next(iter(data))[0].numpy()
    np.testing.assert_array_equal(x, cells.X[x[:, 0].astype(int)].toarray())


def test_batches_mix_chunks_from_across_the_collection(stores):
    store = OnDiskCells(stores["collection"], chunk_size=16, buffer_chunks=4)
    batches = [b[:, 0].numpy() for (b,) in store.minibatches(batch_size=32, seed=1)]
    in_both = [((ids < 130).any() and (ids >= 130).any()) for ids in batches]
    assert np.mean(in_both) > 0.5  # most batches hold cells of both files
    spans = [np.ptp(ids) for ids in batches]
    assert np.median(spans) > 100  # rows from far apart, not one contiguous slice


def test_class_balance_within_buffers(cells, stores):
    store = OnDiskCells(stores["h5ad"], labels_key="cell_type", chunk_size=16, buffer_chunks=8)
    codes = np.unique(store.labels, return_inverse=True)[1]
    rare = np.argmin(np.bincount(codes))
    share = {}
    for power in (0.0, 1.0):
        ids = np.concatenate([_ids(store.minibatches(batch_size=16, seed=s, codes=codes,
                                                     class_balance=power)) for s in range(5)])
        share[power] = np.mean(codes[ids] == rare)
    assert share[1.0] == pytest.approx(20 / N)  # uniform: each cell once per pass
    assert 0.2 < share[0.0] < 0.45  # every type about equally often (1/3)


@pytest.mark.parametrize("n_cells", [N, N - 5])  # a full last chunk, and a short one
def test_ddp_stripes_are_disjoint_and_equally_long(stores, monkeypatch, n_cells, tmp_path, cells):
    paths = stores["h5ad"] if n_cells == N else [_write(cells[:n_cells], tmp_path / "short.h5ad")]
    seen = []
    for rank in range(2):
        monkeypatch.setattr(disk, "process_rank", lambda rank=rank: (rank, 2))
        store = OnDiskCells(paths, chunk_size=16, buffer_chunks=3)
        data = store.minibatches(batch_size=8, seed=3)
        batches = list(data)
        assert len(batches) == len(data)
        seen.append([b[0][:, 0].numpy().astype(int) for b in batches])
    assert len(seen[0]) == len(seen[1])  # the same number of steps on every process
    ids = [np.concatenate(s) for s in seen]
    assert len(ids[0]) == len(ids[1])
    assert not set(ids[0]) & set(ids[1])
    assert len(np.unique(ids[0])) == len(ids[0])
    assert len(ids[0]) + len(ids[1]) > n_cells - 2 * 16  # at most a chunk per process left out


def test_refuses_files_that_do_not_fit(cells, tmp_path):
    other = cells.copy()
    other.var_names = [f"x{i}" for i in range(other.n_vars)]
    with pytest.raises(ValueError, match="other genes"):
        OnDiskCells([_write(cells, tmp_path / "a.h5ad"), _write(other, tmp_path / "b.h5ad")])
    csc = cells.copy()
    csc.X = csc.X.tocsc()
    with pytest.raises(ValueError, match="CSC"):
        OnDiskCells(_write(csc, tmp_path / "c.h5ad"))
    with pytest.raises(KeyError, match="no column"):
        OnDiskCells(tmp_path / "a.h5ad", labels_key="nope")
    with pytest.raises(KeyError, match="no layer"):
        OnDiskCells(tmp_path / "a.h5ad", layer="counts")
    with pytest.raises(FileNotFoundError):
        OnDiskCells(tmp_path / "missing.h5ad")


def test_layer_and_missing_labels(cells, tmp_path):
    a = cells.copy()
    a.layers["counts"] = a.X.copy()
    a.X = sp.csr_matrix(np.log1p(a.X.toarray()))
    a.obs["cell_type"] = a.obs["cell_type"].astype(object)
    a.obs.iloc[:5, 0] = None
    a.obs["cell_type"] = a.obs["cell_type"].astype("category")
    store = OnDiskCells(_write(a, tmp_path / "l.h5ad"), layer="counts", labels_key="cell_type")
    np.testing.assert_array_equal(sp.csr_matrix(store.read(0, 50)).toarray(), cells.X[:50].toarray())
    assert list(store.labels[:5]) == [-1] * 5 and isinstance(store.labels[5], str)


def test_gaussian_fit_streams_thegene_moments(cells, tmp_path):
    logged = cells.copy()
    logged.X = sp.csr_matrix(np.log1p(cells.X.toarray()), dtype=np.float32)
    store = OnDiskCells(_write(logged, tmp_path / "log.zarr"), chunk_size=32, buffer_chunks=2)
    for a, b in zip(store.gene_moments(), gene_moments(logged.X), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5)
    ae = CellAutoencoder(**AE_TINY).fit(store)
    assert ae.likelihood_ == "gaussian"
    np.testing.assert_allclose(ae.module_.gene_mean.numpy(), gene_moments(logged.X)[0], rtol=1e-5)


@pytest.mark.filterwarnings("ignore:X has no gene names")
def test_autoencoder_fits_from_disk_with_the_same_api(cells, stores, tmp_path):
    store = OnDiskCells(stores["collection"], chunk_size=16, buffer_chunks=4)
    ae = CellAutoencoder(**AE_TINY).fit(store)
    assert ae.likelihood_ == "nb" and ae.n_features_in_ == cells.n_vars
    assert list(ae.feature_names_in_) == list(cells.var_names)
    assert len(ae.history_) == 2 and np.all(np.isfinite(ae.history_))
    Z = ae.transform(store)  # one streaming pass
    np.testing.assert_allclose(Z, ae.transform(cells.X), rtol=1e-5, atol=1e-6)
    ae.save(tmp_path / "ae.pt")
    np.testing.assert_array_equal(CellAutoencoder.load(tmp_path / "ae.pt").transform(cells.X),
                                  ae.transform(cells.X))
    # labels balance the minibatches as in memory
    balanced = CellAutoencoder(**AE_TINY).fit(store, y=OnDiskCells(
        stores["h5ad"], labels_key="cell_type").labels)
    assert balanced.n_features_in_ == cells.n_vars


def test_scld_fits_from_disk_with_the_stores_labels(cells, stores, tmp_path):
    store = OnDiskCells(stores["zarr"], labels_key="cell_type", chunk_size=16, buffer_chunks=4)
    model = SCLD(random_state=0, **TINY).fit(store)
    memory = SCLD(random_state=0, **TINY).fit(cells.X, cells.obs["cell_type"].astype(str).to_numpy(),
                                               feature_names=cells.var_names)
    assert list(model.classes_) == list(memory.classes_)
    np.testing.assert_array_equal(model.class_counts_, memory.class_counts_)
    assert model.n_train_ == N and model.sparse_input_ and model.input_dtype_ == "float32"
    # library sizes come from the streaming pass: the same quantiles as in memory
    np.testing.assert_allclose(model.type_summaries_.library_quantiles,
                               memory.type_summaries_.library_quantiles)
    X_syn, y_syn = model.sample({"type_2": 7}, random_state=0)
    assert X_syn.shape == (7, cells.n_vars) and sp.issparse(X_syn) and set(y_syn) == {"type_2"}
    model.save(tmp_path / "m.scld")
    back = SCLD.load(tmp_path / "m.scld")
    X_back, _ = back.sample({"type_2": 7}, random_state=0)
    assert (X_back != X_syn).nnz == 0
    # an explicit y wins over the store's labels
    y = np.where(cells.obs["cell_type"].astype(str) == "type_0", "a", "b")
    assert list(SCLD(random_state=0, **TINY).fit(store, y).classes_) == ["a", "b"]


def test_the_store_is_never_read_whole(stores, monkeypatch):
    reads = []
    original = OnDiskCells.read

    def spy(self, start, stop):
        reads.append(stop - start)
        return original(self, start, stop)

    monkeypatch.setattr(OnDiskCells, "read", spy)
    store = OnDiskCells(stores["collection"], labels_key="cell_type", chunk_size=16,
                        buffer_chunks=4)
    SCLD(random_state=0, **TINY).fit(store)
    assert reads and max(reads) <= 16 * 4 < N  # never more than one buffer at a time
    assert sum(reads) >= 3 * N  # two training passes, the encoding pass (and samples)


def test_exported_lazily():
    assert scaug.OnDiskCells is OnDiskCells and "OnDiskCells" in scaug.__all__
    assert scaug.train.OnDiskCells is OnDiskCells


def test_batches_larger_than_a_buffer_are_full_and_a_pass_covers_the_store(stores):
    store = OnDiskCells(stores["collection"], chunk_size=16, buffer_chunks=2)  # 32-row buffers
    data = store.minibatches(batch_size=50, seed=0)
    sizes = [len(b[0]) for b in data]
    assert len(sizes) == len(data) and all(s == 50 for s in sizes[:-1])
    assert sum(sizes) == data.rows_per_process(1)
    assert len(set(_ids(data))) == sum(sizes)  # every row at most once per pass
