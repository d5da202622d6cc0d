"""Single-cell RNA-seq count data sets: real ones to load and a seeded simulator.

Every data set is returned as an :class:`~anndata.AnnData` with raw integer UMI counts in ``X``
(a scipy CSR matrix of float32 values) and the cell-type label in ``obs["cell_type"]``
(categorical).

- :func:`pbmc68k_reduced` ships inside scanpy and needs no download.
- :func:`load` reads the other real data sets from a folder of ``<name>.h5ad`` files, taken from
  its ``data_dir`` argument or else from the ``SCAUG_DATA_DIR`` environment variable.
- :func:`simulate` draws negative-binomial counts with rare cell types of chosen sizes.

:data:`DATASETS` describes the real data sets; :func:`available` lists their names.
"""

import os
import warnings
from numbers import Integral, Real
from pathlib import Path
from typing import NamedTuple

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.utils._param_validation import StrOptions, validate_params

from ._utils import Interval

__all__ = ["DATASETS", "DatasetInfo", "available", "load", "pbmc68k_reduced", "simulate"]

#: Name of the environment variable :func:`load` reads the data folder from.
DATA_DIR_ENV = "SCAUG_DATA_DIR"
# Column of ``obs`` holding the cell-type label in every data set.
_LABEL_KEY = "cell_type"


class DatasetInfo(NamedTuple):
    """Description of one real data set in :data:`DATASETS`.

    Attributes
    ----------
    shape : tuple of (int, int)
        Number of cells and number of genes.
    n_types : int
        Number of distinct labels in ``obs["cell_type"]``.
    rare_types : dict of str to int
        The smallest cell types and their number of cells.
    origin : str
        Where the data come from.
    filename : str or None
        File name in the data folder; None for a data set that ships with scanpy.
    """

    shape: tuple
    n_types: int
    rare_types: dict
    origin: str
    filename: str | None


#: The real data sets :func:`load` knows, by name.
DATASETS = {
    "pbmc68k_reduced": DatasetInfo(
        shape=(700, 765),
        n_types=10,
        rare_types={"CD4+/CD45RA+/CD25- Naive T": 8, "CD34+": 13, "CD4+/CD45RO+ Memory": 19},
        origin="10x Genomics PBMC 68k, 700-cell subset shipped with scanpy "
        "(scanpy.datasets.pbmc68k_reduced); counts recovered from its log-normalised .raw",
        filename=None,
    ),
    "pbmc3k": DatasetInfo(
        shape=(2638, 32738),
        n_types=8,
        rare_types={"Megakaryocytes": 15, "Dendritic cells": 37},
        origin="10x Genomics PBMC 3k (the scanpy tutorial data); labels are the tutorial's "
        "Louvain annotation",
        filename="pbmc3k.h5ad",
    ),
    "cbmc": DatasetInfo(
        shape=(7839, 2000),
        n_types=11,
        rare_types={"pDC": 50, "DC": 80, "Eryth": 81, "Mk": 93, "CD34+": 143},
        origin="CITE-seq cord blood mononuclear cells (Stoeckius et al. 2017, GEO GSE100866), "
        "Seurat annotation; top-2000 genes without gene names",
        filename="cbmc.h5ad",
    ),
    "paul15": DatasetInfo(
        shape=(2730, 3451),
        n_types=19,
        rare_types={"18Eos": 9, "17Neu": 22, "11DC": 30, "19Lymph": 31, "1Ery": 43},
        origin="mouse myeloid progenitors (Paul et al. 2015, GEO GSE72857), authors' clusters",
        filename="paul15.h5ad",
    ),
    "bladder": DatasetInfo(
        shape=(2746, 2003),
        n_types=16,
        rare_types={"type_16": 13, "type_15": 30, "type_14": 36},
        origin="Mouse Cell Atlas bladder (Han et al. 2018), authors' annotation as integer "
        "codes; genes without names",
        filename="bladder.h5ad",
    ),
}


def available():
    """List the names of the real data sets :func:`load` accepts.

    Returns
    -------
    names : list of str
        The keys of :data:`DATASETS`.

    Examples
    --------
    >>> from scaug import datasets
    >>> datasets.available()
    ['pbmc68k_reduced', 'pbmc3k', 'cbmc', 'paul15', 'bladder']
    """
    return list(DATASETS)


