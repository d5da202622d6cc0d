"""The latent denoiser: a residual MLP conditioned on diffusion time and cell-type label."""

from __future__ import annotations

import math

import torch
from torch import nn


class TimeEmbedding(nn.Module):
    """Sinusoidal embedding of a continuous time in [0, 1], followed by an MLP."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
        args = 1000.0 * t.float()[:, None] * freqs[None]
        emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
        return self.mlp(emb)


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.lin1 = nn.Linear(width, width)
        self.cond = nn.Linear(width, 2 * width)
        self.lin2 = nn.Linear(width, width)
        self.act = nn.SiLU()
        nn.init.zeros_(self.lin2.weight)  # each block starts as the identity
        nn.init.zeros_(self.lin2.bias)

    def forward(self, h: torch.Tensor, c: torch.Tensor, inverse: torch.Tensor | None = None):
        film = self.cond(c)
        if inverse is not None:
            film = film[inverse]
        scale, shift = film.chunk(2, dim=-1)
        y = self.norm(h) * (1 + scale) + shift  # FiLM conditioning on time + label
        return h + self.lin2(self.act(self.lin1(self.act(y))))


class Denoiser(nn.Module):
    """Predicts the diffusion target (v) from a noisy latent, the time and a label.

    Label index ``n_classes`` is the learned null label: the same network is conditional and
    unconditional, which is what classifier-free guidance needs.
    """

    def __init__(self, n_latent: int, n_classes: int, width: int = 256, depth: int = 3):
        super().__init__()
        self.n_classes = n_classes
        self.inp = nn.Linear(n_latent, width)
        self.time = TimeEmbedding(width)
        self.label = nn.Embedding(n_classes + 1, width)
        self.blocks = nn.ModuleList(ResidualBlock(width) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, n_latent))

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c, inverse = unique_conditions(t, y)
        c = torch.nn.functional.silu(self.time(c[:, 0]) + self.label(c[:, 1].long()))
        h = self.inp(z_t)
        for block in self.blocks:
            h = block(h, c, inverse)
        return self.out(h)


def unique_conditions(t: torch.Tensor, y: torch.Tensor | None = None):
    """Distinct (time, label) pairs of a batch and each row's index into them.

    While sampling, every row of a batch shares its time and most share a label: embedding the
    few distinct conditions instead of every row halves the cost of a denoiser call.
    """
    key = torch.stack([t.float(), (y if y is not None else torch.zeros_like(t)).float()], dim=1)
    return torch.unique(key, dim=0, return_inverse=True)
