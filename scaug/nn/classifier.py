"""A cell-type classifier on (noisy) latents, for classifier guidance and for screening."""

from __future__ import annotations

import torch
from torch import nn

from .denoiser import ResidualBlock, TimeEmbedding, unique_conditions


class LatentClassifier(nn.Module):
    """``p(y | z_t, t)``; at ``t = 0`` it classifies clean latents."""

    def __init__(self, n_latent: int, n_classes: int, width: int = 128, depth: int = 2):
        super().__init__()
        self.inp = nn.Linear(n_latent, width)
        self.time = TimeEmbedding(width)
        self.blocks = nn.ModuleList(ResidualBlock(width) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, n_classes))

    def forward(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        c, inverse = unique_conditions(t)
        c = torch.nn.functional.silu(self.time(c[:, 0]))
        h = self.inp(z_t)
        for block in self.blocks:
            h = block(h, c, inverse)
        return self.out(h)
