"""The cell autoencoder: expression -> latent z -> a count (NB) or continuous (Gaussian) likelihood."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._layers import mlp

#: counts are normalised to this many per cell before log1p, for the encoder's input
TARGET_SUM = 1e4


def nb_log_likelihood(x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Negative-binomial log-likelihood with mean ``mu`` and inverse dispersion ``theta``."""
    eps = 1e-8
    log_theta_mu = torch.log(theta + mu + eps)
    return (
        theta * (torch.log(theta + eps) - log_theta_mu)
        + x * (torch.log(mu + eps) - log_theta_mu)
        + torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1)
    )


class AutoencoderModule(nn.Module):
    """MLP encoder and decoder with a negative-binomial or Gaussian head.

    Parameters
    ----------
    n_genes : int
    n_latent : int
    hidden : sequence of int
        Widths of the encoder's hidden layers; the decoder mirrors them.
    likelihood : {"nb", "gaussian"}
        ``"nb"``: the decoder gives gene proportions; the mean is library size x proportion and a
        gene-wise inverse dispersion is learned (as in scVI). ``"gaussian"``: the decoder gives the
        mean of standardised expression and a gene-wise log standard deviation is learned.
    dispersion : {"gene", "gene-cell"}
        ``"gene"``: one dispersion (or standard deviation) per gene. ``"gene-cell"``: a per-cell
        correction of it, read from the decoder's last hidden layer (scVI's "gene-cell"), so that
        a type's noise need not be the average type's.
    """

    def __init__(self, n_genes: int, n_latent: int = 16, hidden=(256, 128), likelihood: str = "nb",
                 dispersion: str = "gene"):
        super().__init__()
        if likelihood not in ("nb", "gaussian"):
            raise ValueError(f"likelihood must be 'nb' or 'gaussian'; got {likelihood!r}.")
        if dispersion not in ("gene", "gene-cell"):
            raise ValueError(f"dispersion must be 'gene' or 'gene-cell'; got {dispersion!r}.")
        self.likelihood = likelihood
        self.dispersion = dispersion
        # per-gene centre and scale of continuous input (set from the data; unused for counts)
        self.register_buffer("gene_mean", torch.zeros(n_genes))
        self.register_buffer("gene_scale", torch.ones(n_genes))
        hidden = list(hidden)
        self.encoder = nn.Sequential(mlp([n_genes, *hidden], final_activation=True),
                                     nn.Linear(hidden[-1], n_latent))
        self.decoder = nn.Sequential(mlp([n_latent, *hidden[::-1]], final_activation=True),
                                     nn.Linear(hidden[0], n_genes))
        # gene-wise dispersion (log theta) or log standard deviation
        self.gene_log_scale = nn.Parameter(torch.zeros(n_genes))
        if dispersion == "gene-cell":
            # zero-initialised: training starts from the gene-wise model
            self.scale_head = nn.Linear(hidden[0], n_genes)
            nn.init.zeros_(self.scale_head.weight)
            nn.init.zeros_(self.scale_head.bias)

    def transform_input(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's input: log1p of counts per ``TARGET_SUM``, or standardised values."""
        if self.likelihood == "nb":
            library = x.sum(1, keepdim=True).clamp_min(1.0)
            return torch.log1p(x / library * TARGET_SUM)
        return self.standardise(x)

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.gene_mean) / self.gene_scale

    def encode(self, x_in: torch.Tensor) -> torch.Tensor:
        """``x_in`` is the transformed expression (log1p-normalised counts, or standardised values)."""
        return self.encoder(x_in)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output: gene logits (NB) or standardised means (Gaussian)."""
        return self.decoder(z)

    def _decode_with_scale(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder output and the log dispersion (or log standard deviation) it comes with."""
        if self.dispersion == "gene":
            return self.decoder(z), self.gene_log_scale
        h = self.decoder[0](z)
        return self.decoder[1](h), self.gene_log_scale + self.scale_head(h)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor, library: torch.Tensor | None):
        out, log_scale = self._decode_with_scale(z)
        if self.likelihood == "nb":
            mu = library[:, None] * F.softmax(out, dim=-1)
            return nb_log_likelihood(x, mu, torch.exp(log_scale)).sum(-1)
        return (-0.5 * ((x - out) / torch.exp(log_scale)) ** 2 - log_scale
                - 0.5 * math.log(2 * math.pi)).sum(-1)

    @torch.no_grad()
    def sample_expression(self, z: torch.Tensor, library: torch.Tensor | None,
                          generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw expression from the likelihood given latents (noise comes from ``generator``).

        For NB the draw is Gamma-Poisson. On the CPU numpy makes it, from a seed taken from
        ``generator`` (numpy's Gamma and Poisson draws cost half of torch's on a CPU thread); on
        a GPU torch makes it there, from a GPU generator seeded the same way, so counts never
        travel to the CPU to be drawn (same seed, same device: same cells).
        """
        out, log_scale = self._decode_with_scale(z)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        if self.likelihood == "nb":
            mu = library[:, None] * F.softmax(out, dim=-1)
            theta = torch.exp(log_scale).expand(out.shape)
            if mu.device.type != "cpu":
                gen = torch.Generator(device=mu.device).manual_seed(seed)
                return torch.poisson(torch._standard_gamma(theta, generator=gen) * (mu / theta),
                                     generator=gen)
            rng = np.random.default_rng(seed)
            mu, theta = mu.numpy(), theta.numpy()
            counts = rng.poisson(rng.standard_gamma(theta, dtype=np.float32) * (mu / theta))
            return torch.from_numpy(counts.astype(np.float32))
        rng = np.random.default_rng(seed)
        noise = torch.from_numpy(rng.standard_normal(out.shape, dtype=np.float32)).to(out.device)
        return (out + torch.exp(log_scale) * noise) * self.gene_scale + self.gene_mean
