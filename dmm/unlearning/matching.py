"""Datamodel Matching, DM-Direct and Oracle Matching (DESIGN.md section 4).

DM-Direct predicts the retrained model's logits, h(x) = f(x; θ0) − s·Σ_{i∈F} β_i(x), with
an attribution backend (``problem.context["predictor"]``). DMM fine-tunes θ0 so that its
logits match h on a fine-tuning set S_ft = F ∪ R' (R' a random retain subset sampled once,
forget points duplicated to a given share), minimising Σ_x ‖f(x; θ) − h(x)‖² with Adam.
Oracle Matching is the same with real oracles' logits as targets
(``problem.context["oracle"]``) and R' re-sampled each epoch. There is no ascent term:
every point has a target and a natural stopping point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from dmm.ensemble import Ensemble
from dmm.errors import DmmError
from dmm.unlearning.base import Method, Problem
from dmm.unlearning.finetune import FinetuneModule, examples, fit, stream

SALT_SUBSET, SALT_ORDER = 101, 102


def matching_counts(problem: Problem, retain_fraction: float, forget_share: float,
                    epochs: int, resample: bool) -> np.ndarray:
    """Fine-tuning multisets [epochs, K, n_train]: each model's forget set, duplicated so
    that it makes up about ``forget_share`` of S_ft, plus a random ``retain_fraction`` of
    its retain set (one draw, or a fresh draw each epoch if ``resample``)."""
    k, n = problem.forget.shape
    counts = np.zeros((epochs, k, n), dtype=np.int64)
    for j, key in enumerate(problem.keys):
        retain = np.flatnonzero(problem.retain[j])
        forget = problem.forget[j]
        size = max(1, round(retain_fraction * len(retain)))
        dup = duplication(int(forget.sum()), size, forget_share)
        for e in range(epochs):
            rng = np.random.default_rng([key, SALT_SUBSET, e if resample else 0])
            counts[e, j, rng.choice(retain, size=size, replace=False)] = 1
            counts[e, j, forget] = dup
    return counts


def duplication(n_forget: int, n_retain: int, forget_share: float) -> int:
    """How many copies of each forget point make them ``forget_share`` of F∪R' (at least 1)."""
    if n_forget == 0 or forget_share <= 0:
        return 1
    return max(1, round(forget_share / (1 - forget_share) * n_retain / n_forget))


class MatchingModule(FinetuneModule):
    """Fine-tunes an ensemble to per-model target logits with MSE: Σ_c (f_c(x) − h_c(x))²,
    averaged over each model's minibatch and summed over models."""

    def __init__(self, ensemble: Ensemble, problem: Problem, targets: torch.Tensor, lr: float):
        super().__init__(ensemble, problem.task, optimizer="adam", lr=lr)
        self.register_buffer("targets", targets, persistent=False)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        idx, w = batch["idx"], batch["weight"]
        rows = torch.arange(len(idx), device=idx.device)[:, None]
        sq = (self.logits(idx) - self.targets[rows, idx]).pow(2).sum(-1)
        loss = (sq * w).sum(1) / w.sum(1).clamp_min(1.0)
        self.log("mse", loss.mean(), prog_bar=True)
        return loss.sum()


def _context(problem: Problem, name: str, method: str):  # noqa: ANN202
    obj = (problem.context or {}).get(name)
    if obj is None:
        what = "an attribution backend" if name == "predictor" else "oracle fleets"
        raise DmmError(f"method {method!r} needs {what} (context[{name!r}])")
    return obj


def original_train_logits(problem: Problem) -> torch.Tensor:
    """The originals' logits on all points: [K, P, C]."""
    return problem.originals.predict(problem.task.data.x_all)


@dataclass
class DMDirect(Method):
    """DM-Direct: output the attribution backend's prediction h(x); no fine-tuning."""

    name: ClassVar[str] = "dm-direct"

    def run(self, problem: Problem, ensemble: Ensemble) -> float:
        _context(problem, "predictor", self.name)
        return 0.0

    def predict(self, problem: Problem, ensemble: Ensemble) -> torch.Tensor:
        predictor = _context(problem, "predictor", self.name)
        return predictor.predict(original_train_logits(problem), problem.forget)


@dataclass
class DMM(Method):
    """Datamodel Matching: fine-tune to DM-Direct's predicted logits on F ∪ R'.

    Args:
        lr: Adam learning rate (published grid 1e-3 ... 1e-6).
        epochs: passes over S_ft (published grid 1, 2, 4, 8).
        batch_size: examples per step (published: 512).
        retain_fraction: share of the retain set in R' (≥ 4% sufficed in the paper).
        forget_share: share of forget points in S_ft, reached by duplicating them.
    """

    name: ClassVar[str] = "dmm"
    target: ClassVar[str] = "predictor"
    resample: ClassVar[bool] = False

    lr: float = 1e-3
    epochs: int = 4
    batch_size: int = 512
    retain_fraction: float = 0.1
    forget_share: float = 0.2

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.epochs < 1 or self.batch_size < 1:
            raise DmmError(f"{self.name}: lr, epochs and batch_size must be positive")
        if not 0 < self.retain_fraction <= 1 or not 0 <= self.forget_share < 1:
            raise DmmError(f"{self.name}: retain_fraction must be in (0, 1], "
                           "forget_share in [0, 1)")

    def targets(self, problem: Problem) -> torch.Tensor:
        """Target logits on the training points: [K, n_train, C]."""
        source = _context(problem, self.target, self.name)
        n = problem.task.data.n_train
        return source.predict(original_train_logits(problem)[:, :n], problem.forget,
                              points=np.arange(n)).float()

    def run(self, problem: Problem, ensemble: Ensemble) -> float:
        targets = self.targets(problem)
        counts = matching_counts(problem, self.retain_fraction, self.forget_share,
                                 self.epochs, self.resample)
        data = stream(counts, list(problem.keys), self.epochs, self.batch_size, SALT_ORDER)
        fit(MatchingModule(ensemble, problem, targets, self.lr), data, problem.device)
        return examples(data)


@dataclass
class OracleMatching(DMM):
    """Oracle Matching: DMM with real oracles' logits as targets, R' re-sampled each epoch.
    An upper bound for DMM that needs retrained models."""

    name: ClassVar[str] = "om"
    uses_oracles: ClassVar[bool] = True
    target: ClassVar[str] = "oracle"
    resample: ClassVar[bool] = True