def pbmc68k_reduced():
    """Load scanpy's 700-cell PBMC subset with its integer UMI counts recovered.

    ``scanpy.datasets.pbmc68k_reduced()`` ships inside scanpy, so this works offline. It stores
    scaled data in ``X`` and, in ``.raw.X``, ``log1p`` of the counts normalised to 10,000 per cell
    by ``obs["n_counts"]`` (rounded to 3 decimals). The counts are recovered as
    ``round(expm1(raw.X) * n_counts / 1e4)``; normalising them again reproduces ``.raw.X`` to
    within 1e-3.

    Returns
    -------
    adata : AnnData
        A new AnnData of 700 cells x 765 genes with

        - ``X``: integer UMI counts, scipy CSR matrix of float32;
        - ``layers["lognorm"]``: the log-normalised ``.raw.X`` of scanpy's copy (CSR, float32);
        - ``obs``: scanpy's columns, plus ``obs["cell_type"]``, a copy of the categorical
          ``obs["bulk_labels"]`` (10 types, from 240 Dendritic cells down to 8
          CD4+/CD45RA+/CD25- Naive T cells). ``obs["n_counts"]`` is the total over all genes
          of the original data, not over the 765 genes kept;
        - ``var_names``: the gene symbols of ``.raw``.

    See Also
    --------
    load : Load this or another real data set by name.

    Examples
    --------
    >>> from scaug.datasets import pbmc68k_reduced
    >>> adata = pbmc68k_reduced()
    >>> adata.shape
    (700, 765)
    >>> bool((adata.X.data == adata.X.data.round()).all())
    True
    >>> adata.obs["cell_type"].nunique()
    10
    """
    import scanpy as sc

    source = sc.datasets.pbmc68k_reduced()
    lognorm = sp.csr_matrix(source.raw.X, dtype=np.float32)
    n_counts = source.obs["n_counts"].to_numpy(dtype=np.float64)

    counts = lognorm.astype(np.float64)
    counts.data = np.expm1(counts.data)
    counts.data *= np.repeat(n_counts / 1e4, np.diff(counts.indptr))
    counts.data = np.rint(counts.data)
    counts.eliminate_zeros()

    obs = source.obs.copy()
    obs["cell_type"] = obs["bulk_labels"].copy()
    return ad.AnnData(
        X=counts.astype(np.float32),
        obs=obs,
        var=pd.DataFrame(index=source.raw.var_names.copy()),
        layers={"lognorm": lognorm},
    )


def _resolve_data_dir(data_dir):
    if data_dir is not None:
        return Path(data_dir), "the data_dir argument"
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env), f"the {DATA_DIR_ENV} environment variable"
    return None, None


