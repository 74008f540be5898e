"""ℓ1-sparse unlearning (Jia et al. 2023, "Model Sparsity Can Simplify Machine Unlearning").

Definition implemented (the paper's eq. (5), "ℓ1-sparse MU", with the schedule of its
reference code): fine-tune on the retain set minimising ``CE_R(θ) + γ_t ‖θ‖₁`` with the
regularisation weight decaying linearly over the run, ``γ_t = gamma · (1 − t / epochs)``
for epoch t = 0..epochs−1 (constant within an epoch, as in the reference code).
Defaults: 10 epochs, lr 0.01, SGD momentum 0.9, weight decay 5e-4 (the reference code's
unlearning optimiser); gamma 1e-4 (the reference scripts use 1e-4 to 5e-4).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dmm.ensemble import Ensemble
from dmm.tasks import Task
from dmm.unlearning.base import Finetune, Problem
from dmm.unlearning.finetune import FinetuneModule, examples, fit, salt, stream

from ._common import params, rows


def l1_per_model(ensemble: Ensemble) -> torch.Tensor:
    """Each model's ℓ1 norm of its weights: [K]."""
    return rows(ensemble, [p.abs() for p in params(ensemble)]).sum(1)


class _L1Sparse(FinetuneModule):
    def __init__(self, ensemble: Ensemble, task: Task, gamma: float, epochs: int, **opt: object):
        super().__init__(ensemble, task, **opt)
        self.gamma, self.epochs = gamma, epochs

    def gamma_at(self, epoch: int) -> float:
        return self.gamma * (1 - epoch / self.epochs)

    def loss(self, batch: dict) -> torch.Tensor:
        return self.ce(batch) + self.gamma_at(self.current_epoch) * l1_per_model(self.ensemble)


@dataclass
class L1Sparse(Finetune):
    """Retain fine-tuning with a linearly decaying ℓ1 penalty (``epochs`` passes over the
    retain set; shared fine-tuning hyperparameters: :class:`Finetune`).

    Args:
        gamma: initial ℓ1 weight γ_0.
    """

    name = "l1-sparse"

    gamma: float = 1e-4

    def run(self, problem: Problem, ensemble: Ensemble) -> float:
        data = stream(problem.retain, problem.keys, self.epochs, self.batch_size,
                      salt("l1-sparse/retain"))
        fit(_L1Sparse(ensemble, problem.task, self.gamma, self.epochs, **self.optimiser()),
            data, problem.device)
        return examples(data)
