"""NegGrad+ (Kurmanji et al. 2023, "Towards Unbounded Machine Unlearning"): descent on
the retain set and ascent on the forget set in one weighted loss.

Definition implemented: every step takes one retain minibatch and one forget minibatch
(the forget stream cycles, reshuffled each cycle) and minimises
``α · CE_retain − (1 − α) · CE_forget``; an epoch is one pass over the retain set.
This is the "ascent-then-descent" family of DESIGN.md section 7 in the form of
Kurmanji et al., who tune α per problem. Optimiser defaults (SGD, momentum 0.9, weight
decay 5e-4) follow the SCRUB paper's code base.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dmm.ensemble import Ensemble
from dmm.tasks import Task
from dmm.training import ZipStream
from dmm.unlearning.base import Finetune, Problem
from dmm.unlearning.finetune import FinetuneModule, cycling, examples, fit, salt, stream


class _NegGradPlus(FinetuneModule):
    def __init__(self, ensemble: Ensemble, task: Task, alpha: float, **opt: object):
        super().__init__(ensemble, task, **opt)
        self.alpha = alpha

    def loss(self, batch: dict) -> torch.Tensor:
        return self.alpha * self.ce(batch["retain"]) - (1 - self.alpha) * self.ce(batch["forget"])


@dataclass
class NegGradPlus(Finetune):
    """Weighted retain descent and forget ascent (``epochs`` passes over the retain set,
    ``batch_size`` retain examples per step; shared hyperparameters: :class:`Finetune`).

    Args:
        alpha: weight of the retain loss; the forget loss gets ``1 - alpha``.
        forget_batch_size: forget examples per step and model.
    """

    name = "neggrad-plus"

    alpha: float = 0.99
    forget_batch_size: int = 64

    def run(self, problem: Problem, ensemble: Ensemble) -> float:
        retain = stream(problem.retain, problem.keys, self.epochs, self.batch_size,
                        salt("neggrad-plus/retain"))
        forget = cycling(problem.forget, problem.keys, len(retain), self.forget_batch_size,
                         "neggrad-plus/forget")
        data = ZipStream(retain=retain, forget=forget)
        fit(_NegGradPlus(ensemble, problem.task, self.alpha, **self.optimiser()), data,
            problem.device)
        return examples(data)
