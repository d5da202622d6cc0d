"""Training plans: one LightningModule per stage, holding the loss and the optimiser, nothing else.

The networks are pure ``nn.Module``\\ s from :mod:`scaug.nn` passed in; the diffusion process
(:class:`scaug.diffusion.GaussianDiffusion`) holds no parameters and is passed in too. Where the
batches come from is the data's business (:mod:`scaug.train.data`), where the plan runs (devices,
DDP, nodes) the Trainer's (:mod:`scaug.train.trainer`).
"""

from __future__ import annotations

import copy
import math

import lightning.pytorch as pl
import numpy as np
import torch

from .. import _utils
from ..exceptions import TrainingDivergedError


def diverged(stage: str, what: str, learning_rate: float) -> TrainingDivergedError:
    """The error for a stage whose loss or weights stopped being finite."""
    return TrainingDivergedError(
        f"The {stage} stage diverged: {what}. Its learning rate ({learning_rate:g}) is likely too "
        "large for these data; lower `learning_rate` (the default is 1e-3) and fit again. The "
        "model keeps the state it had before this fit.")


class _SeededPlan(pl.LightningModule):
    """Seeds torch's generator when training starts: step noise is repeatable, and differs
    between the processes of a distributed run."""

    #: the stage's name in messages (progress bars, errors)
    stage = "training"

    def __init__(self, seed: int):
        super().__init__()
        self.seed = int(seed)
        self.history: list[float] = []

    def check_loss(self, value: float) -> None:
        """Stop at the first non-finite loss: every later step would only spread the NaN."""
        if not math.isfinite(value):
            raise diverged(self.stage, f"its loss is {value} at step {self.global_step}",
                           self.learning_rate)

    def on_train_start(self) -> None:
        torch.manual_seed(self.seed + self.global_rank)


class AutoencoderPlan(_SeededPlan):
    """Trains :class:`scaug.nn.AutoencoderModule`: likelihood of the cells under noisy latents.

    The loss per cell is the negative log-likelihood of its expression given its latent plus
    ``latent_noise`` Gaussian noise, and a standard-normal prior penalty on the latent (a VAE
    with a fixed posterior spread), divided by the number of genes. AdamW with a cosine decay
    over the epochs. ``history`` holds the mean loss of each epoch.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from scaug.nn import AutoencoderModule
    >>> from scaug.train import AutoencoderPlan, MinibatchData, fit_plan
    >>> X = np.random.default_rng(0).poisson(2.0, size=(64, 5)).astype(np.float32)
    >>> plan = AutoencoderPlan(AutoencoderModule(5, 2, (8,)), latent_noise=0.1,
    ...                        learning_rate=1e-3, n_epochs=2, seed=0)
    >>> _ = fit_plan(plan, MinibatchData([X], batch_size=32, seed=0), device=torch.device("cpu"),
    ...              max_epochs=2, desc="autoencoder", verbose=False)
    >>> len(plan.history)  # one mean loss per epoch
    2
    """

    stage = "autoencoder"

    def __init__(self, module, *, latent_noise: float, learning_rate: float, n_epochs: int,
                 seed: int, validation=None):
        super().__init__(seed)
        self.module = module
        self.latent_noise = float(latent_noise)
        self.learning_rate = float(learning_rate)
        self.n_epochs = int(n_epochs)
        self.validation = validation  # held-out cells (array or CSR) for validation_loss
        self._total = self._count = 0.0

    def loss(self, x: torch.Tensor, latent_noise: float | None = None) -> torch.Tensor:
        m = self.module
        z = m.encode(m.transform_input(x))
        noise = self.latent_noise if latent_noise is None else latent_noise
        z_noisy = z + noise * torch.randn_like(z) if noise else z
        nll = -m.cells_log_likelihood(x, z_noisy)
        prior = 0.5 * (z**2).sum(-1)
        return (nll + prior).mean() / x.shape[1]

    def training_step(self, batch, batch_idx):
        loss = self.loss(*batch)  # AdaptPlan's batches also hold the latents to learn
        value = float(loss.detach())
        self.check_loss(value)
        self._total += value * len(batch[0])
        self._count += len(batch[0])
        return loss

    def on_train_epoch_end(self) -> None:
        self.history.append(self._total / max(self._count, 1))
        self._total = self._count = 0.0

    def checkpoint(self) -> dict:
        """A copy of the weights (for early stopping to return to its best)."""
        return copy.deepcopy(self.module.state_dict())

    def restore(self, state: dict) -> None:
        self.module.load_state_dict(state)

    @torch.no_grad()
    def validation_loss(self, rows_per_batch: int = 1024) -> float:
        """The loss of the held-out cells without latent noise (deterministic), per gene."""
        was_training = self.module.training
        self.module.eval()
        total, n = 0.0, self.validation.shape[0]
        for start in range(0, n, rows_per_batch):
            rows = np.arange(start, min(start + rows_per_batch, n))
            x = torch.from_numpy(_utils.dense_rows(self.validation, rows)).to(self.device)
            total += float(self.loss(x, latent_noise=0.0)) * len(rows)
        self.module.train(was_training)
        return total / n

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.module.parameters(), lr=self.learning_rate, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.n_epochs))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


