"""Gradient Descent (GD), also called fine-tuning (FT): keep training on the retain set.

Definition implemented (Warnecke et al. 2023; Golatkar et al. 2020; the DMM paper's
benchmark, DESIGN.md section 7): starting from the original, run ``epochs`` passes of
minibatch SGD on ``CE(f(x; θ), y)`` over each model's retain set. The published grid is
SGD lr {1e-5, 1e-3, 1e-2} x epochs {1, 3, 5, 7, 10}, batch 64, no momentum or weight decay.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dmm.ensemble import Ensemble
from dmm.unlearning.base import Method, Problem
from dmm.unlearning.finetune import examples, fit, stream

from ._common import StepModule, salt


class _Descent(StepModule):
    def loss(self, batch: dict) -> torch.Tensor:
        return self.ce(batch)


@dataclass
class GradientDescent(Method):
    """Fine-tuning on the retain set.

    Args:
        lr: learning rate.
        epochs: passes over the retain set.
        batch_size: retain examples per step and model.
        optimizer: ``sgd`` or ``adam``.
        momentum: SGD momentum.
        weight_decay: L2 weight decay (coupled).
    """

    name = "gd"

    lr: float = 1e-2
    epochs: int = 5
    batch_size: int = 64
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0

    def run(self, problem: Problem, ensemble: Ensemble) -> float:
        data = stream(problem.retain, list(problem.keys), self.epochs, self.batch_size,
                      salt("gd/retain"))
        fit(_Descent(ensemble, problem.task, self.optimizer, self.lr, self.momentum,
                     self.weight_decay), data, problem.device)
        return examples(data)
