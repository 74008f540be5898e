"""Fine-tuning machinery of every method that trains: one Lightning module, its streams
and schedules, and example counting.

:class:`FinetuneModule` runs manual optimisation over a stream of per-model minibatches:
a subclass defines :meth:`~FinetuneModule.loss` (per-model losses [K] of one batch) and
may hook :meth:`~FinetuneModule.before_step` (after the gradient exists),
:meth:`~FinetuneModule.after_step` and :meth:`~FinetuneModule.lr_factor`. The loss that is
differentiated is the *sum* of the per-model losses, so each model's gradient is its own
(see :mod:`dmm.ensemble`).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dmm.ensemble import Ensemble
from dmm.recipe import make_optimizer
from dmm.tasks import Task
from dmm.training import BatchStream, EnsembleModule, ZipStream, make_trainer


def salt(name: str) -> int:
    """A stable stream salt per use (method and stream name), apart from training's 0."""
    return zlib.crc32(name.encode()) | 1


class FinetuneModule(EnsembleModule):
    """An ensemble fine-tuned on a task's training data with a constant-lr optimiser
    (``lr_factor`` may scale it per step)."""

    def __init__(self, ensemble: Ensemble, task: Task, optimizer: str = "sgd", lr: float = 1e-3,
                 momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(ensemble, task.data.x_train, task.data.y_train)
        self.opt_args = dict(name=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.automatic_optimization = False
        self.step_count = 0

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return make_optimizer(self.ensemble.parameters(), **self.opt_args)

    def loss(self, batch: dict) -> torch.Tensor:
        """Per-model losses [K] of one batch."""
        raise NotImplementedError

    def lr_factor(self, step: int) -> float:
        return 1.0

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt = self.optimizers()
        for group in opt.param_groups:
            group["lr"] = self.opt_args["lr"] * self.lr_factor(self.step_count)
        opt.zero_grad()
        self.manual_backward(self.loss(batch).sum())
        self.before_step()
        opt.step()
        self.after_step()
        self.step_count += 1


class Schedule(Dataset):
    """A fixed sequence of steps from named streams, run as one Lightning epoch.

    ``steps`` holds ``(name, stream, t, epoch)``: item i is ``{name: stream[t]}``;
    ``epoch_of[i]`` is the unlearning epoch step i belongs to.
    """

    epochs = 1

    def __init__(self, steps: Sequence[tuple[str, BatchStream, int, int]]):
        if not steps:
            raise ValueError("an empty schedule")
        self.steps = list(steps)
        self.steps_per_epoch = len(self.steps)
        self.epoch_of = [e for *_, e in self.steps]

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, i: int) -> dict[str, dict[str, torch.Tensor]]:
        name, s, t, _ = self.steps[i]
        return {name: s[t]}

    def loader(self) -> DataLoader:
        return DataLoader(self, batch_size=None, shuffle=False, num_workers=0)


def stream(mask: np.ndarray, keys: Sequence[int], epochs: int, batch_size: int,
           salt: int) -> BatchStream:
    """A minibatch stream over each model's examples in ``mask`` [K, n_train] (bool or
    counts, or [epochs, K, n_train] counts). ``salt`` separates this stream's randomness
    from training's and from other streams'."""
    return BatchStream(np.asarray(mask).astype(np.int64), list(keys), epochs, batch_size,
                       salt=salt)


def epoch_steps(s: BatchStream, epoch: int) -> range:
    """Item numbers of one epoch of a stream."""
    return range(epoch * s.steps_per_epoch, (epoch + 1) * s.steps_per_epoch)


def cycling(mask: np.ndarray, keys: Sequence[int], steps: int, batch_size: int, name: str
            ) -> BatchStream:
    """A stream with enough epochs to be cycled for ``steps`` steps (each cycle reshuffled)."""
    size = int(np.asarray(mask).sum(1).max())
    epochs = max(1, math.ceil(steps / math.ceil(size / batch_size)))
    return stream(mask, keys, epochs, batch_size, salt(name))


def fit(module: FinetuneModule, data: BatchStream | ZipStream | Schedule,
        device: str = "auto") -> None:
    """Run ``module`` over ``data`` for the stream's epochs with a quiet Lightning trainer."""
    make_trainer(device, max_epochs=data.epochs).fit(module, data.loader())


def examples(data: Dataset) -> float:
    """Example gradients per model that a run over ``data`` computes: the real
    (non-padding) slots of every step, whether a step is one batch or named batches."""
    total, k = 0.0, 1
    for i in range(len(data)):
        item = data[i]
        for part in [item] if "weight" in item else item.values():
            total += float(part["weight"].sum())
            k = part["weight"].shape[0]
    return total / k
