"""SCRUB (Kurmanji et al. 2023, "Towards Unbounded Machine Unlearning").

Definition implemented (the paper's Algorithm 1 and its reference code's defaults): the
*student* starts as a copy of the original and is what the optimiser updates; the
*teacher* is a frozen copy of the original. With ``d(x) = T² · KL(p_teacher(x) ‖
p_student(x))``, ``p = softmax(logits / T)``, each epoch e = 1..``epochs`` runs

1. if e ≤ ``msteps``: one pass over the forget set of max-steps, minimising ``−d`` (the
   student moves away from the teacher on F);
2. one pass over the retain set of min-steps, minimising ``γ · CE + α · d`` (the student
   stays close to the teacher, and accurate, on R);

with one SGD optimiser (momentum and state shared by both kinds of step) whose learning
rate is multiplied by ``lr_decay_rate`` after each epoch in ``lr_decay_epochs`` (epochs
counted from 1, as in the reference code). Defaults: T = 4, γ = 0.99, α = 0.001, SGD
momentum 0.9, weight decay 5e-4, decay at epochs [3, 5, 9] by 0.1 (the reference code).
The published DMM-benchmark grid (DESIGN.md section 7) ships in ``configs/methods/scrub.yaml``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from dmm.ensemble import Ensemble
from dmm.tasks import Task
from dmm.training import per_model_ce, weighted_mean
from dmm.unlearning.base import Finetune, Problem
from dmm.unlearning.finetune import (
    FinetuneModule,
    Schedule,
    epoch_steps,
    examples,
    fit,
    salt,
    stream,
)


def distill_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-example ``T² · KL(softmax(teacher/T) ‖ softmax(student/T))`` over the last dim."""
    log_s = F.log_softmax(student / temperature, dim=-1)
    log_t = F.log_softmax(teacher / temperature, dim=-1)
    return temperature ** 2 * (log_t.exp() * (log_t - log_s)).sum(-1)


class _Scrub(FinetuneModule):
    def __init__(self, ensemble: Ensemble, task: Task, schedule: Schedule, m: SCRUB):
        super().__init__(ensemble, task, **m.optimiser())
        self.teacher = copy.deepcopy(ensemble).requires_grad_(False)
        self.schedule, self.m = schedule, m

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        self.teacher.eval()  # frozen: no batch statistics, no dropout

    def lr_factor(self, step: int) -> float:
        epoch = self.schedule.epoch_of[step] + 1
        return self.m.lr_decay_rate ** sum(epoch > d for d in self.m.lr_decay_epochs)

    def _kl(self, b: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example student logits [K, B, C] and distillation divergence [K, B]."""
        x = self.inputs(b["idx"], b.get("aug"))
        student = self.ensemble(x)
        with torch.no_grad():
            teacher = self.teacher(x)
        return student, distill_kl(student, teacher, self.m.temperature)

    def loss(self, batch: dict) -> torch.Tensor:
        if "forget" in batch:  # max-step
            b = batch["forget"]
            _, kl = self._kl(b)
            return -weighted_mean(kl, b["weight"])
        b = batch["retain"]  # min-step
        student, kl = self._kl(b)
        ce = per_model_ce(student, self.y[b["idx"]], b["weight"])
        return self.m.gamma * ce + self.m.alpha * weighted_mean(kl, b["weight"])


@dataclass
class SCRUB(Finetune):
    """Student-teacher unlearning with max-steps on F and min-steps on R. ``lr`` is the
    initial learning rate, ``epochs`` the total epochs (each has a retain pass of
    min-steps), ``batch_size`` the retain examples per min-step and model (shared
    fine-tuning hyperparameters: :class:`Finetune`).

    Args:
        msteps: the first ``msteps`` epochs also have a forget pass of max-steps first.
        forget_batch_size: forget examples per max-step and model.
        temperature: distillation temperature T.
        alpha: weight of the distillation term in min-steps.
        gamma: weight of the cross-entropy in min-steps.
        lr_decay_epochs: epochs (from 1) after which the learning rate decays.
        lr_decay_rate: the decay factor.
    """

    name = "scrub"

    msteps: int = 3
    forget_batch_size: int = 32
    temperature: float = 4.0
    alpha: float = 0.001
    gamma: float = 0.99
    lr_decay_epochs: list[int] = field(default_factory=lambda: [3, 5, 9])
    lr_decay_rate: float = 0.1

    def schedule(self, problem: Problem) -> Schedule:
        """The step sequence: per epoch, forget max-steps (first ``msteps``), retain min-steps."""
        keys = list(problem.keys)
        max_epochs = min(self.msteps, self.epochs)
        retain = stream(problem.retain, keys, self.epochs, self.batch_size, salt("scrub/retain"))
        forget = stream(problem.forget, keys, max(max_epochs, 1), self.forget_batch_size,
                        salt("scrub/forget"))
        steps = []
        for e in range(self.epochs):
            if e < max_epochs:
                steps += [("forget", forget, t, e) for t in epoch_steps(forget, e)]
            steps += [("retain", retain, t, e) for t in epoch_steps(retain, e)]
        return Schedule(steps)

    def run(self, problem: Problem, ensemble: Ensemble) -> float:
        data = self.schedule(problem)
        fit(_Scrub(ensemble, problem.task, data, self), data, problem.device)
        return examples(data)
