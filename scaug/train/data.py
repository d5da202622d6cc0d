"""Where minibatches come from: index draws and iterable datasets over cells or latents.

A training plan never sees the data source; it gets tensors. The datasets here are iterables
that yield whole minibatches (a DataLoader with ``batch_size=None`` passes them through), so the
per-step cost is one slice of the matrix, not a per-cell collate. Under DDP every process draws
from the same permutation and keeps its own stripe of it (shuffled passes), or from its own
random stream (class-balanced draws), so no process management is needed here.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist
from torch.utils.data import IterableDataset

from .. import _utils


def process_rank() -> tuple[int, int]:
    """``(rank, world_size)`` of this process in a distributed run, ``(0, 1)`` otherwise."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def validation_split(groups: np.ndarray, fraction: float, seed: int,
                     min_group: int = 100) -> np.ndarray | None:
    """Cells held out to decide when training has converged (early stopping).

    Each group (cell type, or unlabelled cells) of at least ``min_group`` cells gives
    ``round(fraction * n)`` random cells; smaller groups give none, so a rare type keeps every one
    of its cells for training. Returns a boolean mask, or None when no cell qualifies.

    Examples
    --------
    >>> import numpy as np
    >>> from scaug.train import validation_split
    >>> groups = np.array([0] * 1000 + [1] * 10)
    >>> mask = validation_split(groups, 0.1, seed=0)
    >>> int(mask[:1000].sum()), int(mask[1000:].sum())  # the 10-cell type keeps all its cells
    (100, 0)
    """
    groups = np.asarray(groups)
    rng = np.random.default_rng([int(seed), 7])
    mask = np.zeros(len(groups), dtype=bool)
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        if len(members) >= min_group:
            mask[rng.choice(members, size=int(round(fraction * len(members))), replace=False)] = True
    return mask if mask.any() else None


class BalancedDraws:
    """Minibatch indices in which class ``c`` is drawn with probability ~ ``n_c ** power``.

    ``power=0`` makes every class equally likely: rare types are otherwise almost never seen;
    drawing the class first, then a cell of that class, makes a 10-cell type as present as a
    2000-cell one. ``power=1`` is plain uniform sampling of cells. The sort by class is done once
    here, so a draw costs O(batch size) whatever the number of cells.

    Examples
    --------
    >>> import numpy as np
    >>> from scaug.train import BalancedDraws
    >>> y = np.array([0] * 990 + [1] * 10)
    >>> idx = BalancedDraws(y)(10000, np.random.default_rng(0))
    >>> round(float((y[idx] == 1).mean()), 1)  # the 10-cell class fills half of the batches
    0.5
    """

    def __init__(self, y: np.ndarray, power: float = 0.0):
        y = np.asarray(y)
        self.order = np.argsort(y, kind="stable")
        _, self.starts, self.counts = np.unique(y[self.order], return_index=True, return_counts=True)
        p = self.counts.astype(np.float64) ** power
        self.p = None if power == 0.0 else p / p.sum()

    def __call__(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        n_classes = len(self.counts)
        if self.p is None:
            cls = rng.integers(n_classes, size=batch_size)
        else:
            cls = rng.choice(n_classes, size=batch_size, p=self.p)
        offset = (rng.random(batch_size) * self.counts[cls]).astype(np.int64)
        return self.order[self.starts[cls] + offset]


class MinibatchData(IterableDataset):
    """Minibatches of rows of in-memory arrays, as tensors.

    Parameters
    ----------
    arrays : sequence of ndarray or CSR matrix
        Row-aligned arrays; a batch holds the same rows of each (sparse rows are densified one
        batch at a time, never whole).
    batch_size : int
    seed : int
        Seeds the index draws (each pass draws a new permutation from the same stream).
    n_batches : int or None
        Batches per pass; ``None`` is one shuffled pass over the rows.
    draw : BalancedDraws or None
        Draw each batch from this (class-balanced) instead of a shuffled pass.
    rows : array of int or None
        Use only these rows (for example all but a validation split; ``draw`` then indexes
        them), without copying the arrays.

    Examples
    --------
    >>> import numpy as np
    >>> from scaug.train import MinibatchData
    >>> data = MinibatchData([np.ones((10, 3)), np.arange(10)], batch_size=4, seed=0)
    >>> [tuple(x.shape) for x, _ in data]  # one shuffled pass: 4 + 4 + 2 rows
    [(4, 3), (4, 3), (2, 3)]
    """

    def __init__(self, arrays, *, batch_size: int, seed: int, n_batches: int | None = None,
                 draw: BalancedDraws | None = None, rows: np.ndarray | None = None):
        self.arrays = list(arrays)
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.n_obs = self.arrays[0].shape[0] if rows is None else len(self.rows)
        self.batch_size = int(batch_size)
        self.draw = draw
        self.n_batches = n_batches
        self.seed = int(seed)
        self._rng = None

    def __len__(self) -> int:
        if self.n_batches is not None:
            return self.n_batches
        # one pass over the rows, shared by the processes
        return int(np.ceil(self.n_obs // process_rank()[1] / self.batch_size))

    def _batches(self, rng, rank, world):
        if self.draw is not None:
            for _ in range(len(self)):
                yield self.draw(self.batch_size, rng)
            return
        perm = rng.permutation(self.n_obs)
        # every process shuffles alike and keeps its stripe, all stripes equally long (DDP steps
        # in lockstep); the last batch may be smaller
        perm = perm[: len(perm) - len(perm) % world][rank::world]
        for start in range(0, len(perm), self.batch_size):
            yield perm[start:start + self.batch_size]

    def __iter__(self):
        rank, world = process_rank()
        if self._rng is None:
            # shuffled passes share one stream across processes (each keeps its stripe);
            # balanced draws give each process its own stream
            self._rng = np.random.default_rng([self.seed, rank if self.draw is not None else 0])
        for rows in self._batches(self._rng, rank, world):
            if self.rows is not None:
                rows = self.rows[rows]
            rows = np.sort(rows)  # sorted rows slice sparse matrices faster
            yield tuple(torch.from_numpy(np.asarray(a[rows]) if a.ndim == 1
                                         else _utils.dense_rows(a, rows)) for a in self.arrays)


def gene_moments(X):
    """Per-gene mean and scale (1 where a gene is constant) of continuous input, and whether it
    is non-negative; computed without densifying sparse input."""
    mean = np.asarray(X.mean(axis=0), dtype=np.float64).ravel()
    sq = X.multiply(X).mean(axis=0) if sp.issparse(X) else (X.astype(np.float64) ** 2).mean(0)
    scale = np.sqrt(np.maximum(np.asarray(sq, dtype=np.float64).ravel() - mean**2, 0))
    scale = np.where(scale > 1e-8, scale, 1.0)
    values = X.data if sp.issparse(X) else X
    return mean.astype(np.float32), scale.astype(np.float32), bool(values.min() >= 0)


def class_codes(y, n_cells: int):
    """Integer class codes of ``y`` (for class-balanced minibatches), or None without labels."""
    if y is None:
        return None
    return np.unique(_utils.check_labels(y, n_cells).astype(str), return_inverse=True)[1]


def default_epochs(n_obs: int, batch_size: int, steps: int = 3000, low: int = 20,
                   high: int = 200) -> int:
    """Epochs for about ``steps`` optimiser steps over ``n_obs`` cells, between ``low`` and
    ``high`` passes over the data."""
    steps_per_epoch = max(1, int(np.ceil(n_obs / batch_size)))
    return int(np.clip(np.ceil(steps / steps_per_epoch), low, high))
