"""Training loops: minibatches, optimiser, exponential moving average, progress bars.

The loops are written against plain callables so the model layer decides what a batch is; they
draw every random index from the numpy ``rng`` they are handed and every tensor of noise from
torch's global generator, which the caller seeds (inside ``torch.random.fork_rng``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm


class EMA:
    """Exponential moving average of a module's weights (a smoother model to sample with)."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(module).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        for ema_p, p in zip(self.module.parameters(), module.parameters(), strict=True):
            ema_p.lerp_(p.detach(), 1 - self.decay)


def balanced_indices(y: np.ndarray, batch_size: int, rng: np.random.Generator,
                     power: float = 0.0) -> np.ndarray:
    """Indices of a minibatch in which class ``c`` is drawn with probability ~ ``n_c ** power``.

    ``power=0`` makes every class equally likely: rare types are otherwise almost never seen;
    drawing the class first, then a cell of that class, makes a 10-cell type as present as a
    2000-cell one. ``power=1`` is plain uniform sampling of cells.
    """
    order = np.argsort(y, kind="stable")
    classes, starts, counts = np.unique(y[order], return_index=True, return_counts=True)
    if power == 0.0:
        cls = rng.integers(len(classes), size=batch_size)
    else:
        p = counts.astype(np.float64) ** power
        cls = rng.choice(len(classes), size=batch_size, p=p / p.sum())
    return order[starts[cls] + (rng.random(batch_size) * counts[cls]).astype(np.int64)]


def run_epochs(
    step: Callable[[np.ndarray], torch.Tensor],
    params,
    *,
    n_obs: int,
    n_epochs: int,
    batch_size: int,
    lr: float,
    rng: np.random.Generator,
    desc: str,
    verbose: bool,
    draw: Callable[[int], np.ndarray] | None = None,
) -> list[float]:
    """Passes over ``n_obs`` rows; ``step(idx)`` returns the loss of one minibatch.

    Each epoch is a shuffled pass, or, with ``draw(batch_size) -> indices``, as many drawn
    minibatches as a pass would take (for class-balanced sampling).
    """
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, n_epochs))
    history = []
    bar = tqdm(range(n_epochs), desc=desc, disable=not verbose, leave=False)
    for _ in bar:
        perm = rng.permutation(n_obs) if draw is None else None
        total, count = 0.0, 0
        for start in range(0, n_obs, batch_size):
            rows = perm[start:start + batch_size] if draw is None else draw(batch_size)
            idx = np.sort(rows)  # sorted rows slice sparse faster
            loss = step(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        sched.step()
        history.append(total / count)
        bar.set_postfix(loss=f"{history[-1]:.4g}")
    return history


def run_steps(
    step: Callable[[np.ndarray], torch.Tensor],
    module: torch.nn.Module,
    *,
    y: np.ndarray,
    n_steps: int,
    batch_size: int,
    lr: float,
    rng: np.random.Generator,
    ema_decay: float | None,
    desc: str,
    verbose: bool,
) -> tuple[torch.nn.Module, list[float]]:
    """Class-balanced minibatch steps; returns the EMA copy of ``module`` (or ``module``)."""
    opt = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=1e-4)
    warmup = max(1, n_steps // 20)

    def schedule(i):  # linear warm-up, then cosine decay to 10 % of lr
        if i < warmup:
            return (i + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * (i - warmup) / max(1, n_steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    ema = EMA(module, ema_decay) if ema_decay else None
    history, running = [], None
    bar = tqdm(range(n_steps), desc=desc, disable=not verbose, leave=False, mininterval=0.5)
    for i in bar:
        loss = step(balanced_indices(y, batch_size, rng))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if ema is not None:
            ema.update(module)
        value = float(loss.detach())
        running = value if running is None else 0.98 * running + 0.02 * value
        if i % 50 == 0 or i == n_steps - 1:
            history.append(running)
            bar.set_postfix(loss=f"{running:.4g}")
    final = ema.module if ema is not None else module
    return final.eval(), history
