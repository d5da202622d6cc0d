from __future__ import annotations

from torch import nn


def mlp(sizes: list[int], *, final_activation: bool = False) -> nn.Sequential:
    """Linear -> LayerNorm -> SiLU stacks; LayerNorm keeps training stable on raw-scale inputs."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or final_activation:
            layers += [nn.LayerNorm(b), nn.SiLU()]
    return nn.Sequential(*layers)
