"""Gradient Ascent (GA): maximise the cross-entropy on the forget set.

Definition implemented (the "GA" / "NegGrad" baseline of Thudi et al. 2022 and of the
DMM paper's benchmark, DESIGN.md section 7): starting from the original, run ``epochs``
passes of minibatch SGD over each model's forget set on the loss ``-CE(f(x; θ), y)``.
The published grid is SGD lr {1e-5, 1e-3, 1e-2} x epochs {1, 3, 5, 7, 10}, batch 64,
no momentum or weight decay (the benchmark's optimiser took only a learning rate).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dmm.ensemble import Ensemble
from dmm.unlearning.base import Finetune, Problem
from dmm.unlearning.finetune import FinetuneModule, examples, fit, salt, stream


class _Ascent(FinetuneModule):
    def loss(self, batch: dict) -> torch.Tensor:
        return -self.ce(batch)


@dataclass
class GradientAscent(Finetune):
    """Gradient ascent on the forget set: ``epochs`` passes over it, ``batch_size`` forget
    examples per step and model (shared fine-tuning hyperparameters: :class:`Finetune`)."""

    name = "ga"

    def run(self, problem: Problem, ensemble: Ensemble) -> float:
        data = stream(problem.forget, problem.keys, self.epochs, self.batch_size,
                      salt("ga/forget"))
        fit(_Ascent(ensemble, problem.task, **self.optimiser()), data, problem.device)
        return examples(data)
