"""The interface every unlearning algorithm shares (DMM, its variants and the baselines).

A :class:`Problem` is one deletion request applied to K models at once (a vectorised
:class:`~dmm.ensemble.Ensemble`; K = 1 for a single checkpoint), with the :class:`Inputs`
some methods need beyond the models. A :class:`Method` is a dataclass of hyperparameters
that declares what it needs (``requires``) and what it yields (``produces_model``);
calling it on a problem returns a :class:`Result` with the unlearned models, their logits
on every point, the cost and a per-model divergence flag. Subclasses register themselves
by ``name`` in :data:`METHODS`; :mod:`dmm.unlearning.registry` imports them all.
"""

from __future__ import annotations

import copy
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch

from dmm.ensemble import Ensemble
from dmm.errors import DmmError
from dmm.evals.accuracy import accuracy
from dmm.tasks import Task

if TYPE_CHECKING:
    from dmm.attribution.oracle import OraclePredictor
    from dmm.attribution.predictor import Predictor

METHODS: dict[str, type[Method]] = {}


@dataclass
class Inputs:
    """What some methods need beyond the models (see each method's ``requires``).

    Args:
        predictor: an attribution backend that predicts retrained logits
            (:func:`dmm.attribution.load`): DMM and DM-Direct.
        oracle: real retrained models (:class:`dmm.attribution.OraclePredictor`):
            Oracle Matching.
    """

    predictor: Predictor | None = None
    oracle: OraclePredictor | None = None

    DESCRIPTIONS: ClassVar[dict[str, str]] = {
        "predictor": "an attribution backend (dmm attribute; --attribution DIR)",
        "oracle": "oracle fleets retrained without the forget set (--oracles DIR)",
    }


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
        inputs: what the method needs beyond the models.
    """

    task: Task
    originals: Ensemble
    forget: np.ndarray
    trained: np.ndarray
    keys: Sequence[int]
    device: str = "auto"
    inputs: Inputs | None = None

    def __post_init__(self) -> None:
        k, n = len(self.originals), self.task.data.n_train
        self.forget = np.asarray(self.forget, dtype=bool)
        self.trained = np.asarray(self.trained, dtype=bool)
        self.inputs = self.inputs or Inputs()
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
    """Base of every unlearning algorithm; subclasses are dataclasses of hyperparameters.

    Class attributes a method sets:
        name: its registered name.
        requires: the :class:`Inputs` fields it needs.
        produces_model: False for methods that only predict outputs (DM-Direct).
        reference: True for methods that retrain or use retrained models (OM, Retrain):
            they are not compared with the methods that do without.
        select_each_point: report every grid point rather than the selected one (the
            budgets of Retrain).
    """

    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()
    produces_model: ClassVar[bool] = True
    reference: ClassVar[bool] = False
    select_each_point: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            METHODS[cls.name] = cls

    def hparams(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]

    def label(self) -> str:
        """The method's row name in benchmark tables."""
        return self.name

    def check_inputs(self, inputs: Inputs) -> None:
        """A DmmError naming every required input that is missing."""
        missing = [r for r in self.requires if getattr(inputs, r) is None]
        if missing:
            raise DmmError(f"method {self.name!r} needs "
                           + " and ".join(Inputs.DESCRIPTIONS[r] for r in missing))

    @abstractmethod
    def run(self, problem: Problem, ensemble: Ensemble) -> float:
        """Unlearn in place on ``ensemble`` (a copy of the originals); return the number of
        example gradient computations per model."""

    def __call__(self, problem: Problem) -> Result:
        self.check_inputs(problem.inputs)
        data = problem.task.data
        before = accuracy(problem.originals.predict(data.x_val), data.y_val)
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


@dataclass
class Finetune(Method):
    """The hyperparameters every fine-tuning method shares, validated.

    Per-method defaults (with their provenance) and grids are in
    ``configs/methods/<name>.yaml``.

    Args:
        lr: learning rate.
        epochs: passes over the method's main stream of examples.
        batch_size: examples per step and model.
        optimizer: ``sgd`` or ``adam`` (element-wise, so that fleets train like models).
        momentum: SGD momentum.
        weight_decay: L2 weight decay (coupled, as in torch's SGD and Adam).
    """

    lr: float = 1e-3
    epochs: int = 5
    batch_size: int = 64
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.epochs < 1 or self.batch_size < 1:
            raise DmmError(f"{self.name}: lr, epochs and batch_size must be positive")
        if self.optimizer not in ("sgd", "adam"):
            raise DmmError(f"{self.name}: optimizer must be sgd or adam, got "
                           f"{self.optimizer!r}")
        if not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise DmmError(f"{self.name}: momentum must be in [0, 1) and weight_decay >= 0")

    def optimiser(self) -> dict[str, Any]:
        """The optimiser settings, as :class:`dmm.unlearning.finetune.FinetuneModule` takes."""
        return {"optimizer": self.optimizer, "lr": self.lr, "momentum": self.momentum,
                "weight_decay": self.weight_decay}


def diverged(ensemble: Ensemble | None, logits: torch.Tensor, task: Task,
             original_val_accuracy: np.ndarray) -> np.ndarray:
    """Per model: non-finite weights or logits, or accuracy collapse (validation accuracy
    has lost more than half of the original's margin over chance)."""
    bad = ~torch.isfinite(logits).flatten(1).all(1).numpy()
    if ensemble is not None:
        for v in ensemble.stacked_state().values():
            if v.is_floating_point():
                bad |= ~torch.isfinite(v).flatten(1).all(1).numpy()
    chance = 1.0 / task.data.n_classes
    n = task.data.n_train
    finite = np.where(np.isfinite(logits[:, n:].numpy()), logits[:, n:].numpy(), 0.0)
    bad |= accuracy(finite, task.data.y_val) < (chance + original_val_accuracy) / 2
    return bad
