"""Cells streamed from AnnData files on disk: shuffled, class-balanced minibatches in bounded memory.

:class:`OnDiskCells` reads one or several AnnData files (``.h5ad`` through h5py, ``.zarr`` stores
through zarr) with anndata's own on-disk access: :func:`anndata.io.sparse_dataset` for a sparse
CSR matrix, the h5py / zarr array itself for a dense one, :func:`anndata.io.read_elem` for
``var`` and the labels column of ``obs``. Nothing but one buffer of cells is ever in memory.

The minibatches follow annbatch's scheme. The files are one virtual row range cut into contiguous
chunks of ``chunk_size`` rows; every pass draws a permutation of all the chunks of all the files,
reads ``buffer_chunks`` of them at a time (contiguous reads, merged where neighbours), shuffles
the rows within that buffer and yields minibatches from it. A batch thus mixes cells of many
places in many files, while every read is a contiguous slice. Under DDP every process draws the
same chunk permutation and keeps its stripe of it, with the same number of rows (hence steps) on
every process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch.utils.data import IterableDataset

from .. import _utils
from .data import process_rank

__all__ = ["OnDiskCells"]


def _open_group(path: str):
    """The root group of an AnnData file: h5py for ``.h5ad``, zarr for a ``.zarr`` store."""
    if os.path.isdir(path) or path.rstrip("/").endswith(".zarr"):
        import zarr

        return zarr.open_group(path, mode="r")
    import h5py

    return h5py.File(path, "r")


def _matrix(group, layer: str | None, path: str):
    """X (or a layer) of an open AnnData group as a row-sliceable on-disk matrix."""
    import anndata as ad

    where = "X" if layer is None else f"layers/{layer}"
    if layer is not None and ("layers" not in group or layer not in group["layers"]):
        raise KeyError(f"{path!r} has no layer {layer!r}.")
    elem = group[where]
    encoding = elem.attrs.get("encoding-type", "array")
    if encoding == "csc_matrix":
        raise ValueError(f"{where} of {path!r} is a CSC matrix, which is read a column at a time; "
                         "write it as CSR (adata.X = adata.X.tocsr()) to stream cells.")
    if encoding == "csr_matrix":
        return ad.io.sparse_dataset(elem)
    if len(elem.shape) != 2:
        raise ValueError(f"{where} of {path!r} is not a cells x genes matrix.")
    return elem  # a dense h5py dataset or zarr array: row slices read just those rows


class OnDiskCells:
    """Cells of one or several AnnData files on disk, streamed in minibatches.

    Pass it to :meth:`scaug.CellAutoencoder.fit` or :meth:`scaug.SCLD.fit` in place of a matrix:
    the autoencoder is trained from disk; what later stages need (latents, library sizes, gene
    moments) comes from sequential passes of ``chunk_size`` rows at a time.

    Parameters
    ----------
    paths : path or sequence of paths
        ``.h5ad`` files and/or AnnData ``.zarr`` stores with the same genes (``var_names``) in the
        same order; their cells are taken one file after the other.
    layer : str or None, default=None
        Read ``adata.layers[layer]`` instead of ``adata.X``. Sparse matrices must be CSR.
    labels_key : str or None, default=None
        Column of ``obs`` with the cell types; missing values become ``-1`` (unlabelled, as in
        :func:`scaug.tl.fit`). ``SCLD.fit`` uses them when it gets no ``y``.
    chunk_size : int, default=512
        Rows per contiguous read.
    buffer_chunks : int, default=32
        Chunks read into memory at a time, whose rows are shuffled together; memory is bounded
        by ``chunk_size * buffer_chunks`` cells (sparse as stored), whatever the number of cells.

    Attributes
    ----------
    shape : tuple of int
        ``(n_cells, n_genes)`` of the whole collection.
    var_names : ndarray of str
    labels : ndarray or None
        One label per cell, from ``obs[labels_key]``.
    dtype : numpy dtype
    sparse : bool
        Whether any of the files stores the matrix sparse.

    Examples
    --------
    >>> from scaug import SCLD, OnDiskCells
    >>> cells = OnDiskCells(["part1.h5ad", "part2.zarr"], labels_key="cell_type")  # doctest: +SKIP
    >>> model = SCLD(max_epochs=5).fit(cells)                    # doctest: +SKIP
    """

    def __init__(self, paths, *, layer: str | None = None, labels_key: str | None = None,
                 chunk_size: int = 512, buffer_chunks: int = 32):
        import anndata as ad  # imported on use: `import scaug.train` stays light

        if isinstance(paths, str | os.PathLike):
            paths = [paths]
        self.paths = [os.fspath(p) for p in paths]
        if not self.paths:
            raise ValueError("paths is empty; give at least one .h5ad file or .zarr store.")
        for p in self.paths:
            if not os.path.exists(p):
                raise FileNotFoundError(f"No AnnData file or store at {p!r}.")
        if int(chunk_size) < 1 or int(buffer_chunks) < 1:
            raise ValueError("chunk_size and buffer_chunks must be positive integers.")
        self.layer, self.labels_key = layer, labels_key
        self.chunk_size, self.buffer_chunks = int(chunk_size), int(buffer_chunks)
        self._handles = self._open_matrices = None
        n_rows, dtypes, sparse, labels = [], [], [], []
        for i, path in enumerate(self.paths):
            group, matrix = self._groups()[i], self._matrices()[i]
            n_rows.append(int(matrix.shape[0]))
            dtypes.append(np.dtype(matrix.dtype))
            sparse.append(isinstance(matrix, ad.abc.CSRDataset))
            names = np.asarray(ad.io.read_elem(group["var"]).index, dtype=object)
            if i == 0:
                self.var_names = names
            elif not np.array_equal(names, self.var_names):
                raise ValueError(f"{path!r} has other genes (var_names) than {self.paths[0]!r}; "
                                 "the files of a collection must share genes in the same order.")
            if int(matrix.shape[1]) != len(self.var_names):
                raise ValueError(f"The matrix of {path!r} has {matrix.shape[1]} columns but "
                                 f"{len(self.var_names)} var_names.")
            if labels_key is not None:
                labels.append(self._read_labels(group, labels_key, path))
        self.offsets = np.concatenate([[0], np.cumsum(n_rows)]).astype(np.int64)
        self.shape = (int(self.offsets[-1]), len(self.var_names))
        self.dtype = np.result_type(*dtypes)
        self.sparse = any(sparse)
        self.labels = None if labels_key is None else np.concatenate(labels)
        if self.shape[0] < 2:
            raise ValueError(f"The files hold {self.shape[0]} cell(s); training needs at least 2.")

    @staticmethod
    def _read_labels(group, key: str, path: str) -> np.ndarray:
        import anndata as ad

        obs = group["obs"]
        if key not in obs:
            raise KeyError(f"obs of {path!r} has no column {key!r}.")
        values = pd.Series(ad.io.read_elem(obs[key]))
        labels = values.astype(object).to_numpy()
        labels[values.isna().to_numpy()] = _utils.UNLABELLED
        return labels

    # -- file access ---------------------------------------------------------------------------
    def _groups(self):
        if self._handles is None:  # opened lazily, so every process (and a copy) opens its own
            self._handles = [_open_group(p) for p in self.paths]
        return self._handles

    def _matrices(self):
        if self._open_matrices is None:
            self._open_matrices = [_matrix(g, self.layer, p) for g, p in zip(self._groups(), self.paths,
                                                                          strict=True)]
        return self._open_matrices

    def __getstate__(self):
        return {**self.__dict__, "_handles": None, "_open_matrices": None}

    def __repr__(self) -> str:
        return (f"OnDiskCells({len(self.paths)} file(s), {self.shape[0]} cells x {self.shape[1]} "
                f"genes, chunk_size={self.chunk_size})")

    def read(self, start: int, stop: int):
        """Rows ``start:stop`` of the collection (a CSR matrix, or an ndarray when dense)."""
        matrices = self._matrices()
        blocks = []
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        for i in range(first, len(self.paths)):
            lo, hi = max(start, self.offsets[i]), min(stop, self.offsets[i + 1])
            if lo >= hi:
                break
            lo, hi = int(lo - self.offsets[i]), int(hi - self.offsets[i])
            block = matrices[i][lo:hi]
            blocks.append(sp.csr_matrix(block) if self.sparse and not sp.issparse(block) else block)
        if len(blocks) == 1:
            return blocks[0]
        return sp.vstack(blocks, format="csr") if self.sparse else np.concatenate(blocks)

    def _read_ranges(self, ranges):
        """Rows of several ``(start, stop)`` ranges, stacked; neighbouring ranges are read at once."""
        ranges = sorted(ranges)
        merged = [list(ranges[0])]
        for lo, hi in ranges[1:]:
            if lo == merged[-1][1]:
                merged[-1][1] = hi
            else:
                merged.append([lo, hi])
        blocks = [self.read(lo, hi) for lo, hi in merged]
        rows = np.concatenate([np.arange(lo, hi) for lo, hi in merged])
        if len(blocks) == 1:
            return blocks[0], rows
        return (sp.vstack(blocks, format="csr") if self.sparse else np.concatenate(blocks)), rows

    def blocks(self, block_size: int | None = None) -> Iterator[tuple[int, object]]:
        """One sequential pass: ``(start, rows start:start + block_size)`` in order."""
        block_size = block_size or self.chunk_size * self.buffer_chunks
        for start in range(0, self.shape[0], block_size):
            yield start, self.read(start, min(start + block_size, self.shape[0]))

    def sample(self, n_chunks: int = 8, seed: int = 0):
        """Rows of ``n_chunks`` chunks drawn at random (for decisions such as the likelihood)."""
        starts = self._chunk_starts()
        pick = np.random.default_rng(seed).choice(len(starts), min(n_chunks, len(starts)),
                                                  replace=False)
        return self._read_ranges([self._chunk_range(starts[c]) for c in pick])[0]

    def _chunk_starts(self) -> np.ndarray:
        return np.arange(0, self.shape[0], self.chunk_size)

    def _chunk_range(self, start: int) -> tuple[int, int]:
        return int(start), int(min(start + self.chunk_size, self.shape[0]))

    # -- what training needs -------------------------------------------------------------------
    def minibatches(self, *, batch_size: int, seed: int, codes: np.ndarray | None = None,
                    class_balance: float = 1.0) -> IterableDataset:
        """An iterable dataset of shuffled minibatches (``(x,)`` tuples of dense tensors).

        With ``codes`` (an integer class per cell), the rows of each buffer are resampled with
        weights ~ ``n_c ** (class_balance - 1)``, ``n_c`` the size of the cell's class over the
        whole collection: class ``c`` is then drawn with probability ~ ``n_c ** class_balance``,
        as :class:`scaug.train.BalancedDraws` does in memory, as far as a buffer holds the class.
        """
        return _Minibatches(self, batch_size=batch_size, seed=seed, codes=codes,
                            class_balance=class_balance)

    def signature(self) -> _utils.GeneSignature:
        """Shape and gene names, for the gene checks of a model."""
        return _utils.GeneSignature(self.shape, self.var_names)

    def gene_moments(self):
        """Per-gene mean, scale (1 where constant) and non-negativity, in one streaming pass; the
        same figures as the in-memory ``scaug.train.data.gene_moments``."""
        total = np.zeros(self.shape[1])
        squares = np.zeros(self.shape[1])
        low = np.inf
        for _, block in self.blocks():
            block = block.astype(np.float64)
            total += np.asarray(block.sum(axis=0)).ravel()
            squares += np.asarray((block.multiply(block) if sp.issparse(block) else block**2)
                                  .sum(axis=0)).ravel()
            values = block.data if sp.issparse(block) else block
            if values.size:
                low = min(low, float(values.min()))
        mean = total / self.shape[0]
        scale = np.sqrt(np.maximum(squares / self.shape[0] - mean**2, 0))
        scale = np.where(scale > 1e-8, scale, 1.0)
        return mean.astype(np.float32), scale.astype(np.float32), bool(low >= 0)

    def encode(self, autoencoder, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Latents and library sizes (row sums) of every cell, in one sequential pass of buffers,
        each encoded ``batch_size`` cells at a time."""
        latents, library = [], np.empty(self.shape[0])
        for start, block in self.blocks():
            latents.append(autoencoder.encode(block, batch_size))
            library[start:start + block.shape[0]] = _utils.row_sums(block)
        return np.concatenate(latents), library


