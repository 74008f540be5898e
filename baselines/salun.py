"""SalUn (Fan et al. 2024, "SalUn: Empowering Machine Unlearning via Gradient-based Weight
Saliency in Both Image Classification and Generation").

Definition implemented:
1. Saliency: ``s = |∇_θ CE_F(θ0)|``, the gradient of each model's mean cross-entropy over
   its whole forget set at the original weights (SalUn's code accumulates the same
   gradient over forget minibatches).
2. Mask: per model, the top ``gamma`` fraction (``int(gamma · P)`` entries of its P
   weights, all parameter tensors ranked together, as in SalUn's ``generate_mask``).
3. Random-label fine-tuning (:mod:`dmm.baselines.random_labels`) that updates only the
   masked weights. SalUn's code multiplies gradients by the mask, which still lets weight
   decay and momentum move masked-out weights; we also mask the gradients, and in addition
   restore every masked-out weight after each optimiser step, so that they stay
   bit-identical to the original whatever the optimiser.

Defaults: gamma 0.5 (the paper's mask ratio for classification), lr 0.013 and 10 epochs
(the reference code's CIFAR-10 command), SGD momentum 0.9, weight decay 5e-4.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dmm.ensemble import Ensemble
from dmm.tasks import Task
from dmm.unlearning.base import Finetune, Problem
from dmm.unlearning.finetune import salt, stream

from ._common import mean_grad, params, rows, unrows
from .random_labels import RandomLabelModule, random_label_run


def saliency_mask(ensemble: Ensemble, saliency: list[torch.Tensor], gamma: float
                  ) -> list[torch.Tensor]:
    """Per model, True on the ``int(gamma · P)`` entries of largest |saliency|, as bool
    tensors shaped like ``ensemble.parameters()``."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    flat = rows(ensemble, [s.abs() for s in saliency])
    keep = int(gamma * flat.shape[1])
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if keep:
        mask.scatter_(1, flat.topk(keep, dim=1).indices, True)
    return unrows(ensemble, mask, saliency)


class _MaskedRandomLabels(RandomLabelModule):
    """Random-label fine-tuning of the masked weights only; the others stay exactly frozen."""

    def __init__(self, ensemble: Ensemble, task: Task, labels: torch.Tensor,
                 masks: list[torch.Tensor], **opt: object):
        super().__init__(ensemble, task, labels, **opt)
        self.masks = masks
        self.frozen = [p.detach().clone() for p in params(ensemble)]

    def before_step(self) -> None:
        for p, m in zip(params(self.ensemble), self._masks(), strict=True):
            if p.grad is not None:
                p.grad.mul_(m)

    @torch.no_grad()
    def after_step(self) -> None:
        for p, m, f in zip(params(self.ensemble), self._masks(), self.frozen, strict=True):
            p.copy_(torch.where(m, p, f.to(p.device)))

    def _masks(self) -> list[torch.Tensor]:
        dev = next(self.ensemble.parameters()).device
        if self.masks and self.masks[0].device != dev:
            self.masks = [m.to(dev) for m in self.masks]
            self.frozen = [f.to(dev) for f in self.frozen]
        return self.masks


@dataclass
class SalUn(Finetune):
    """Saliency-masked random-label fine-tuning (``epochs`` passes over F ∪ R;
    ``batch_size`` is also the saliency pass's batch; weight decay never reaches the frozen
    weights; shared fine-tuning hyperparameters: :class:`Finetune`).

    Args:
        gamma: fraction of each model's weights that may change (the mask ratio).
    """

    name = "salun"

    gamma: float = 0.5

    def mask(self, problem: Problem, ensemble: Ensemble) -> list[torch.Tensor]:
        """The saliency mask of every model at the ensemble's current weights."""
        data = stream(problem.forget, problem.keys, 1, self.batch_size,
                      salt("salun/saliency"))
        return saliency_mask(ensemble, mean_grad(problem, ensemble, data), self.gamma)

    def run(self, problem: Problem, ensemble: Ensemble) -> float:
        masks = self.mask(problem, ensemble)

        def make(labels: torch.Tensor) -> RandomLabelModule:
            return _MaskedRandomLabels(ensemble, problem.task, labels, masks,
                                       **self.optimiser())

        seen = random_label_run(problem, self.name, self.epochs, self.batch_size, make)
        return seen + float(problem.forget.sum(1).mean())  # + the saliency pass
