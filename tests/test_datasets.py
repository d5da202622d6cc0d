import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.utils._param_validation import InvalidParameterError

from scaug import datasets
from scaug.datasets import DATASETS, available, load, pbmc68k_reduced, simulate

PBMC68K_SIZES = {
    "Dendritic": 240,
    "CD14+ Monocyte": 129,
    "CD19+ B": 95,
    "CD4+/CD25 T Reg": 68,
    "CD8+ Cytotoxic T": 54,
    "CD8+/CD45RA+ Naive Cytotoxic": 43,
    "CD56+ NK": 31,
    "CD4+/CD45RO+ Memory": 19,
    "CD34+": 13,
    "CD4+/CD45RA+/CD25- Naive T": 8,
}
SHARED = [name for name in available() if DATASETS[name].filename is not None]


def assert_integer_csr_counts(X):
    assert sp.issparse(X) and X.format == "csr"
    assert X.dtype == np.float32
    assert X.data.min() >= 0
    assert_array_equal(X.data, np.rint(X.data))


@pytest.fixture(scope="module")
def pbmc68k():
    return pbmc68k_reduced()


def test_pbmc68k_reduced_counts_reproduce_raw(pbmc68k):
    reference = sc.datasets.pbmc68k_reduced()
    assert pbmc68k.shape == (700, 765)
    assert_integer_csr_counts(pbmc68k.X)
    assert_array_equal(pbmc68k.var_names, reference.raw.var_names)

    counts = pbmc68k.X.toarray().astype(np.float64)
    n_counts = pbmc68k.obs["n_counts"].to_numpy(dtype=np.float64)[:, None]
    renormalised = np.log1p(counts / n_counts * 1e4)
    assert_allclose(renormalised, reference.raw.X.toarray(), atol=1e-3)
    assert_allclose(pbmc68k.layers["lognorm"].toarray(), reference.raw.X.toarray())


def test_pbmc68k_reduced_cell_types(pbmc68k):
    cell_type = pbmc68k.obs["cell_type"]
    assert isinstance(cell_type.dtype, pd.CategoricalDtype)
    assert cell_type.value_counts().to_dict() == PBMC68K_SIZES
    assert "bulk_labels" in pbmc68k.obs


def test_load_pbmc68k_reduced_needs_no_folder(monkeypatch):
    monkeypatch.delenv("SCAUG_DATA_DIR", raising=False)
    adata = load("pbmc68k_reduced")
    assert adata.shape == DATASETS["pbmc68k_reduced"].shape


def test_available_matches_datasets():
    assert available() == list(DATASETS)
    assert set(SHARED) == {"pbmc3k", "cbmc", "paul15", "bladder"}


@pytest.mark.parametrize("name", SHARED)
def test_load_shared_dataset(name, data_dir, monkeypatch):
    monkeypatch.setenv("SCAUG_DATA_DIR", str(data_dir))
    adata = load(name)
    info = DATASETS[name]
    assert adata.shape == info.shape
    assert isinstance(adata.obs["cell_type"].dtype, pd.CategoricalDtype)
    assert adata.obs["cell_type"].nunique() == info.n_types
    sizes = adata.obs["cell_type"].value_counts()
    for label, size in info.rare_types.items():
        assert sizes[label] == size
    assert sp.issparse(adata.X) and adata.X.format == "csr"


def test_load_data_dir_argument_overrides_env(data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("SCAUG_DATA_DIR", str(tmp_path))
    adata = load("bladder", data_dir=data_dir)
    assert adata.shape == DATASETS["bladder"].shape


def test_load_missing_file_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SCAUG_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError) as excinfo:
        load("paul15")
    message = str(excinfo.value)
    for part in ("paul15.h5ad", "data_dir", "SCAUG_DATA_DIR", str(tmp_path)):
        assert part in message


