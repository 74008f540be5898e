"""Shared machinery of the baselines: per-model views of an ensemble's parameters, a
manual-optimisation fine-tuning module, step schedules and example counting.

Every parameter tensor of an :class:`~dmm.ensemble.Ensemble` belongs to one model
(looped mode) or stacks all K models on dim 0 (vectorised mode). :func:`rows` and
:func:`unrows` convert a list of tensors shaped like ``ensemble.parameters()`` to and
from one row per model, ``[K, P]``, so that per-model reductions (top-k, sums) are one
call in both modes; :func:`per_model` broadcasts a per-model value ``[K]`` back.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dmm.ensemble import Ensemble
from dmm.tasks import Task
from dmm.training import BatchStream, accelerator, weighted_mean
from dmm.unlearning.base import Problem
from dmm.unlearning.finetune import FinetuneModule, stream


def salt(name: str) -> int:
    """A stable stream salt per use (method and stream name), apart from training's 0."""
    return zlib.crc32(name.encode()) | 1


# ---------------------------------------------------------------- per-model views
def params(ensemble: Ensemble) -> list[nn.Parameter]:
    return list(ensemble.parameters())


def _owner_chunks(ensemble: Ensemble, n: int) -> int:
    if n % ensemble.k:
        raise ValueError("parameter list does not split evenly over the ensemble's models")
    return n // ensemble.k


def rows(ensemble: Ensemble, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Tensors shaped like ``ensemble.parameters()`` -> one flat row per model, [K, P]."""
    if ensemble.vectorised:
        return torch.cat([t.reshape(ensemble.k, -1) for t in tensors], dim=1)
    m = _owner_chunks(ensemble, len(tensors))
    return torch.stack([torch.cat([t.reshape(-1) for t in tensors[k * m:(k + 1) * m]])
                        for k in range(ensemble.k)])


def unrows(ensemble: Ensemble, flat: torch.Tensor, like: Sequence[torch.Tensor]
           ) -> list[torch.Tensor]:
    """Inverse of :func:`rows`: [K, P] -> tensors shaped like ``like``."""
    out: list[torch.Tensor] = []
    if ensemble.vectorised:
        start = 0
        for t in like:
            size = t[0].numel()
            out.append(flat[:, start:start + size].reshape(t.shape))
            start += size
        return out
    m = _owner_chunks(ensemble, len(like))
    for k in range(ensemble.k):
        start = 0
        for t in like[k * m:(k + 1) * m]:
            out.append(flat[k, start:start + t.numel()].reshape(t.shape))
            start += t.numel()
    return out


def per_model(ensemble: Ensemble, values: torch.Tensor, like: Sequence[torch.Tensor]
              ) -> list[torch.Tensor]:
    """Per-model values [K] broadcastable against each tensor of ``like``."""
    if ensemble.vectorised:
        return [values.reshape(-1, *([1] * (t.dim() - 1))).to(t) for t in like]
    m = _owner_chunks(ensemble, len(like))
    return [values[i // m].to(t) for i, t in enumerate(like)]


# ---------------------------------------------------------------- fine-tuning
class StepModule(FinetuneModule):
    """A fine-tuning module with manual optimisation: subclasses define :meth:`loss`
    (per-model losses [K] of one batch) and may hook :meth:`before_step` (after the
    gradient exists), :meth:`after_step` and :meth:`lr_factor` (per step)."""

    def __init__(self, ensemble: Ensemble, task: Task, optimizer: str = "sgd", lr: float = 1e-3,
                 momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(ensemble, task, optimizer, lr, momentum, weight_decay)
        self.automatic_optimization = False
        self.step_count = 0

    def loss(self, batch: dict) -> torch.Tensor:
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


def epoch_steps(s: BatchStream, epoch: int) -> range:
    """Item numbers of one epoch of a stream."""
    return range(epoch * s.steps_per_epoch, (epoch + 1) * s.steps_per_epoch)


def cycling(mask: np.ndarray, keys: Sequence[int], steps: int, batch_size: int, name: str
            ) -> BatchStream:
    """A stream with enough epochs to be cycled for ``steps`` steps (each cycle reshuffled)."""
    size = int(np.asarray(mask).sum(1).max())
    epochs = max(1, math.ceil(steps / math.ceil(size / batch_size)))
    return stream(mask, list(keys), epochs, batch_size, salt(name))


# ---------------------------------------------------------------- plain passes
def device_of(problem: Problem) -> torch.device:
    return torch.device("cuda" if accelerator(problem.device) == "gpu" else "cpu")


def ce_per_model(ensemble: Ensemble, x: torch.Tensor, y: torch.Tensor, batch: dict,
                 device: torch.device) -> torch.Tensor:
    """Per-model mean cross-entropy [K] of a stream batch (models in their current mode)."""
    idx = batch["idx"].to(device)
    w = batch["weight"].to(device)
    logits = ensemble(x[idx])
    ce = F.cross_entropy(logits.flatten(0, 1), y[idx].flatten(), reduction="none")
    return weighted_mean(ce.view_as(w), w)


def squared_grads(problem: Problem, ensemble: Ensemble, data: BatchStream
                  ) -> list[torch.Tensor]:
    """Diagonal Fisher estimate per parameter, as in the SSD reference code: the mean over
    a model's (non-empty) minibatches of its squared minibatch-mean CE gradient."""
    dev = device_of(problem)
    ensemble.to(dev).eval()
    x, y = problem.task.data.x_train.to(dev), problem.task.data.y_train.to(dev)
    ps = params(ensemble)
    acc = [torch.zeros_like(p) for p in ps]
    batches = torch.zeros(ensemble.k, device=dev)
    for t in range(len(data)):
        b = data[t]
        grads = torch.autograd.grad(ce_per_model(ensemble, x, y, b, dev).sum(), ps)
        for a, g in zip(acc, grads, strict=True):
            a += g.detach() ** 2
        batches += (b["weight"].sum(1) > 0).to(dev, torch.float32)
    scale = per_model(ensemble, 1.0 / batches.clamp_min(1.0), acc)
    out = [(a * s).cpu() for a, s in zip(acc, scale, strict=True)]
    ensemble.cpu().train()
    return out


def mean_grad(problem: Problem, ensemble: Ensemble, data: BatchStream) -> list[torch.Tensor]:
    """Gradient of each model's mean CE over all examples its one-epoch stream holds."""
    dev = device_of(problem)
    ensemble.to(dev).eval()
    x, y = problem.task.data.x_train.to(dev), problem.task.data.y_train.to(dev)
    ps = params(ensemble)
    acc = [torch.zeros_like(p) for p in ps]
    n = torch.as_tensor(data.weight.sum(axis=(0, 2, 3)), dtype=torch.float32, device=dev)
    for t in range(len(data)):
        b = data[t]
        idx, w = b["idx"].to(dev), b["weight"].to(dev)
        logits = ensemble(x[idx])
        ce = F.cross_entropy(logits.flatten(0, 1), y[idx].flatten(), reduction="none")
        total = ((ce.view_as(w) * w).sum(1) / n.clamp_min(1.0)).sum()
        for a, g in zip(acc, torch.autograd.grad(total, ps), strict=True):
            a += g.detach()
    out = [a.cpu() for a in acc]
    ensemble.cpu().train()
    return out