class _Minibatches(IterableDataset):
    """The minibatches of :meth:`OnDiskCells.minibatches`."""

    def __init__(self, cells: OnDiskCells, *, batch_size: int, seed: int, codes, class_balance):
        self.cells = cells
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.weights = None
        if codes is not None and class_balance != 1.0:
            codes = np.asarray(codes)
            counts = np.bincount(codes).astype(np.float64)
            self.weights = np.where(counts > 0, counts, 1.0)[codes] ** (float(class_balance) - 1)
        self._perm_rng = self._row_rng = None

    def rows_per_process(self, world: int) -> int:
        """Rows every process gets per pass: its stripe of the chunk permutation, less the rows
        that the shorter last chunk may lack (so that every process takes as many steps)."""
        cells = self.cells
        n_chunks = len(cells._chunk_starts())
        per = n_chunks // world
        if per == 0:
            raise ValueError(f"{n_chunks} chunks of {cells.chunk_size} cells cannot be split "
                             f"among {world} processes; lower chunk_size.")
        tail = cells.shape[0] - (n_chunks - 1) * cells.chunk_size
        return per * cells.chunk_size - (cells.chunk_size - tail)

    def __len__(self) -> int:
        return int(np.ceil(self.rows_per_process(process_rank()[1]) / self.batch_size))

    def __iter__(self):
        rank, world = process_rank()
        if self._perm_rng is None:
            # the chunk permutation is drawn alike on every process; the shuffles within buffers
            # on each process's own stream
            self._perm_rng = np.random.default_rng([self.seed, 0])
            self._row_rng = np.random.default_rng([self.seed, 1, rank])
        cells, rng = self.cells, self._row_rng
        starts = cells._chunk_starts()
        stripe = self._perm_rng.permutation(len(starts))[: len(starts) // world * world][rank::world]
        budget = self.rows_per_process(world)
        pending = None  # rows of a short batch waiting for the next buffer
        for b in range(0, len(stripe), cells.buffer_chunks):
            if budget <= 0:
                break
            buffer, rows = cells._read_ranges([cells._chunk_range(starts[c])
                                               for c in stripe[b:b + cells.buffer_chunks]])
            n = min(len(rows), budget)
            budget -= n
            if self.weights is None:
                order = rng.permutation(len(rows))[:n]
            else:
                p = self.weights[rows]
                order = rng.choice(len(rows), size=n, p=p / p.sum())
            # a buffer's last, short batch is completed from the next buffer, so every batch
            # but the pass's last is full and a pass is exactly len(self) batches
            start = 0
            if pending is not None:
                take = np.sort(order[: self.batch_size - len(pending)])
                pending = np.concatenate([pending, _utils.dense_rows(buffer, take)])
                start = len(take)
                if len(pending) < self.batch_size and budget > 0:
                    continue
                yield (torch.from_numpy(pending),)
                pending = None
            for i in range(start, n, self.batch_size):
                batch = np.sort(order[i:i + self.batch_size])  # sorted rows slice CSR faster
                if len(batch) < self.batch_size and budget > 0:
                    pending = _utils.dense_rows(buffer, batch)
                    break
                yield (torch.from_numpy(_utils.dense_rows(buffer, batch)),)
        if pending is not None:
            yield (torch.from_numpy(pending),)