@validate_params(
    {"name": [StrOptions(set(DATASETS))], "data_dir": [str, os.PathLike, None]},
    prefer_skip_nested_validation=True,
)
def load(name, data_dir=None):
    """Load a real single-cell data set by name.

    Parameters
    ----------
    name : str
        One of :func:`available`: ``"pbmc68k_reduced"`` (ships with scanpy, see
        :func:`pbmc68k_reduced`), ``"pbmc3k"``, ``"cbmc"``, ``"paul15"`` or ``"bladder"``. The
        shapes, numbers of cell types and origins are in :data:`DATASETS`.

    data_dir : str or path-like, default=None
        Folder holding the ``<name>.h5ad`` files. If None, the ``SCAUG_DATA_DIR`` environment
        variable is used. Ignored for ``"pbmc68k_reduced"``.

    Returns
    -------
    adata : AnnData
        Raw integer UMI counts in ``X`` (scipy CSR matrix of float32, as stored) and the cell
        type in ``obs["cell_type"]`` (categorical).

    Raises
    ------
    InvalidParameterError
        If `name` is not one of :func:`available` or `data_dir` is not a path (scikit-learn's
        ``InvalidParameterError``, a ``ValueError``).
    FileNotFoundError
        If the data folder does not exist, ``<name>.h5ad`` is not in it, or no data folder was
        given.
    ValueError
        If the file is not a readable ``.h5ad`` (corrupt, truncated or of another format), has
        no matrix in ``X`` or no ``obs["cell_type"]`` column.

    Warns
    -----
    UserWarning
        If the file's shape differs from the one in :data:`DATASETS` (another version of the
        data set).

    See Also
    --------
    pbmc68k_reduced : The data set that needs no data folder.
    simulate : Simulated counts with rare cell types.

    Examples
    --------
    >>> from scaug import datasets
    >>> adata = datasets.load("pbmc68k_reduced")
    >>> adata.shape
    (700, 765)

    The other data sets are read from a folder of ``.h5ad`` files:

    >>> adata = datasets.load("paul15", data_dir="/path/to/data")  # doctest: +SKIP
    >>> adata.shape  # doctest: +SKIP
    (2730, 3451)
    """
    info = DATASETS[name]
    if info.filename is None:
        return pbmc68k_reduced()

    folder, source = _resolve_data_dir(data_dir)
    hint = (
        f"Pass data_dir=<folder holding {info.filename}> or set the {DATA_DIR_ENV} environment "
        "variable to that folder."
    )
    if folder is None:
        raise FileNotFoundError(
            f"Cannot find the file {info.filename!r} for data set {name!r}: no data folder was "
            f"given. {hint}"
        )
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Cannot find the data folder {str(folder)!r} (from {source}) for data set {name!r}: "
            f"it does not exist or is not a folder. {hint}"
        )
    path = folder / info.filename
    if not path.is_file():
        raise FileNotFoundError(
            f"Cannot find the file {info.filename!r} for data set {name!r} in {str(folder)!r} "
            f"(the folder from {source}). {hint}"
        )
    return _read_dataset(path, name, info)


def _read_dataset(path, name, info):
    """Read and check one data set file; errors name the file and what is wrong with it."""
    fix = f"Replace {str(path)!r} with a good copy of the {name!r} data set."
    try:
        adata = ad.read_h5ad(path)
    except MemoryError:
        raise
    except Exception as exc:  # h5py, anndata and pandas each raise their own types
        raise ValueError(
            f"Cannot read data set {name!r}: {str(path)!r} is not a readable .h5ad file "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no message'}). "
            f"{fix}"
        ) from exc
    if adata.X is None:
        raise ValueError(f"Data set {name!r} in {str(path)!r} has no matrix in X. {fix}")
    if _LABEL_KEY not in adata.obs:
        columns = ", ".join(map(repr, adata.obs.columns)) or "none"
        raise ValueError(
            f"Data set {name!r} in {str(path)!r} has no obs[{_LABEL_KEY!r}] column with the cell "
            f"types (its obs columns: {columns}). {fix}"
        )
    if adata.shape != info.shape:
        warnings.warn(
            f"Data set {name!r} in {str(path)!r} has shape {adata.shape}, not the "
            f"{info.shape} scaug knows (another version of the data set?); figures in docs/ "
            "were measured on the latter.",
            UserWarning,
            stacklevel=4,  # _read_dataset, load, its validate_params wrapper, the caller
        )
    if not isinstance(adata.obs[_LABEL_KEY].dtype, pd.CategoricalDtype):
        adata.obs[_LABEL_KEY] = adata.obs[_LABEL_KEY].astype("category")
    return adata


def _generator(random_state):
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(np.iinfo(np.int32).max))
    return np.random.default_rng(random_state)


_COUNT = [Interval(Integral, 1, None, closed="left")]
_POSITIVE = [Interval(Real, 0, None, closed="neither")]
_NON_NEGATIVE = [Interval(Real, 0, None, closed="left")]


