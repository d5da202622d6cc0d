"""The Trainer set-up: devices, distributed strategy, nodes, progress; nothing about the model.

A user scales training by passing Lightning Trainer arguments (``trainer_kwargs`` of
:class:`scaug.SCLD` and :class:`scaug.CellAutoencoder`), for example
``{"devices": 4, "strategy": "ddp", "num_nodes": 2}``; scaug has no process management of its
own. ``device`` (``"cpu"``, ``"cuda:1"``) picks the accelerator of a one-device run.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import warnings

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .plans import diverged

#: Trainer arguments scaug sets itself; a user's trainer_kwargs may not change them
RESERVED_TRAINER_KWARGS = frozenset({
    "max_epochs", "max_steps", "callbacks", "enable_progress_bar", "logger",
    "enable_checkpointing", "enable_model_summary", "num_sanity_val_steps",
    "use_distributed_sampler", "limit_train_batches",
})


def check_trainer_kwargs(trainer_kwargs) -> None:
    """Refuse Trainer arguments that scaug sets itself, or that Lightning's Trainer does not take,
    before any training (Lightning would only fail once the first stage starts)."""
    import inspect

    given = set(trainer_kwargs or {})
    reserved = sorted(given & RESERVED_TRAINER_KWARGS)
    if reserved:
        raise ValueError(f"trainer_kwargs may not set {reserved}: scaug sets them itself (use "
                         "max_epochs, diffusion_steps and verbose).")
    known = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}
    unknown = sorted(given - known)
    if unknown:
        raise ValueError(f"trainer_kwargs has {unknown}, which are not arguments of Lightning's "
                         f"Trainer (lightning {pl.__version__}); see "
                         "lightning.pytorch.Trainer for the valid ones.")


class _Interrupt(pl.Callback):
    """Remembers a KeyboardInterrupt, which Lightning turns into ``SystemExit(1)``: a library
    must hand the user's Ctrl-C back as a KeyboardInterrupt, not end their Python session."""

    def __init__(self):
        self.exception = None

    def on_exception(self, trainer, plan, exception):
        self.exception = exception


class _Progress(pl.Callback):
    """One tqdm bar per stage, counting optimiser steps (Lightning's bar counts per epoch)."""

    def __init__(self, desc: str, total: int, verbose: bool):
        self.desc, self.total, self.verbose = desc, total, verbose
        self.bar = None

    def on_train_start(self, trainer, plan):
        self.bar = tqdm(total=self.total, desc=self.desc, leave=False, mininterval=0.5,
                        disable=not (self.verbose and trainer.is_global_zero))

    def on_train_batch_end(self, trainer, plan, outputs, batch, batch_idx):
        self.bar.update(1)
        if plan.history and batch_idx % 50 == 0:
            self.bar.set_postfix(loss=f"{plan.history[-1]:.4g}", refresh=False)

    def on_train_end(self, trainer, plan):
        self.bar.close()


class ConvergenceStop(pl.Callback):
    """Stops a stage once its validation loss has stopped improving (early stopping).

    Every ``check_every`` optimiser steps (at the end of every epoch when ``None``) the plan's
    ``validation_loss()`` is computed; when it has not fallen below ``(1 - tol)`` times the best
    so far for ``patience`` checks in a row, training stops. When training ends, the plan gets
    back the weights of its lowest validation loss (``plan.checkpoint()`` /
    ``plan.restore(state)``), as scikit-learn's early-stopped MLPs do: past its best, a network
    is fitting its training cells at the expense of others. The loss is computed on fixed cells
    with fixed noise draws, the same on every process of a distributed run (the weights are the
    same there), so every process stops at the same step without communicating. ``history``
    holds ``(step, loss)`` of every check, ``stopped_at`` the step training stopped at (None
    when it ran its full budget), ``best_step`` the step whose weights were kept.

    Examples
    --------
    >>> from scaug.train import ConvergenceStop
    >>> stop = ConvergenceStop(patience=2, tol=0.01, check_every=100)
    >>> [stop.update(step, loss) for step, loss in [(100, 1.0), (200, 0.995), (300, 0.999)]]
    [False, False, True]
    >>> stop.best_step
    200
    """

    def __init__(self, *, patience: int, tol: float, check_every: int | None = None):
        self.patience, self.tol, self.check_every = int(patience), float(tol), check_every
        self.best = float("inf")  # the last loss that counted as an improvement
        self.lowest = float("inf")
        self.best_step = None
        self.stale = 0
        self.history: list[tuple[int, float]] = []
        self.stopped_at = None
        self._kept = None  # the weights of the lowest loss

    def update(self, step: int, loss: float) -> bool:
        """Record the loss of a check; True when training should stop."""
        self.history.append((int(step), float(loss)))
        if loss < self.lowest:
            self.lowest, self.best_step = float(loss), int(step)
        if loss < self.best * (1 - self.tol):
            self.best, self.stale = float(loss), 0
        else:
            self.stale += 1
        if self.stale >= self.patience:
            self.stopped_at = int(step)
            return True
        return False

    def _check(self, trainer, plan) -> None:
        step = trainer.global_step
        if self.history and self.history[-1][0] == step:
            return
        stop = self.update(step, plan.validation_loss())
        if self.best_step == step:
            self._kept = plan.checkpoint()
        if stop:
            trainer.should_stop = True

    def on_train_batch_end(self, trainer, plan, outputs, batch, batch_idx):
        if self.check_every and trainer.global_step % self.check_every == 0:
            self._check(trainer, plan)

    def on_train_epoch_end(self, trainer, plan):
        if not self.check_every:
            self._check(trainer, plan)

    def on_train_end(self, trainer, plan):
        step = trainer.global_step
        if self.history and self.history[-1][0] != step:  # the final weights are a candidate too
            loss = float(plan.validation_loss())
            self.history.append((step, loss))
            if loss < self.lowest:
                self.lowest, self.best_step, self._kept = loss, step, None
        if self._kept is not None and self.best_step != step:
            plan.restore(self._kept)
        self._kept = None