class AdaptPlan(AutoencoderPlan):
    """Fits an autoencoder transplanted to other genes to a pretrained autoencoder's latent space.

    Batches are ``(x, z)``: cells on the new genes and their latents under the pretrained
    autoencoder (:meth:`scaug.nn.AutoencoderModule.encode_observed`). The encoder learns to give
    ``z`` from ``x`` (squared error), the decoder to give ``x`` from ``z`` (the likelihood, under
    the same latent noise as pretraining). ``z`` is given, not learned, so the latent space stays
    the pretrained one whichever layers train: fine-tuning on a few labelled cells cannot pull
    it toward them. Optimiser, schedule and ``history`` as in :class:`AutoencoderPlan`.
    """

    stage = "gene adaptation"

    def loss(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        m = self.module
        distil = ((m.encode(m.transform_input(x)) - z) ** 2).sum(-1)
        z_noisy = z + self.latent_noise * torch.randn_like(z) if self.latent_noise else z
        nll = -m.cells_log_likelihood(x, z_noisy) / x.shape[1]
        return (distil + nll).mean()


class _StepPlan(_SeededPlan):
    """A fixed number of optimiser steps with warm-up and cosine decay, and an EMA of the weights.

    ``averaged`` is the exponential moving average of the network (what sampling uses);
    ``history`` holds a running mean of the loss every 50 steps.
    """

    def __init__(self, network, *, learning_rate: float, n_steps: int, ema_decay: float, seed: int):
        super().__init__(seed)
        self.network = network
        self.learning_rate = float(learning_rate)
        self.n_steps = int(n_steps)
        self.ema_decay = float(ema_decay)
        self.averaged = None
        self._running = None

    def on_fit_start(self) -> None:
        # a plain attribute, not a submodule: DDP must not broadcast or reduce it
        object.__setattr__(self, "averaged", copy.deepcopy(self.network).eval().requires_grad_(False))

    def step_loss(self, batch) -> torch.Tensor:
        raise NotImplementedError

    def training_step(self, batch, batch_idx):
        loss = self.step_loss(batch)
        value = float(loss.detach())
        self.check_loss(value)
        self._running = value if self._running is None else 0.98 * self._running + 0.02 * value
        if batch_idx % 50 == 0 or batch_idx == self.n_steps - 1:
            self.history.append(self._running)
        return loss

    @torch.no_grad()
    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        for avg, p in zip(self.averaged.parameters(), self.network.parameters(), strict=True):
            avg.lerp_(p.detach(), 1 - self.ema_decay)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.network.parameters(), lr=self.learning_rate, weight_decay=1e-4)
        n, warmup = self.n_steps, max(1, self.n_steps // 20)

        def schedule(i):  # linear warm-up, then cosine decay to 10 % of the learning rate
            if i < warmup:
                return (i + 1) / warmup
            return 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * (i - warmup) / max(1, n - warmup)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class DenoiserPlan(_StepPlan):
    """Trains :class:`scaug.nn.Denoiser` with the diffusion loss (pre-guidance).

    Batches are ``(z0, spread, label)``: the denoiser learns ``z0 + spread * noise`` (the smoothed
    bootstrap of :func:`scaug.sampling.smoothed_bootstrap`; ``spread`` 0 learns the latents as
    they are). A fraction ``label_dropout`` of the labels is replaced by the null label, so one
    network is conditional and unconditional (classifier-free guidance); without labels
    (``conditional=False``) every cell carries the null label.

    With further attributes (donor, batch ...), ``label`` is (n, 1 + K): the type, then each
    attribute's code, ``attribute_nulls`` their null codes; the type and each attribute are
    replaced by their null code independently, each with probability ``label_dropout``.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from scaug.diffusion import GaussianDiffusion
    >>> from scaug.nn import Denoiser
    >>> from scaug.train import BalancedDraws, DenoiserPlan, MinibatchData, fit_plan
    >>> rng = np.random.default_rng(0)
    >>> z, labels = rng.normal(size=(64, 2)).astype(np.float32), np.repeat([0, 1], 32)
    >>> plan = DenoiserPlan(Denoiser(2, 2, width=8, depth=1), GaussianDiffusion(), null_label=2,
    ...                     label_dropout=0.15, conditional=True, learning_rate=1e-3, n_steps=5,
    ...                     seed=0)
    >>> data = MinibatchData([z, np.zeros_like(z), labels], batch_size=16, seed=0, n_batches=5,
    ...                      draw=BalancedDraws(labels))
    >>> _ = fit_plan(plan, data, device=torch.device("cpu"), max_steps=5, desc="diffusion",
    ...              verbose=False)
    >>> type(plan.averaged).__name__  # the EMA copy that sampling uses
    'Denoiser'
    """

    stage = "diffusion"

    def __init__(self, denoiser, diffusion, *, null_label: int, label_dropout: float,
                 conditional: bool, learning_rate: float, n_steps: int, seed: int,
                 ema_decay: float = 0.995, attribute_nulls=(), validation=None,
                 validation_draws: int = 8):
        super().__init__(denoiser, learning_rate=learning_rate, n_steps=n_steps,
                         ema_decay=ema_decay, seed=seed)
        self.diffusion = diffusion
        self.null_label = int(null_label)
        self.attribute_nulls = [int(v) for v in attribute_nulls]
        self.label_dropout = float(label_dropout)
        self.conditional = bool(conditional)
        self._validation = None
        if validation is not None:
            # held-out (z0, labels) pairs, each with fixed times and noise: checkpoints are
            # compared on the same draws, so a check sees the network, not the sampling noise
            z0, labels = (torch.as_tensor(np.asarray(a)) for a in validation)
            gen = torch.Generator().manual_seed(int(seed))
            z0 = z0.repeat(validation_draws, 1)
            labels = labels.long().repeat(validation_draws, *([1] * (labels.ndim - 1)))
            if not self.conditional:  # the type column carries the null label
                labels = labels.clone()
                if labels.ndim == 1:
                    labels[:] = self.null_label
                else:
                    labels[:, 0] = self.null_label
            t = torch.randint(1, diffusion.n_steps + 1, (len(z0),), generator=gen)
            self._validation = (z0, labels, t, torch.randn(z0.shape, generator=gen))

    def step_loss(self, batch):
        z0, spread, labels = batch
        if labels.ndim == 2:
            labels = self._drop_conditions(labels.long())
        else:
            null = torch.full_like(labels, self.null_label)
            if not self.conditional:
                labels = null
            else:  # unlabelled cells already carry the null label
                labels = torch.where(
                    torch.rand(len(labels), device=labels.device) < self.label_dropout, null,
                    labels)
        z0 = z0 + spread * torch.randn_like(z0)
        return self.diffusion.training_loss(self.network, z0, labels)

    def checkpoint(self) -> dict:
        """A copy of the averaged weights, which sampling uses and the validation loss judges."""
        return copy.deepcopy(self.averaged.state_dict())

    def restore(self, state: dict) -> None:
        self.averaged.load_state_dict(state)

    @torch.no_grad()
    def validation_loss(self) -> float:
        """Diffusion loss of the averaged network (what sampling uses) on the held-out latents,
        with their labels (no dropout)."""
        z0, labels, t, noise = (v.to(self.device) for v in self._validation)
        return float(self.diffusion.training_loss(self.averaged, z0, labels, t=t, noise=noise))


    def _drop_conditions(self, labels):
        # the label and each attribute are dropped independently (scLDM / CFGen style), so one
        # network learns p(z), p(z | type), p(z | attribute) and every joint conditional
        nulls = torch.as_tensor(self.attribute_nulls, device=labels.device)
        nulls = torch.cat([torch.tensor([self.null_label], device=labels.device), nulls])
        drop = torch.rand(labels.shape, device=labels.device) < self.label_dropout
        if not self.conditional:
            drop[:, 0] = True
        return torch.where(drop, nulls.expand_as(labels), labels)


class ClassifierPlan(_StepPlan):
    """Trains :class:`scaug.nn.LatentClassifier` on noisy (and clean) latents, for post-guidance.

    Batches are ``(z0, label)`` of labelled cells only.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from scaug.diffusion import GaussianDiffusion
    >>> from scaug.nn import LatentClassifier
    >>> from scaug.train import ClassifierPlan, MinibatchData, fit_plan
    >>> z = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
    >>> labels = np.repeat([0, 1], 32)
    >>> plan = ClassifierPlan(LatentClassifier(2, 2, width=8), GaussianDiffusion(),
    ...                       learning_rate=1e-3, n_steps=4, seed=0)
    >>> _ = fit_plan(plan, MinibatchData([z, labels], batch_size=16, seed=0, n_batches=4),
    ...              device=torch.device("cpu"), max_steps=4, desc="classifier", verbose=False)
    >>> plan.averaged(torch.zeros(3, 2), torch.zeros(3)).shape  # logits of the 2 types
    torch.Size([3, 2])
    """

    stage = "latent classifier"

    def __init__(self, classifier, diffusion, *, learning_rate: float, n_steps: int, seed: int,
                 ema_decay: float = 0.99):
        super().__init__(classifier, learning_rate=learning_rate, n_steps=n_steps,
                         ema_decay=ema_decay, seed=seed)
        self.diffusion = diffusion

    def step_loss(self, batch):
        z0, labels = batch
        return self.diffusion.classifier_loss(self.network, z0, labels)
