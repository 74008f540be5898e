"""Shared machinery of the baselines: per-model views of an ensemble's parameters and
plain gradient passes (importances, saliency). Fine-tuning itself (the Lightning module,
streams, schedules) is :mod:`dmm.unlearning.finetune`.

Every parameter tensor of an :class:`~dmm.ensemble.Ensemble` belongs to one model
(looped mode) or stacks all K models on dim 0 (vectorised mode). :func:`rows` and
:func:`unrows` convert a list of tensors shaped like ``ensemble.parameters()`` to and
from one row per model, ``[K, P]``, so that per-model reductions (top-k, sums) are one
call in both modes; :func:`per_model` broadcasts a per-model value ``[K]`` back.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dmm.ensemble import Ensemble
from dmm.training import BatchStream, accelerator, per_model_ce
from dmm.unlearning.base import Problem


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


# ---------------------------------------------------------------- plain passes
def device_of(problem: Problem) -> torch.device:
    return torch.device("cuda" if accelerator(problem.device) == "gpu" else "cpu")


def ce_per_model(ensemble: Ensemble, x: torch.Tensor, y: torch.Tensor, batch: dict,
                 device: torch.device, total: torch.Tensor | None = None) -> torch.Tensor:
    """Per-model mean cross-entropy [K] of a stream batch (models in their current mode);
    ``total`` [K] divides instead of the batch's slot count (see ``per_model_ce``)."""
    idx, w = batch["idx"].to(device), batch["weight"].to(device)
    return per_model_ce(ensemble(x[idx]), y[idx], w, total=total)


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
        total = ce_per_model(ensemble, x, y, data[t], dev, total=n).sum()
        for a, g in zip(acc, torch.autograd.grad(total, ps), strict=True):
            a += g.detach()
    out = [a.cpu() for a in acc]
    ensemble.cpu().train()
    return out