def test_load_missing_file_from_argument(monkeypatch, tmp_path):
    monkeypatch.delenv("SCAUG_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="cbmc.h5ad") as excinfo:
        load("cbmc", data_dir=tmp_path)
    assert "data_dir" in str(excinfo.value) and "SCAUG_DATA_DIR" in str(excinfo.value)


def test_load_without_folder(monkeypatch):
    monkeypatch.delenv("SCAUG_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError) as excinfo:
        load("pbmc3k")
    message = str(excinfo.value)
    assert "pbmc3k.h5ad" in message and "data_dir" in message and "SCAUG_DATA_DIR" in message


@pytest.mark.parametrize("name", ["pbmc", "PBMC3K", None, 3])
def test_load_unknown_name(name):
    with pytest.raises(InvalidParameterError, match="The 'name' parameter of load") as excinfo:
        load(name)
    for valid in available():
        assert valid in str(excinfo.value)


def test_load_bad_data_dir_type():
    with pytest.raises(InvalidParameterError, match="The 'data_dir' parameter of load"):
        load("cbmc", data_dir=3)


@pytest.mark.parametrize("kind", ["missing", "a file"])
def test_load_data_dir_that_is_not_a_folder(tmp_path, kind):
    folder = tmp_path / "nowhere"
    if kind == "a file":
        folder.write_text("not a folder")
    with pytest.raises(FileNotFoundError, match="Cannot find the data folder .*nowhere.* data_dir"):
        load("cbmc", data_dir=folder)


def _write_h5ad(path, obs=None, n_cells=3):
    adata = ad.AnnData(X=sp.csr_matrix(np.ones((n_cells, 2), dtype=np.float32)))
    for key, values in (obs or {}).items():
        adata.obs[key] = values
    adata.write_h5ad(path)


@pytest.mark.parametrize(
    "content",
    [b"", b"not an hdf5 file" * 64, "truncated"],
    ids=["empty", "garbage", "truncated"],
)
def test_load_corrupt_file(tmp_path, content):
    path = tmp_path / "paul15.h5ad"
    if content == "truncated":
        _write_h5ad(tmp_path / "whole.h5ad", {"cell_type": ["a", "b", "a"]}, n_cells=3)
        whole = (tmp_path / "whole.h5ad").read_bytes()
        content = whole[: len(whole) // 2]
    path.write_bytes(content)
    with pytest.raises(ValueError, match="'paul15'.*paul15.h5ad' is not a readable .h5ad file") as exc:
        load("paul15", data_dir=tmp_path)
    assert "OSError" in str(exc.value) or "Error" in str(exc.value)  # names the reader's error
    assert exc.value.__cause__ is not None  # and keeps it for debugging


def test_load_without_label_column(tmp_path):
    _write_h5ad(tmp_path / "bladder.h5ad", {"louvain": ["0", "1", "0"]})
    with pytest.raises(ValueError, match=r"has no obs\['cell_type'\] column .*'louvain'"):
        load("bladder", data_dir=tmp_path)


def test_load_other_version_warns_and_makes_labels_categorical(tmp_path):
    _write_h5ad(tmp_path / "cbmc.h5ad", {"cell_type": ["a", "b", "a"]})
    with pytest.warns(UserWarning, match=r"has shape \(3, 2\), not the \(7839, 2000\)") as record:
        adata = load("cbmc", data_dir=tmp_path)
    assert record[0].filename == __file__
    assert isinstance(adata.obs["cell_type"].dtype, pd.CategoricalDtype)


def test_simulate_defaults():
    adata = simulate(random_state=0)
    assert adata.shape == (1000, 200)
    assert_integer_csr_counts(adata.X)
    cell_type = adata.obs["cell_type"]
    assert isinstance(cell_type.dtype, pd.CategoricalDtype)
    assert list(cell_type.cat.categories) == ["type_0", "type_1", "type_2", "type_3"]
    assert cell_type.value_counts()["type_3"] == 20
    assert_allclose(adata.obs["n_counts"], np.asarray(adata.X.sum(axis=1)).ravel())
    truth = adata.uns["simulation"]
    assert truth["type_fold_change"].shape == (4, 200)
    assert_array_equal(truth["type_sizes"], [327, 327, 326, 20])


def test_simulate_is_deterministic():
    kwargs = dict(n_cells=300, n_genes=80, n_types=3, rare_sizes=(7,))
    a = simulate(**kwargs, random_state=42)
    b = simulate(**kwargs, random_state=42)
    c = simulate(**kwargs, random_state=43)
    assert_array_equal(a.X.toarray(), b.X.toarray())
    assert_array_equal(a.obs["cell_type"], b.obs["cell_type"])
    assert not np.array_equal(a.X.toarray(), c.X.toarray())
    d = simulate(**kwargs, random_state=np.random.default_rng(42))
    assert_array_equal(a.X.toarray(), d.X.toarray())


def test_simulate_rare_sizes_exact():
    adata = simulate(n_cells=2000, n_genes=500, n_types=6, rare_sizes=(10, 25), random_state=1)
    sizes = adata.obs["cell_type"].value_counts()
    assert sizes["type_4"] == 10
    assert sizes["type_5"] == 25
    assert sizes[["type_0", "type_1", "type_2", "type_3"]].sum() == 1965
    common = sizes[["type_0", "type_1", "type_2", "type_3"]]
    assert common.max() - common.min() <= 1


def test_simulate_types_are_distinct_and_libraries_vary():
    n_markers = 10
    adata = simulate(
        n_cells=600,
        n_genes=100,
        n_types=3,
        rare_sizes=(30,),
        n_markers=n_markers,
        random_state=0,
    )
    X = adata.X.toarray() / adata.obs["size_factor"].to_numpy()[:, None]
    labels = adata.obs["cell_type"].to_numpy()
    for t in range(3):
        block = slice(t * n_markers, (t + 1) * n_markers)
        assert set(adata.var["marker_of"].iloc[block]) == {f"type_{t}"}
        own = X[labels == f"type_{t}", block].mean()
        for other in set(range(3)) - {t}:
            assert own > 2 * X[labels == f"type_{other}", block].mean()
    n_counts = adata.obs["n_counts"]
    assert n_counts.std() / n_counts.mean() > 0.2
    assert adata.obs["size_factor"].nunique() == adata.n_obs


@pytest.mark.parametrize(
    "kwargs, parameter",
    [
        ({"n_cells": 0}, "n_cells"),
        ({"n_genes": 2.5}, "n_genes"),
        ({"n_types": True}, "n_types"),
        ({"rare_sizes": 5}, "rare_sizes"),
        ({"fold_change": 0}, "fold_change"),
        ({"gene_mean": float("inf")}, "gene_mean"),
        ({"library_size_sd": -1}, "library_size_sd"),
        ({"dispersion": float("nan")}, "dispersion"),
        ({"random_state": "seed"}, "random_state"),
    ],
)
def test_simulate_bad_parameters(kwargs, parameter):
    with pytest.raises(InvalidParameterError, match=f"The '{parameter}' parameter of simulate"):
        simulate(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rare_sizes": (0,)}, r"rare_sizes\[0\] must be an integer >= 1"),
        ({"rare_sizes": (3, True)}, r"rare_sizes\[1\] must be an integer >= 1"),
        ({"n_types": 2, "rare_sizes": (5, 5)}, "at least one common type"),
        ({"n_cells": 30, "rare_sizes": (28,)}, "each common type needs at least one cell"),
        ({"n_genes": 30, "n_markers": 10}, "do not fit in n_genes=30"),
    ],
)
def test_simulate_inconsistent_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate(**kwargs)


def test_simulate_accepts_numpy_scalars_and_random_states():
    a = simulate(n_cells=np.int64(60), n_genes=40, rare_sizes=np.array([5]), random_state=3)
    b = simulate(n_cells=60, n_genes=40, rare_sizes=[5], random_state=np.random.RandomState(3))
    assert a.shape == b.shape == (60, 40)
    assert a.obs["cell_type"].value_counts()["type_3"] == 5


def test_module_exports():
    assert set(datasets.__all__) >= {"DATASETS", "available", "load", "pbmc68k_reduced", "simulate"}
