"""scaug: rare-cell data augmentation for single-cell RNA-seq classifiers.

The package imports its submodules lazily (PEP 562): ``import scaug`` is instant, and torch,
scanpy and the model load on first use of ``scaug.SCLD``, ``scaug.tl`` and the like, so that
``scaug --help`` answers at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__

#: public name -> (module, attribute or None for the module itself)
_LAZY = {
    "SCLD": ("model", "SCLD"),
    "CellAutoencoder": ("autoencoder", "CellAutoencoder"),
    "OnDiskCells": ("train.disk", "OnDiskCells"),
    "SCLDOverSampler": ("oversampler", "SCLDOverSampler"),
    "LatentOverSampler": ("baselines", "LatentOverSampler"),
    "datasets": ("datasets", None),
    "preprocessing": ("preprocessing", None),
    "metrics": ("metrics", None),
    "evaluation": ("evaluation", None),
    "load": ("io", "load"),
    "tl": ("tl", None),
    "pl": ("pl", None),
}

__all__ = ["SCLD", "SCLDOverSampler", "LatentOverSampler", "CellAutoencoder", "OnDiskCells",
           "load", "datasets", "preprocessing", "metrics", "evaluation", "tl", "pl", "__version__"]

if TYPE_CHECKING:  # static tools see the eager imports
    from . import datasets, evaluation, metrics, pl, preprocessing, tl
    from .autoencoder import CellAutoencoder
    from .baselines import LatentOverSampler
    from .io import load
    from .model import SCLD
    from .oversampler import SCLDOverSampler
    from .train.disk import OnDiskCells


def __getattr__(name: str):
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'scaug' has no attribute {name!r}") from None
    value = importlib.import_module(f".{module}", __name__)
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value  # cached: later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