@contextlib.contextmanager
def _quiet_lightning():
    """Lightning announces devices and tips at INFO level and warns that a dataloader without
    workers may be slow (ours yields whole in-memory batches, for which workers only cost)."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*`IterableDataset` has `__len__` defined.*")
            warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
            # raised inside Lightning 2.6 by torch >= 2.10's pytree API; nothing a user can act on
            warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def trainer_options(device: torch.device, trainer_kwargs) -> dict:
    """Lightning's accelerator and devices for ``device``, updated by the user's arguments."""
    options = {"accelerator": "gpu" if device.type == "cuda" else "cpu",
               "devices": [device.index or 0] if device.type == "cuda" else 1}
    options.update(trainer_kwargs or {})
    return options


def fit_plan(plan: pl.LightningModule, data, *, device: torch.device, trainer_kwargs=None,
             max_epochs: int | None = None, max_steps: int = -1, desc: str, verbose: bool,
             stopping: ConvergenceStop | None = None):
    """Run ``plan`` on the minibatches of ``data`` (an iterable dataset yielding whole batches).

    ``stopping`` ends training early once the plan's validation loss has converged.

    Returns the Trainer, whose ``is_global_zero`` tells a distributed run's main process.

    Examples
    --------
    See :class:`scaug.train.AutoencoderPlan`, :class:`~scaug.train.DenoiserPlan` and
    :class:`~scaug.train.ClassifierPlan`; a distributed run only adds Trainer arguments:

    >>> import torch
    >>> from scaug.train import trainer_options
    >>> trainer_options(torch.device("cpu"), {"devices": 2, "strategy": "ddp"})
    {'accelerator': 'cpu', 'devices': 2, 'strategy': 'ddp'}
    """
    # Lightning asserts plain ints; a numpy integer from a user's setting is one too
    max_steps = int(max_steps)
    max_epochs = None if max_epochs is None else int(max_epochs)
    total = max_steps if max_steps > 0 else (max_epochs or 1) * len(data)
    loader = DataLoader(data, batch_size=None, num_workers=0)
    interrupt = _Interrupt()
    in_main_thread = threading.current_thread() is threading.main_thread()
    sigint = signal.getsignal(signal.SIGINT) if in_main_thread else None
    with _quiet_lightning():
        trainer = pl.Trainer(
            **trainer_options(device, trainer_kwargs),
            max_epochs=max_epochs if max_epochs is not None else -1, max_steps=max_steps,
            callbacks=[_Progress(desc, total, verbose), interrupt,
                       *([stopping] if stopping is not None else [])], enable_progress_bar=False,
            logger=False, enable_checkpointing=False, enable_model_summary=False,
            num_sanity_val_steps=0, use_distributed_sampler=False,
        )
        try:
            trainer.fit(plan, train_dataloaders=loader)
        except SystemExit:
            if not isinstance(interrupt.exception, KeyboardInterrupt):
                raise
            if in_main_thread:  # Lightning ignores Ctrl-C while it shuts down; undo that
                signal.signal(signal.SIGINT, sigint)
            raise KeyboardInterrupt from None
    _check_weights(plan)
    return trainer


def _check_weights(plan) -> None:
    """Refuse weights that stopped being finite (the last step can break them after a finite loss);
    the plan's averaged copy too, which is what sampling uses."""
    modules = [plan] + [m for m in [getattr(plan, "averaged", None)] if m is not None]
    for module in modules:
        for name, p in module.named_parameters():
            if not bool(torch.isfinite(p).all()):
                raise diverged(getattr(plan, "stage", "training"),
                               f"its weights ({name}) are not finite after training",
                               getattr(plan, "learning_rate", float("nan")))
