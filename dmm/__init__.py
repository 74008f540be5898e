"""Machine unlearning by Datamodel Matching.

The Python API in a few names (imported lazily, so ``import dmm`` is cheap)::

    task = dmm.load_task("digits")
    fleet = dmm.train_fleet(task, "original", 100, "runs/digits/fleets/originals")
    # the same, each shard a task of a Ray cluster: executor="ray", address="auto"
    masks, logits = dmm.load_fleet("runs/digits/fleets/originals")
    model, meta = dmm.load_checkpoint("model.ckpt", task)
    result = dmm.unlearn(model, task, forget=[3, 14, 15], method="dmm",
                         predictor=dmm.attribution.load("runs/digits/datamodels", task))

Subpackages: ``dmm.attribution``, ``dmm.unlearning``, ``dmm.baselines``, ``dmm.evals``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_task": "dmm.tasks",
    "Task": "dmm.tasks",
    "Ensemble": "dmm.ensemble",
    "train_ensemble": "dmm.training",
    "model_key": "dmm.recipe",
    "train_fleet": "dmm.fleet",
    "load_fleet": "dmm.fleet",
    "Fleet": "dmm.fleet",
    "load_checkpoint": "dmm.checkpoint",
    "save_checkpoint": "dmm.checkpoint",
    "read_indices": "dmm.forget_sets",
    "unlearn": "dmm.unlearning.api",
    "unlearn_checkpoint": "dmm.unlearning.api",
    "Problem": "dmm.unlearning.base",
    "Inputs": "dmm.unlearning.base",
    "method_class": "dmm.unlearning.registry",
    "configured_method": "dmm.unlearning.configs",
    "Splits": "dmm.evals.splits",
    "DmmError": "dmm.errors",
    "ExecutorSpec": "dmm.executor",
}
_SUBPACKAGES = {"attribution", "unlearning", "baselines", "evals", "tasks"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"dmm.{name}")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dmm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*_EXPORTS, *_SUBPACKAGES])
