"""Calibration of a trained autoencoder: gene dispersions matched to how often genes are detected.

Used after :meth:`scaug.CellAutoencoder.fit` and :meth:`~scaug.CellAutoencoder.adapt` with
``match_detection=True``.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import _utils
from .disk import OnDiskCells

#: at most this many values of counts held at once to match detection (128 MiB of float32)
DETECTION_VALUES = 2**25


@torch.no_grad()
def match_detection(module, X, seed: int, max_cells: int = 10_000) -> None:
    """Shift ``module``'s gene dispersions in place so that it detects each gene in as many of
    (up to ``max_cells`` of) the cells ``X`` as they do (``match_detection``)."""
    n = min(max_cells, max(1, DETECTION_VALUES // X.shape[1]))
    if isinstance(X, OnDiskCells):
        cells = _utils.dense_rows(X.sample(seed=seed), slice(None))[:n]
    else:
        rows = np.sort(np.random.default_rng(seed).choice(X.shape[0], min(n, X.shape[0]),
                                                          replace=False))
        cells = _utils.dense_rows(X, rows)
    x = torch.as_tensor(cells, device=module.gene_log_scale.device)
    module.gene_log_scale.add_(module.detection_offsets(x))
