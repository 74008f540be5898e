"""Shared machinery of fine-tuning-style unlearning: a Lightning module base and a runner."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from dmm.ensemble import Ensemble
from dmm.recipe import make_optimizer
from dmm.tasks import Task
from dmm.training import BatchStream, EnsembleModule, ZipStream, make_trainer, weighted_mean


class FinetuneModule(EnsembleModule):
    """An ensemble fine-tuned on a task's training data with a constant-lr optimiser.

    Subclasses implement ``training_step``; the loss they return must be the *sum* of the
    per-model losses, so that each model's gradient is its own (see :mod:`dmm.ensemble`).
    """

    def __init__(self, ensemble: Ensemble, task: Task, optimizer: str = "sgd", lr: float = 1e-3,
                 momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(ensemble, task.data.x_train, task.data.y_train)
        self.opt_args = dict(name=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return make_optimizer(self.ensemble.parameters(), **self.opt_args)

    def ce(self, batch: dict[str, torch.Tensor], labels: torch.Tensor | None = None
           ) -> torch.Tensor:
        """Per-model mean cross-entropy on a stream batch: [K]. ``labels`` [K, B] override
        the true labels (e.g. random labels)."""
        logits = self.logits(batch["idx"], batch.get("aug"))
        y = self.y[batch["idx"]] if labels is None else labels
        ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
        return weighted_mean(ce.view_as(batch["weight"]), batch["weight"])


def stream(mask: np.ndarray, keys: list[int] | tuple[int, ...], epochs: int, batch_size: int,
           salt: int) -> BatchStream:
    """A minibatch stream over each model's examples in ``mask`` [K, n_train] (bool or counts).

    ``salt`` separates this stream's randomness from training's and from other streams'.
    """
    return BatchStream(np.asarray(mask).astype(np.int64), keys, epochs, batch_size, salt=salt)


def fit(module: FinetuneModule, data: BatchStream | ZipStream, device: str = "auto") -> None:
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
