"""Selective Synaptic Dampening (SSD; Foster et al. 2024, "Fast Machine Unlearning without
Retraining through Selective Synaptic Dampening"). Retraining-free: no optimiser runs.

Definition implemented (the paper's eqs. 3-4 and its reference code):
1. Importances: the diagonal of the Fisher information, estimated as in the reference
   code by the mean over minibatches of the squared minibatch-mean CE gradient, at the
   original weights: ``I_F`` over each model's forget set and ``I_D`` over its whole
   training set (forget set included).
2. Selection: parameters with ``I_F > alpha · I_D``.
3. Dampening: each selected parameter is multiplied by
   ``β = min(lam · I_D / I_F, 1)``; the others are left untouched.

Defaults: alpha 10 and lam 1, the paper's values for ResNet-18 on CIFAR; batch 64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dmm.ensemble import Ensemble
from dmm.unlearning.base import Method, Problem
from dmm.unlearning.finetune import salt, stream

from ._common import params, squared_grads


def dampen(weights: torch.Tensor, imp_forget: torch.Tensor, imp_full: torch.Tensor,
           alpha: float, lam: float) -> torch.Tensor:
    """SSD's update of one parameter tensor (element-wise, so per model)."""
    selected = imp_forget > alpha * imp_full
    beta = (lam * imp_full / torch.where(selected, imp_forget, 1.0)).clamp(max=1.0)
    return torch.where(selected, weights * beta, weights)


@dataclass
class SSD(Method):
    """Selective synaptic dampening.

    Args:
        alpha: selection threshold on ``I_F / I_D``.
        lam: dampening constant λ.
        batch_size: examples per minibatch of the importance passes.
    """

    name = "ssd"

    alpha: float = 10.0
    lam: float = 1.0
    batch_size: int = 64

    def importances(self, problem: Problem, ensemble: Ensemble
                    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``(I_F, I_D)``, each shaped like ``ensemble.parameters()``."""
        forget = stream(problem.forget, problem.keys, 1, self.batch_size, salt("ssd/forget"))
        full = stream(problem.trained, problem.keys, 1, self.batch_size, salt("ssd/full"))
        return squared_grads(problem, ensemble, forget), squared_grads(problem, ensemble, full)

    def run(self, problem: Problem, ensemble: Ensemble) -> float:
        imp_forget, imp_full = self.importances(problem, ensemble)
        with torch.no_grad():
            for p, f, d in zip(params(ensemble), imp_forget, imp_full, strict=True):
                p.copy_(dampen(p, f, d, self.alpha, self.lam))
        return float((problem.forget.sum(1) + problem.trained.sum(1)).mean())
