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
from dmm.unlearning.base import Finetune, Problem
from dmm.unlearning.finetune import FinetuneModule, examples, fit, salt, stream


class _Descent(FinetuneModule):
    def loss(self, batch: dict) -> torch.Tensor:
        return self.ce(batch)


@dataclass
class GradientDescent(Finetune):
    """Fine-tuning on the retain set: ``epochs`` passes over it, ``batch_size`` retain
    examples per step and model (shared fine-tuning hyperparameters: :class:`Finetune`)."""

    name = "gd"

    def run(self, problem: Problem, ensemble: Ensemble) -> float:
        data = stream(problem.retain, problem.keys, self.epochs, self.batch_size,
                      salt("gd/retain"))
        fit(_Descent(ensemble, problem.task, **self.optimiser()), data, problem.device)
        return examples(data)
