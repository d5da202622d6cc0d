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

#: Trainer arguments scaug sets itself; a user's trainer_kwargs may not change them
RESERVED_TRAINER_KWARGS = frozenset({
    "max_epochs", "max_steps", "callbacks", "enable_progress_bar", "logger",
    "enable_checkpointing", "enable_model_summary", "num_sanity_val_steps",
    "use_distributed_sampler", "limit_train_batches",
})


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
             max_epochs: int | None = None, max_steps: int = -1, desc: str, verbose: bool):
    """Run ``plan`` on the minibatches of ``data`` (an iterable dataset yielding whole batches).

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
    total = max_steps if max_steps > 0 else (max_epochs or 1) * len(data)
    loader = DataLoader(data, batch_size=None, num_workers=0)
    interrupt = _Interrupt()
    in_main_thread = threading.current_thread() is threading.main_thread()
    sigint = signal.getsignal(signal.SIGINT) if in_main_thread else None
    with _quiet_lightning():
        trainer = pl.Trainer(
            **trainer_options(device, trainer_kwargs),
            max_epochs=max_epochs if max_epochs is not None else -1, max_steps=max_steps,
            callbacks=[_Progress(desc, total, verbose), interrupt], enable_progress_bar=False,
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
    return trainer
