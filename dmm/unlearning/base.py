"""The interface every unlearning algorithm shares (DMM, its variants and the baselines).

A :class:`Problem` is one deletion request applied to K models at once (a vectorised
:class:`~dmm.ensemble.Ensemble`; K = 1 for a single checkpoint). A :class:`Method` is a
dataclass of hyperparameters; calling it on a problem returns a :class:`Result` with the
unlearned models, their logits on every point, the cost and a per-model divergence flag.
"""

from __future__ import annotations

import copy
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np
import torch

from dmm.ensemble import Ensemble
from dmm.tasks import Task

METHODS: dict[str, type[Method]] = {}


@dataclass
class Problem:
    """K models and, for each, the training examples it must forget.

    Args:
        task: the task the models belong to.
        originals: the models to unlearn (left untouched; methods work on a copy).
        forget: [K, n_train] bool, model k's forget set (rows differ only for shadow models).
        trained: [K, n_train] bool, what each original was trained on (all True normally).
        keys: per-model random keys, for each method's own randomness (sampling, labels).
        device: ``auto``, ``cpu`` or ``cuda``.
        context: extra inputs some methods need, e.g. ``predictor`` (attribution backend
            for DMM / DM-Direct) or ``oracle_logits`` (Oracle Matching).
    """

    task: Task
    originals: Ensemble
    forget: np.ndarray
    trained: np.ndarray
    keys: Sequence[int]
    device: str = "auto"
    context: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        k, n = len(self.originals), self.task.data.n_train
        self.forget = np.asarray(self.forget, dtype=bool)
        self.trained = np.asarray(self.trained, dtype=bool)
        if self.forget.shape != (k, n) or self.trained.shape != (k, n):
            raise ValueError(f"forget and trained masks must be [{k}, {n}]")
        if len(self.keys) != k:
            raise ValueError(f"need {k} keys, got {len(self.keys)}")
        if (self.forget & ~self.trained).any():
            raise ValueError("a model is asked to forget an example it was not trained on")

    @classmethod
    def single(cls, task: Task, originals: Ensemble, forget: np.ndarray,
               keys: Sequence[int] | None = None, **kwargs: Any) -> Problem:
        """The same forget set (indices) for every model, all trained on the full set."""
        k, n = len(originals), task.data.n_train
        mask = np.zeros((k, n), dtype=bool)
        mask[:, np.asarray(forget, dtype=np.int64)] = True
        keys = list(range(k)) if keys is None else keys
        return cls(task, originals, mask, np.ones((k, n), dtype=bool), keys, **kwargs)

    @property
    def retain(self) -> np.ndarray:
        """[K, n_train] bool: trained on and not forgotten."""
        return self.trained & ~self.forget

    @property
    def k(self) -> int:
        return len(self.originals)


@dataclass
class Result:
    """What a method returns.

    ``logits`` are [K, points, classes] on all points (train, then validation);
    ``examples`` is the number of example gradient computations per model, and
    ``compute_fraction`` divides it by one retraining's (:meth:`dmm.recipe.Recipe.examples`).
    """

    method: str
    hparams: dict[str, Any]
    ensemble: Ensemble | None
    logits: torch.Tensor
    seconds: float
    examples: float
    compute_fraction: float
    diverged: np.ndarray


class Method(ABC):
    """Base of every unlearning algorithm; subclasses are dataclasses of hyperparameters."""

    name: ClassVar[str]
    uses_oracles: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            METHODS[cls.name] = cls

    def hparams(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]

    @abstractmethod
    def run(self, problem: Problem, ensemble: Ensemble) -> float:
        """Unlearn in place on ``ensemble`` (a copy of the originals); return the number of
        example gradient computations per model."""

    def __call__(self, problem: Problem) -> Result:
        data = problem.task.data
        before = (problem.originals.predict(data.x_val).argmax(-1) == data.y_val).float().mean(1)
        t0 = time.perf_counter()
        ensemble = copy.deepcopy(problem.originals)
        examples = self.run(problem, ensemble)
        logits = self.predict(problem, ensemble)
        seconds = time.perf_counter() - t0
        retrain = problem.task.recipe.examples(problem.task.data.n_train)
        return Result(self.name, self.hparams(), ensemble, logits, seconds, float(examples),
                      float(examples / retrain), diverged(ensemble, logits, problem.task, before))

    def predict(self, problem: Problem, ensemble: Ensemble) -> torch.Tensor:
        """Logits on all points after unlearning (DM-Direct overrides this)."""
        return ensemble.predict(problem.task.data.x_all)


def diverged(ensemble: Ensemble | None, logits: torch.Tensor, task: Task,
             original_val_accuracy: torch.Tensor) -> np.ndarray:
    """Per model: non-finite weights or logits, or accuracy collapse (validation accuracy
    has lost more than half of the original's margin over chance)."""
    bad = ~torch.isfinite(logits).flatten(1).all(1)
    if ensemble is not None:
        for v in ensemble.stacked_state().values():
            if v.is_floating_point():
                bad |= ~torch.isfinite(v).flatten(1).all(1)
    chance = 1.0 / task.data.n_classes
    bad |= val_accuracy(logits, task) < (chance + original_val_accuracy) / 2
    return bad.numpy()


def val_accuracy(logits: torch.Tensor, task: Task) -> torch.Tensor:
    """Per-model validation accuracy from logits on all points: [K]."""
    n = task.data.n_train
    return (logits[:, n:].argmax(-1) == task.data.y_val).float().mean(1)


def get_method(name: str, **hparams: Any) -> Method:
    """Instantiate a registered method by name with the given hyperparameters."""
    import dmm.baselines  # noqa: F401  (registers the baselines; lazy to avoid an import cycle)
    from dmm.errors import DmmError

    if name not in METHODS:
        raise DmmError(f"unknown method {name!r} (known: {', '.join(sorted(METHODS))})")
    cls = METHODS[name]
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = set(hparams) - known
    if unknown:
        raise DmmError(f"method {name!r} has no hyperparameter(s) {', '.join(sorted(unknown))}")
    return cls(**hparams)
