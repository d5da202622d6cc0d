"""The latent denoiser: a residual MLP conditioned on diffusion time, cell-type label and
further categorical attributes (donor, batch, sample)."""

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
        if self.dim % 2:  # an odd width: sin and cos fill all but one column
            emb = torch.nn.functional.pad(emb, (0, 1))
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
    """Predicts the diffusion target (v) from a noisy latent, the time and its conditions.

    Label index ``n_classes`` is the learned null label: the same network is conditional and
    unconditional, which is what classifier-free guidance needs. Each further attribute ``k``
    (``n_values[k]`` values: a donor, batch or sample) has its own embedding, added to the
    label's, with its own null token at index ``n_values[k]``; the network is then conditional on
    any subset of the type and the attributes (the others at their null token).

    Parameters
    ----------
    n_latent : int
    n_classes : int
        Cell types; the null label is index ``n_classes``.
    width, depth : int
        Width and number of residual blocks.
    n_values : sequence of int, default=()
        Number of values of each further attribute; empty for a type-only denoiser (its
        weights are then exactly those of a denoiser built before attributes existed).

    Examples
    --------
    >>> import torch
    >>> from scaug.nn import Denoiser
    >>> net = Denoiser(n_latent=4, n_classes=3, width=16, depth=1, n_values=(2,))
    >>> z, t = torch.zeros(5, 4), torch.rand(5)
    >>> net(z, t, torch.tensor([0, 1, 2, 3, 0])).shape  # type only: the batch at its null token
    torch.Size([5, 4])
    >>> y = torch.tensor([[0, 0], [1, 1], [3, 2], [2, 0], [0, 2]])  # (type, batch); 3, 2: null
    >>> net(z, t, y).shape
    torch.Size([5, 4])
    """

    def __init__(self, n_latent: int, n_classes: int, width: int = 256, depth: int = 3,
                 n_values=()):
        super().__init__()
        self.n_classes = n_classes
        self.inp = nn.Linear(n_latent, width)
        self.time = TimeEmbedding(width)
        self.label = nn.Embedding(n_classes + 1, width)
        self.blocks = nn.ModuleList(ResidualBlock(width) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, n_latent))
        self.n_values = tuple(int(v) for v in n_values)
        # built last, so that a type-only denoiser draws the same initial weights as before
        self.attributes = nn.ModuleList(nn.Embedding(v + 1, width) for v in self.n_values)

    @property
    def null_codes(self) -> tuple[int, ...]:
        """The null index of the label and of each attribute, in the columns' order."""
        return (self.n_classes, *self.n_values)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``y``: the labels (n,), or the labels and attributes (n, 1 + n_attributes); missing
        attribute columns are at their null token."""
        if y.ndim == 2 and y.shape[1] > 1 + len(self.attributes):
            raise ValueError(f"y has {y.shape[1]} condition columns; this denoiser knows the "
                             f"label and {len(self.attributes)} attribute(s).")
        c, inverse = unique_conditions(t, y)
        codes = c[:, 1:].long()
        emb = self.time(c[:, 0]) + self.label(codes[:, 0])
        for k, embedding in enumerate(self.attributes):
            column = codes[:, 1 + k] if codes.shape[1] > 1 + k else torch.full_like(
                codes[:, 0], self.n_values[k])
            emb = emb + embedding(column)
        c = torch.nn.functional.silu(emb)
        h = self.inp(z_t)
        for block in self.blocks:
            h = block(h, c, inverse)
        return self.out(h)


def unique_conditions(t: torch.Tensor, y: torch.Tensor | None = None):
    """Distinct (time, label[, attributes]) rows of a batch and each row's index into them.

    While sampling, every row of a batch shares its time and most share their conditions:
    embedding the few distinct conditions instead of every row halves the cost of a denoiser call.
    The rows come out in lexicographic order, as ``torch.unique(key, dim=0)`` gives them, but
    without its row-wise sort, which cost as much as the denoiser's linear layers: a batch of one
    condition (the usual case while sampling) is recognised in one pass, and otherwise each column
    is ranked on its own and the ranks are combined into one integer key per row.
    """
    y = torch.zeros_like(t) if y is None else y
    y = y.float()[:, None] if y.ndim == 1 else y.float()
    key = torch.cat([t.float()[:, None], y], dim=1)
    if key.shape[0] == 0 or bool((key == key[:1]).all()):
        return key[:1], torch.zeros(key.shape[0], dtype=torch.long, device=key.device)
    inverse = torch.zeros(key.shape[0], dtype=torch.long, device=key.device)
    for column in key.T:
        # rank by the columns so far, then this one: the combined key stays below n_rows ** 2
        _, rank = torch.unique(column, return_inverse=True)
        _, inverse = torch.unique(inverse * (int(rank.max()) + 1) + rank, return_inverse=True)
    unique = key.new_empty((int(inverse.max()) + 1, key.shape[1]))
    unique[inverse] = key  # rows with the same index are equal, so any one of them will do
    return unique, inverse
