"""Retrain from scratch, at the full budget (the oracle itself) or a reduced one.

Definition implemented: each model is retrained on its retain set with the task's recipe
and a fresh key derived from its own (new initialisation, data order and augmentation),
for ``round(fraction · epochs)`` epochs (at least 1) of the recipe's fixed step budget
(:class:`dmm.recipe.Recipe`), so its cost is that fraction of one retraining. A reduced
budget keeps the schedule's shape: a triangular schedule's peak moves to the same
fraction of the run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from dmm.ensemble import Ensemble
from dmm.recipe import Recipe
from dmm.training import model_key, train_ensemble
from dmm.unlearning.base import Method, Problem
from dmm.unlearning.finetune import salt


def reduced_recipe(recipe: Recipe, fraction: float) -> Recipe:
    """The recipe run for ``fraction`` of its epochs, with its schedule compressed to fit."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    epochs = max(1, round(fraction * recipe.epochs))
    scale = epochs / recipe.epochs
    return dataclasses.replace(recipe, epochs=epochs, peak_epoch=recipe.peak_epoch * scale)


@dataclass
class Retrain(Method):
    """Retraining on the retain set.

    Args:
        fraction: share of the recipe's epochs to train for (1 = full retraining).
    """

    name = "retrain"
    reference = True  # it is retraining, the reference itself
    select_each_point = True  # each budget is reported, not selected

    fraction: float = 1.0

    def label(self) -> str:
        return f"{self.name}@{self.fraction:g}"

    def run(self, problem: Problem, ensemble: Ensemble) -> float:
        recipe = reduced_recipe(problem.task.recipe, self.fraction)
        keys = [model_key(k, salt("retrain")) for k in problem.keys]
        fresh = train_ensemble(problem.task, keys, problem.retain, recipe, problem.device)
        ensemble.load_state_dict(fresh.state_dict())
        return float(recipe.examples(problem.task.data.n_train))
