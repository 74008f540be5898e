"""The evaluation metrics as registered components, run from a list by ``dmm eval`` and
``dmm bench`` alike, so that their reports agree.

A :class:`Case` is what is evaluated: the outputs of N oracles (retrained without the
forget set), of the N models under evaluation, optionally of a second oracle fleet (the
noise floor), the splits, and, for U-LiRA, a job that unlearns a shadow fleet with the
method under evaluation. Each :class:`Metric` turns a case into a JSON block that names
its reference models and direction, and into the flat values of its ``results.csv``
columns. :func:`evaluate_case` runs a list of them by name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .klom import DIRECTIONS, MAIN_SPLITS, klom_interval
from .margins import margins as margins_of
from .membership import competition_score, loss_threshold_attack
from .report import klom_block
from .splits import Splits

METRICS: dict[str, type[Metric]] = {}
SHORT = {"forget": "forget", "retain": "retain", "validation": "val"}  # results.csv names


@dataclass
class Outputs:
    """What the metrics read of N models: margins [N, points] and, when known, whether
    each model classifies each point correctly, [N, points] bool."""

    margins: np.ndarray
    correct: np.ndarray | None = None

    @classmethod
    def from_logits(cls, logits: Any, labels: np.ndarray) -> Outputs:
        z = np.asarray(logits, dtype=np.float32)
        return cls(margins_of(z, labels), z.argmax(-1) == labels)

    def __len__(self) -> int:
        return len(self.margins)

    def first(self, n: int) -> Outputs:
        return Outputs(self.margins[:n], None if self.correct is None else self.correct[:n])

    def accuracy(self, idx: np.ndarray) -> np.ndarray | None:
        """Each model's accuracy on points ``idx``: [N] (None without correctness)."""
        return None if self.correct is None else self.correct[:, idx].mean(1)


@dataclass
class Case:
    """One evaluation: ``unlearned`` against ``oracle`` on ``splits``.

    ``floor`` is a second, independent oracle fleet (the noise floor); ``ulira`` runs
    U-LiRA of the method that produced ``unlearned`` (None: not available).
    """

    oracle: Outputs
    unlearned: Outputs
    splits: Splits
    floor: Outputs | None = None
    ulira: Callable[[], dict[str, Any]] | None = None


