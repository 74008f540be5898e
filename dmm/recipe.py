"""Training recipes: optimiser, schedule, batch size, epochs, augmentation."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch


@dataclass
class Recipe:
    """How a task's models are trained (DESIGN.md section 8).

    Args:
        epochs: the step budget, in passes over the full training set: every model takes
            ``epochs x ceil(n_train / batch_size)`` steps, streaming through permutations
            of its own subset, whatever the subset's size. A fixed budget keeps originals,
            oracles and subset models on one schedule (the number of steps does not jump
            with the subset size), and lets a fleet train in lockstep exactly.
        batch_size: examples per step and model.
        optimizer: ``sgd`` or ``adam``.
        lr: peak learning rate.
        momentum: SGD momentum.
        nesterov: Nesterov momentum for SGD.
        weight_decay: L2 weight decay (coupled, as in torch's SGD/Adam).
        schedule: ``constant``, ``triangular`` (linear up from 0 to ``lr`` at ``peak_epoch``,
            linear down to 0 at the end: the one-cycle of the fast CIFAR recipes) or ``cosine``.
        peak_epoch: where the triangular schedule peaks.
        label_smoothing: cross-entropy label smoothing.
        augment: ``none`` or ``crop_flip`` (pad 4, random 32x32 crop, random horizontal flip).
    """

    epochs: int = 20
    batch_size: int = 64
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: Literal["constant", "triangular", "cosine"] = "triangular"
    peak_epoch: float = 5.0
    label_smoothing: float = 0.0
    augment: Literal["none", "crop_flip"] = "none"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be positive")
        if self.lr <= 0:
            raise ValueError("lr must be positive")

    def steps_per_epoch(self, n_train: int) -> int:
        """Optimiser steps per epoch for a task with ``n_train`` training examples."""
        return math.ceil(n_train / self.batch_size)

    def examples(self, n_train: int) -> int:
        """Example gradients computed by one training run: the cost of one retraining."""
        return self.epochs * self.steps_per_epoch(n_train) * self.batch_size


def model_key(seed: int, model_id: int) -> int:
    """The random key of model ``model_id`` of a fleet seeded with ``seed``.

    It seeds the model's initialisation, data order and augmentation, independently of
    which other models train beside it (so a fleet's shards can be recomputed exactly).
    """
    return int(np.random.SeedSequence([seed, model_id]).generate_state(1)[0])


def make_optimizer(
    params: Iterable[torch.nn.Parameter],
    name: str,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
) -> torch.optim.Optimizer:
    """An element-wise optimiser, so that stacked fleet parameters train like separate models
    (bit for bit: a model's update does not depend on where it sits in the stack). Not the
    fused kernels: fused SGD rounds a tensor's tail elements differently from the rest, so
    a model's weights would depend on its fleet's size (6e-3 in logits after training)."""
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
        )
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


def lr_factor(recipe: Recipe, steps_per_epoch: int) -> Callable[[int], float]:
    """Multiplicative learning-rate factor per optimiser step, for ``LambdaLR``."""
    total = recipe.epochs * steps_per_epoch
    if recipe.schedule == "constant":
        return lambda step: 1.0
    if recipe.schedule == "cosine":
        return lambda step: 0.5 * (1 + np.cos(np.pi * min(step, total) / total))
    peak = min(recipe.peak_epoch * steps_per_epoch, total - 1)
    return lambda step: float(np.interp(step + 1, [0, peak + 1, total + 1], [0.0, 1.0, 0.0]))