@validate_params(
    {
        "n_cells": _COUNT,
        "n_genes": _COUNT,
        "n_types": _COUNT,
        "rare_sizes": ["array-like"],
        "n_markers": [Interval(Integral, 0, None, closed="left")],
        "fold_change": _POSITIVE,
        "gene_mean": _POSITIVE,
        "gene_mean_sd": _NON_NEGATIVE,
        "library_size_sd": _NON_NEGATIVE,
        "dispersion": _POSITIVE,
        "n_batches": _COUNT,
        "batch_effect_sd": _NON_NEGATIVE,
        "batch_type_effect_sd": _NON_NEGATIVE,
        "batch_library_sd": _NON_NEGATIVE,
        "random_state": ["random_state", np.random.Generator],
    },
    prefer_skip_nested_validation=True,
)
def simulate(
    n_cells=1000,
    n_genes=200,
    n_types=4,
    *,
    rare_sizes=(20,),
    n_markers=10,
    fold_change=4.0,
    gene_mean=1.0,
    gene_mean_sd=1.0,
    library_size_sd=0.4,
    dispersion=0.2,
    n_batches=1,
    batch_effect_sd=0.3,
    batch_type_effect_sd=0.15,
    batch_library_sd=0.3,
    random_state=None,
):
    """Simulate negative-binomial UMI counts of cell types, some of them rare.

    The mean count of gene ``g`` in cell ``i`` of type ``t`` is
    ``size_factor[i] * base_mean[g] * type_fold_change[t, g]``:

    - ``base_mean`` is shared by all types and log-normal: ``log(base_mean) ~
      Normal(log(gene_mean), gene_mean_sd)``;
    - each type has its own block of `n_markers` marker genes (type ``t`` owns genes
      ``t * n_markers`` to ``(t + 1) * n_markers - 1``) whose mean is multiplied by a fold change
      ``fold_change * exp(Normal(0, 0.2))``; all other fold changes are 1;
    - ``size_factor`` varies the library size per cell: ``log(size_factor) ~
      Normal(0, library_size_sd)``.

    Counts are drawn as a gamma-Poisson mixture, that is negative binomial with variance
    ``mean + dispersion[g] * mean**2``, with a gene-wise dispersion
    ``dispersion[g] = dispersion * exp(Normal(0, 0.5))``.

    With ``n_batches > 1`` every cell also belongs to a batch (donor, sample), drawn uniformly,
    and the mean above is multiplied by ``exp(shift[b, g] + type_shift[b, t, g] +
    library_shift[b])`` for a cell of batch ``b``: a per-batch, per-gene log-scale shift shared
    by the types (``shift ~ Normal(0, batch_effect_sd)``), a smaller part specific to each type
    (``type_shift ~ Normal(0, batch_type_effect_sd)``: a type looks different in each batch)
    and a library-size shift (``library_shift ~ Normal(0, batch_library_sd)``). The defaults
    (a 35 % change of a gene's mean for one sd, libraries a third deeper or shallower) are
    below the marker fold change (4), as technical batch effects are below cell-type
    differences in well-run experiments, yet large enough to tell the batches apart.

    The last ``len(rare_sizes)`` types have exactly the sizes in `rare_sizes`; the other cells are
    split as evenly as possible among the remaining (common) types, the first types taking one
    extra cell each where the split is uneven. Cells are returned in random order.

    Parameters
    ----------
    n_cells : int, default=1000
        Total number of cells.

    n_genes : int, default=200
        Number of genes; at least ``n_types * n_markers``.

    n_types : int, default=4
        Number of cell types, rare ones included.

    rare_sizes : sequence of int, default=(20,)
        Sizes of the rare types, given to the last types in order. Fewer than `n_types` entries,
        so that at least one common type remains; may be empty.

    n_markers : int, default=10
        Number of marker genes of each type.

    fold_change : float, default=4.0
        Typical fold change of a type's marker genes over the baseline; greater than 0.

    gene_mean : float, default=1.0
        Median baseline mean count of a gene in a cell of size factor 1.

    gene_mean_sd : float, default=1.0
        Standard deviation of the log baseline gene means.

    library_size_sd : float, default=0.4
        Standard deviation of the log size factors; 0 gives every cell the same expected
        library size.

    dispersion : float, default=0.2
        Typical negative-binomial dispersion of a gene (0 would be Poisson); greater than 0.

    n_batches : int, default=1
        Number of batches; 1 simulates no batch effect and gives exactly the data of earlier
        versions (no ``obs["batch"]``).

    batch_effect_sd : float, default=0.3
        Standard deviation of the per-batch, per-gene log-scale shift shared by all types.

    batch_type_effect_sd : float, default=0.15
        Standard deviation of the per-batch, per-type, per-gene log-scale shift.

    batch_library_sd : float, default=0.3
        Standard deviation of the per-batch shift of the log library size.

    random_state : int, numpy.random.Generator, numpy.random.RandomState or None, default=None
        Seed or generator; an int gives the same data on every call. A generator passed in is
        advanced.

    Returns
    -------
    adata : AnnData
        ``n_cells`` x ``n_genes`` with

        - ``X``: the counts, scipy CSR matrix of float32 integers;
        - ``obs["cell_type"]``: categorical with categories ``"type_0"``, ``"type_1"``, ...;
        - ``obs["n_counts"]``: the total counts of each cell; ``obs["size_factor"]``: its size
          factor (with its batch's library shift);
        - ``obs["batch"]`` (only when ``n_batches > 1``): categorical ``"batch_0"``, ...;
        - ``var["marker_of"]``: the type whose marker the gene is, or missing;
        - ``uns["simulation"]``: the parameters (``"params"``) and ground truth:
          ``"base_mean"`` (n_genes,), ``"type_fold_change"`` (n_types, n_genes),
          ``"dispersion"`` (n_genes,) and ``"type_sizes"`` (n_types,); with batches also
          ``"batch_shift"`` (n_batches, n_genes), ``"batch_type_shift"`` (n_batches, n_types,
          n_genes) and ``"batch_library_shift"`` (n_batches,).

    Raises
    ------
    InvalidParameterError
        If an argument has the wrong type or is out of range (scikit-learn's
        ``InvalidParameterError``, a ``ValueError``).
    ValueError
        If an entry of `rare_sizes` is not a positive integer, the rare sizes leave fewer cells
        than common types, or the marker blocks do not fit in `n_genes`.

    See Also
    --------
    load : Real data sets.

    Examples
    --------
    >>> from scaug.datasets import simulate
    >>> adata = simulate(n_cells=500, n_genes=100, n_types=3, rare_sizes=(10,), random_state=0)
    >>> adata.shape
    (500, 100)
    >>> adata.obs["cell_type"].value_counts().sort_index().tolist()
    [245, 245, 10]
    >>> batched = simulate(n_cells=500, n_genes=100, n_types=3, n_batches=3, random_state=0)
    >>> batched.obs["batch"].cat.categories.tolist()
    ['batch_0', 'batch_1', 'batch_2']
    """
    n_cells, n_genes, n_types, n_markers = int(n_cells), int(n_genes), int(n_types), int(n_markers)
    rare_sizes, n_common, n_left = _check_sizes(n_cells, n_genes, n_types, n_markers, rare_sizes)
    fold_change, gene_mean, dispersion = float(fold_change), float(gene_mean), float(dispersion)
    gene_mean_sd, library_size_sd = float(gene_mean_sd), float(library_size_sd)
    n_batches = int(n_batches)
    batch_sds = (float(batch_effect_sd), float(batch_type_effect_sd), float(batch_library_sd))
    rng = _generator(random_state)

    common_sizes = np.full(n_common, n_left // n_common)
    common_sizes[: n_left % n_common] += 1
    type_sizes = np.concatenate([common_sizes, np.asarray(rare_sizes, dtype=np.int64)])
    type_sizes = type_sizes.astype(np.int64)
    names = [f"type_{t}" for t in range(n_types)]

    base_mean = np.exp(rng.normal(np.log(gene_mean), gene_mean_sd, size=n_genes))
    type_fold_change = np.ones((n_types, n_genes))
    marker_of = np.full(n_genes, None, dtype=object)
    for t in range(n_types):
        block = slice(t * n_markers, (t + 1) * n_markers)
        type_fold_change[t, block] = fold_change * np.exp(rng.normal(0.0, 0.2, size=n_markers))
        marker_of[block] = names[t]
    gene_dispersion = dispersion * np.exp(rng.normal(0.0, 0.5, size=n_genes))

    labels = rng.permutation(np.repeat(np.arange(n_types), type_sizes))
    size_factor = np.exp(rng.normal(0.0, library_size_sd, size=n_cells))
    mean = size_factor[:, np.newaxis] * (base_mean * type_fold_change)[labels]
    batch_truth = {}
    if n_batches > 1:  # drawn only here, so that one batch leaves the random stream as it was
        batch = rng.integers(n_batches, size=n_cells)
        shift = rng.normal(0.0, batch_sds[0], size=(n_batches, n_genes))
        type_shift = rng.normal(0.0, batch_sds[1], size=(n_batches, n_types, n_genes))
        library_shift = rng.normal(0.0, batch_sds[2], size=n_batches)
        mean = mean * np.exp(shift[batch] + type_shift[batch, labels] + library_shift[batch][:, None])
        size_factor = size_factor * np.exp(library_shift[batch])
        batch_truth = {"batch_shift": shift, "batch_type_shift": type_shift,
                       "batch_library_shift": library_shift}
    shape = 1.0 / gene_dispersion
    counts = rng.poisson(rng.gamma(shape, mean / shape))

    batches = batch if n_batches > 1 else None
    X, obs, var = _simulated_tables(counts, labels, size_factor, batches, n_batches, names, marker_of)
    params = {"n_cells": n_cells, "n_genes": n_genes, "n_types": n_types,
              "rare_sizes": np.asarray(rare_sizes, dtype=np.int64), "n_markers": n_markers,
              "fold_change": fold_change, "gene_mean": gene_mean, "gene_mean_sd": gene_mean_sd,
              "library_size_sd": library_size_sd, "dispersion": dispersion}
    if n_batches > 1:
        params.update(n_batches=n_batches, batch_effect_sd=batch_sds[0],
                      batch_type_effect_sd=batch_sds[1], batch_library_sd=batch_sds[2])
    uns = {
        "simulation": {
            "params": params,
            "base_mean": base_mean,
            "type_fold_change": type_fold_change,
            "dispersion": gene_dispersion,
            "type_sizes": type_sizes,
            **batch_truth,
        }
    }
    return ad.AnnData(X=X, obs=obs, var=var, uns=uns)


def _check_sizes(n_cells: int, n_genes: int, n_types: int, n_markers: int, rare_sizes):
    """:func:`simulate`'s sizes checked: ``(rare sizes as ints, common types, their cells)``."""
    rare_sizes = list(rare_sizes)
    for i, size in enumerate(rare_sizes):
        if isinstance(size, (bool, np.bool_)) or not isinstance(size, Integral) or size < 1:
            raise ValueError(
                f"rare_sizes[{i}] must be an integer >= 1 (a rare type's number of cells); got "
                f"{size!r}."
            )
    rare_sizes = [int(size) for size in rare_sizes]
    n_common = n_types - len(rare_sizes)
    if n_common < 1:
        raise ValueError(
            f"rare_sizes has {len(rare_sizes)} entries but n_types={n_types}; give fewer rare "
            "sizes than types so that at least one common type remains."
        )
    n_left = n_cells - sum(rare_sizes)
    if n_left < n_common:
        raise ValueError(
            f"rare_sizes sum to {sum(rare_sizes)} of n_cells={n_cells}, leaving {n_left} cells "
            f"for {n_common} common type(s); each common type needs at least one cell. Increase "
            "n_cells or decrease rare_sizes."
        )
    if n_types * n_markers > n_genes:
        raise ValueError(
            f"n_types * n_markers = {n_types} * {n_markers} = {n_types * n_markers} marker genes "
            f"do not fit in n_genes={n_genes}; increase n_genes or decrease n_markers."
        )
    return rare_sizes, n_common, n_left


def _simulated_tables(counts, labels, size_factor, batch, n_batches, names, marker_of):
    """:func:`simulate`'s ``X`` (CSR), ``obs`` and ``var``."""
    X = sp.csr_matrix(counts.astype(np.float32))
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical.from_codes(labels, categories=names),
            "n_counts": counts.sum(axis=1).astype(np.float32),
            "size_factor": size_factor.astype(np.float32),
        },
        index=pd.Index([f"cell_{i}" for i in range(counts.shape[0])]),
    )
    if batch is not None:
        obs["batch"] = pd.Categorical.from_codes(
            batch, categories=[f"batch_{b}" for b in range(n_batches)])
    var = pd.DataFrame(
        {"marker_of": pd.Categorical(marker_of, categories=names)},
        index=pd.Index([f"gene_{g}" for g in range(counts.shape[1])]),
    )
    return X, obs, var