class Metric(ABC):
    """One metric: a JSON block of a case, and its ``results.csv`` columns."""

    name: ClassVar[str]
    columns: ClassVar[tuple[str, ...]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        METRICS[cls.name] = cls

    @abstractmethod
    def block(self, case: Case) -> dict[str, Any]:
        """The metric's report entry (with its reference models and direction)."""

    @abstractmethod
    def values(self, block: dict[str, Any]) -> dict[str, float]:
        """The flat values of ``columns`` from a block (NaN where undefined)."""


def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _both_directions(reference: np.ndarray, compared: np.ndarray, splits: Splits,
                     compared_models: str) -> dict[str, Any]:
    block = klom_block(reference, compared, splits, compared_models=compared_models)
    block["reverse"] = klom_block(reference, compared, splits, compared_models=compared_models,
                                  direction="unlearned||oracle")
    return block


class KLoM(Metric):
    """KLoM per point and split in both directions, KL(oracle || unlearned) and
    KL(unlearned || oracle) (``reverse``), and the same for the noise-floor fleet."""

    name = "klom"
    columns = (*(f"klom95_{SHORT[s]}" for s in MAIN_SPLITS), "klom95_mean",
               *(f"klom99_{SHORT[s]}" for s in MAIN_SPLITS),
               *(f"klom95_{SHORT[s]}_rev" for s in MAIN_SPLITS), "klom95_mean_rev")

    def block(self, case: Case) -> dict[str, Any]:
        out = _both_directions(case.oracle.margins, case.unlearned.margins, case.splits,
                               "unlearned")
        out["noise_floor"] = None if case.floor is None else _both_directions(
            case.oracle.margins, case.floor.margins, case.splits, "oracle_2")
        return out

    def values(self, block: dict[str, Any]) -> dict[str, float]:
        s, r = block["splits"], block["reverse"]["splits"]
        return {**{f"klom95_{SHORT[k]}": s[k]["p95"] for k in MAIN_SPLITS},
                "klom95_mean": block["mean_p95"],
                **{f"klom99_{SHORT[k]}": s[k]["p99"] for k in MAIN_SPLITS},
                **{f"klom95_{SHORT[k]}_rev": r[k]["p95"] for k in MAIN_SPLITS},
                "klom95_mean_rev": block["reverse"]["mean_p95"]}


class KLoMInterval(Metric):
    """95% bootstrap intervals of every KLoM95 (both directions, each split and the mean):
    B smoothed resamples of N models with replacement on each side, independently per
    side, bias-corrected (:func:`~dmm.evals.klom.klom_interval`; DESIGN.md section 5,
    error bars)."""

    name = "klom_interval"
    resamples, seed = 200, 0
    columns = tuple(f"klom95_{SHORT.get(k, k)}{tag}_{end}" for tag in ("", "_rev")
                    for k in (*MAIN_SPLITS, "mean") for end in ("lo", "hi"))

    def block(self, case: Case) -> dict[str, Any]:
        out: dict[str, Any] = {
            "metric": "95% bootstrap interval of KLoM95 (2.5th-97.5th percentile of the "
                      "resamples, shifted by their mean's bias against the estimate)",
            "resamples": self.resamples, "seed": self.seed,
            "resampling": "N oracle and N unlearned models with replacement, independently "
                          "per side, the same draw for every point, smoothed by a "
                          "variance-preserving Gaussian kernel (Silverman bandwidth per "
                          "point); bins recomputed",
            "reference_models": "oracle", "compared_models": "unlearned",
            "direction": "both: KL(oracle || unlearned) and KL(unlearned || oracle)"}
        out |= klom_interval(case.oracle.margins, case.unlearned.margins, case.splits,
                             self.resamples, self.seed)
        return out

    def values(self, block: dict[str, Any]) -> dict[str, float]:
        out = {}
        for direction, tag in zip(DIRECTIONS, ("", "_rev"), strict=True):
            for k in (*MAIN_SPLITS, "mean"):
                lo, hi = block[direction][k]
                out[f"klom95_{SHORT.get(k, k)}{tag}_lo"] = lo
                out[f"klom95_{SHORT.get(k, k)}{tag}_hi"] = hi
        return out


class Spread(Metric):
    """How wide the unlearned models' margins are spread against the oracles': per point
    the ratio of standard deviations across models, its median per split (1 = as wide)."""

    name = "spread"
    columns = tuple(f"spread_{SHORT[s]}" for s in MAIN_SPLITS)

    def block(self, case: Case) -> dict[str, Any]:
        sd_o, sd_u = case.oracle.margins.std(0), case.unlearned.margins.std(0)
        ok = sd_o > 0
        ratio = np.where(ok, sd_u / np.where(ok, sd_o, 1.0), np.nan)
        return {"metric": "spread: median over points of std(unlearned) / std(oracle) of "
                          "the margins across models",
                "reference_models": "oracle", "compared_models": "unlearned",
                "direction": "1 is best; above 1 the unlearned models are more spread out "
                             "than the oracles (distinguishable from them)",
                "splits": {k: float(np.nanmedian(ratio[v])) if ok[v].any() else None
                           for k, v in case.splits.items()}}

    def values(self, block: dict[str, Any]) -> dict[str, float]:
        return {f"spread_{SHORT[k]}": _num(block["splits"][k]) for k in MAIN_SPLITS}


class Accuracy(Metric):
    """Top-1 accuracy per split, mean and std over models (and the oracles')."""

    name = "accuracy"
    columns = tuple(f"accuracy_{SHORT[s]}" for s in MAIN_SPLITS)

    def block(self, case: Case) -> dict[str, Any]:
        def per_split(side: Outputs | None) -> dict | None:
            if side is None or side.correct is None:
                return None
            return {k: {"mean": float(side.accuracy(v).mean()),
                        "std": float(side.accuracy(v).std()), "n_models": len(side),
                        "n_points": int(len(v))} for k, v in case.splits.items()}

        ref, comp = per_split(case.oracle), per_split(case.unlearned)
        return {
            "metric": "top-1 accuracy per split (mean and std over models)",
            "reference_models": "oracle", "compared_models": "unlearned",
            "direction": "closer to the oracles' accuracy is better",
            "oracle": ref, "unlearned": comp, "oracle_2": per_split(case.floor),
            "unlearned_minus_oracle": None if comp is None or ref is None else {
                k: comp[k]["mean"] - ref[k]["mean"] for k in ref},
            "note": None if comp is not None else "unlearned models given as margins: "
                                                  "no accuracy",
        }

    def values(self, block: dict[str, Any]) -> dict[str, float]:
        comp = block["unlearned"]
        return {f"accuracy_{SHORT[k]}": float("nan") if comp is None else comp[k]["mean"]
                for k in MAIN_SPLITS}


class CompetitionScore(Metric):
    """The NeurIPS 2023 unlearning competition's score on the forget points."""

    name = "competition_score"
    columns = ("competition_score",)

    def block(self, case: Case) -> dict[str, Any]:
        head = {"metric": "NeurIPS 2023 unlearning competition score",
                "reference_models": "oracle", "compared_models": "unlearned",
                "direction": "higher is better (1: unlearned and oracle margins "
                             "indistinguishable on every forget point, accuracies kept)"}
        u, o, sp = case.unlearned, case.oracle, case.splits
        if u.correct is None or o.correct is None:
            return {**head, "score": None, "note": "needs logits for the accuracy ratios"}
        if len(o) < 3:
            return {**head, "score": None, "note": "needs at least 3 models per side"}
        result = competition_score(
            u.margins[:, sp.forget], o.margins[:, sp.forget],
            retain_acc_unlearned=u.accuracy(sp.retain), retain_acc_retrained=o.accuracy(sp.retain),
            test_acc_unlearned=u.accuracy(sp.validation),
            test_acc_retrained=o.accuracy(sp.validation))
        return {**head, **result}

    def values(self, block: dict[str, Any]) -> dict[str, float]:
        return {"competition_score": _num(block["score"])}


def _loss_attack(side: Outputs, splits: Splits) -> dict[str, Any]:
    # Cross-entropy from the margin: loss = -log sigmoid(margin) = log(1 + exp(-margin)).
    losses = np.logaddexp(0.0, -side.margins)
    runs = [loss_threshold_attack(row[splits.forget], row[splits.validation]) for row in losses]
    auc = np.array([r["auc"] for r in runs])
    acc = np.array([r["accuracy_best_threshold"] for r in runs])
    return {"auc_mean": float(auc.mean()), "auc_std": float(auc.std()),
            "accuracy_best_threshold_mean": float(acc.mean()), "n_models": len(runs)}


class LossAttack(Metric):
    """A population loss-threshold attack per model: forget points against validation
    points."""

    name = "loss_attack"
    columns = ("loss_attack_auc",)

    def block(self, case: Case) -> dict[str, Any]:
        return {
            "metric": "population loss-threshold attack, one attack per model",
            "attack": "member iff loss <= threshold; forget points (positives) vs validation "
                      "points",
            "reference_models": "oracle", "compared_models": "unlearned",
            "direction": "AUC closer to the oracles' is better; above it, forget points "
                         "still look like training members (0.5: no signal at all)",
            "oracle": _loss_attack(case.oracle, case.splits),
            "unlearned": _loss_attack(case.unlearned, case.splits),
        }

    def values(self, block: dict[str, Any]) -> dict[str, float]:
        return {"loss_attack_auc": block["unlearned"]["auc_mean"]}


class ULiRA(Metric):
    """U-LiRA (Hayes et al. 2024) of the method under evaluation, on a shadow fleet
    (:mod:`dmm.evals.ulira_harness`)."""

    name = "ulira"
    columns = ("ulira_auc",)

    def block(self, case: Case) -> dict[str, Any]:
        if case.ulira is None:
            return {"metric": "U-LiRA", "auc": None,
                    "note": "needs the method and a shadow fleet (random halves)"}
        return {"metric": "U-LiRA", **case.ulira()}

    def values(self, block: dict[str, Any]) -> dict[str, float]:
        return {"ulira_auc": _num(block["auc"])}


# Raised whenever a metric's definition changes, so that caches of scored runs (the
# bench's) are not read back with old values. 2: bias-corrected, smoothed bootstrap;
# 3: its statistics in float64.
REVISION = 3

DEFAULT_METRICS = ("klom", "klom_interval", "spread", "accuracy", "competition_score",
                   "loss_attack", "ulira")


def check_metrics(names: Sequence[str]) -> list[str]:
    """``names`` if every one is a registered metric (else a ValueError naming them)."""
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)} (known: "
                         f"{', '.join(METRICS)})")
    return list(names)


def evaluate_case(case: Case, names: Sequence[str] = DEFAULT_METRICS
                  ) -> dict[str, dict[str, Any]]:
    """Every metric in ``names`` on ``case``: {name: block}."""
    return {n: METRICS[n]().block(case) for n in check_metrics(names)}


def columns(blocks: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The flat ``results.csv`` values of evaluated blocks."""
    out: dict[str, float] = {}
    for name, block in blocks.items():
        out.update(METRICS[name]().values(block))
    return out
