"""Datamodel Matching, DM-Direct and Oracle Matching (DESIGN.md section 4).

DM-Direct predicts the retrained model's logits, h(x) = f(x; θ0) − s·Σ_{i∈F} β_i(x), with
an attribution backend (``problem.inputs.predictor``). DMM fine-tunes θ0 so that its
logits match h on a fine-tuning set S_ft = F ∪ R' (R' a random retain subset sampled once,
the paper's rule, or afresh each epoch with ``resample``; forget points duplicated to a
given share), minimising Σ_x ‖f(x; θ) − h(x)‖² with Adam.
Oracle Matching is the same with real oracles' logits as targets
(``problem.inputs.oracle``) and R' re-sampled each epoch. There is no ascent term:
every point has a target and a natural stopping point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch

from dmm.ensemble import Ensemble
from dmm.errors import DmmError
from dmm.unlearning.base import Finetune, Method, Problem
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
    averaged over each model's minibatch."""

    def __init__(self, ensemble: Ensemble, problem: Problem, targets: torch.Tensor,
                 **optimiser: object):
        super().__init__(ensemble, problem.task, **optimiser)
        self.register_buffer("targets", targets, persistent=False)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        idx, w = batch["idx"], batch["weight"]
        rows = torch.arange(len(idx), device=idx.device)[:, None]
        sq = (self.logits(idx) - self.targets[rows, idx]).pow(2).sum(-1)
        loss = (sq * w).sum(1) / w.sum(1).clamp_min(1.0)
        self.log("mse", loss.mean(), prog_bar=True)
        return loss


def original_logits(problem: Problem) -> torch.Tensor:
    """The originals' logits on all points: [K, P, C]."""
    return problem.originals.predict(problem.task.data.x_all)


@dataclass
class DMDirect(Method):
    """DM-Direct: output the attribution backend's prediction h(x); no fine-tuning."""

    name: ClassVar[str] = "dm-direct"
    requires: ClassVar[tuple[str, ...]] = ("predictor",)
    produces_model: ClassVar[bool] = False

    def run(self, problem: Problem, ensemble: Ensemble) -> float:
        return 0.0

    def predict(self, problem: Problem, ensemble: Ensemble) -> torch.Tensor:
        return problem.inputs.predictor.predict(original_logits(problem), problem.forget)


@dataclass
class DMM(Finetune):
    """Datamodel Matching: fine-tune to DM-Direct's predicted logits on F ∪ R' with MSE
    (``lr``: the published grid is 1e-3 ... 1e-6 with Adam; ``epochs``: passes over S_ft,
    published 1, 2, 4, 8; ``batch_size``: published 512; shared fine-tuning
    hyperparameters: :class:`Finetune`).

    Args:
        retain_fraction: share of the retain set in R' (≥ 4% sufficed in the paper).
        forget_share: share of forget points in S_ft, reached by duplicating them.
        resample: draw R' afresh each epoch (OM's rule) instead of once (the paper's DMM).
    """

    name: ClassVar[str] = "dmm"
    requires: ClassVar[tuple[str, ...]] = ("predictor",)

    optimizer: Literal["sgd", "adam"] = "adam"
    retain_fraction: float = 0.1
    forget_share: float = 0.2
    resample: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.retain_fraction <= 1 or not 0 <= self.forget_share < 1:
            raise DmmError(f"{self.name}: retain_fraction must be in (0, 1], "
                           "forget_share in [0, 1)")

    def targets(self, problem: Problem) -> torch.Tensor:
        """Target logits on the training points: [K, n_train, C]."""
        n = problem.task.data.n_train
        return problem.inputs.predictor.predict(original_logits(problem)[:, :n],
                                                problem.forget, points=np.arange(n)).float()

    def run(self, problem: Problem, ensemble: Ensemble) -> float:
        targets = self.targets(problem)
        counts = matching_counts(problem, self.retain_fraction, self.forget_share,
                                 self.epochs, self.resample)
        data = stream(counts, problem.keys, self.epochs, self.batch_size, SALT_ORDER)
        fit(MatchingModule(ensemble, problem, targets, **self.optimiser()), data,
            problem.device)
        return examples(data)


@dataclass
class OracleMatching(DMM):
    """Oracle Matching: DMM with real oracles' logits as targets, R' re-sampled each epoch.
    An upper bound for DMM that needs retrained models. Original k is matched to the k-th
    oracle trained on its retain set; an oracle fleet trained with the originals' seed
    makes that its own retrained twin (same model key: the same initialisation), which
    fine-tuning reaches: an unrelated oracle's seed noise is not (measured on digits
    development sets, README "Results")."""

    name: ClassVar[str] = "om"
    requires: ClassVar[tuple[str, ...]] = ("oracle",)
    reference: ClassVar[bool] = True

    resample: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.resample:
            raise DmmError("om: R' is re-drawn each epoch by definition (resample must be true)")

    def targets(self, problem: Problem) -> torch.Tensor:
        """Oracles trained on each model's retain set (all it kept of what it trained on)."""
        n = problem.task.data.n_train
        return problem.inputs.oracle.predict(original_logits(problem)[:, :n], ~problem.retain,
                                             points=np.arange(n)).float()
