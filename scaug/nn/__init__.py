"""Pure torch modules of SCLD. They know nothing of AnnData, labels or devices."""

from .autoencoder_module import AutoencoderModule
from .classifier import LatentClassifier
from .denoiser import Denoiser, TimeEmbedding

__all__ = ["AutoencoderModule", "Denoiser", "LatentClassifier", "TimeEmbedding"]
