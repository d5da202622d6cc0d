"""scaug: rare-cell data augmentation for single-cell RNA-seq classifiers."""

from importlib.metadata import PackageNotFoundError, version

from . import datasets, preprocessing
from .autoencoder import CellAutoencoder
from .model import SCLD
from .oversampler import SCLDOverSampler

try:
    __version__ = version("scaug")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = ["SCLD", "SCLDOverSampler", "CellAutoencoder", "datasets", "preprocessing", "__version__"]
