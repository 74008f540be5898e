"""Tasks: a dataset, a model and a training recipe, described by ``configs/tasks/<name>.yaml``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from dmm.config import CONFIG_DIR, config_names, config_path, load_dataclass
from dmm.recipe import Recipe
from dmm.tasks.data import DataSpec, IndexedDataset, TaskData, load_data
from dmm.tasks.models import ModelSpec, build_model

TASK_DIR = CONFIG_DIR / "tasks"

__all__ = ["Task", "TaskSpec", "TaskData", "IndexedDataset", "describe_tasks", "load_task",
           "task_names"]


@dataclass
class TaskSpec:
    """The YAML schema of a task: where its data comes from, its model and its recipe."""

    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    recipe: Recipe = field(default_factory=Recipe)


@dataclass
class Task:
    """A loaded task: its name, spec and data."""

    name: str
    spec: TaskSpec
    data: TaskData

    @property
    def recipe(self) -> Recipe:
        return self.spec.recipe

    @cached_property
    def fingerprint(self) -> str:
        """Hash of the training set; artifacts made for another one are refused."""
        return self.data.fingerprint()

    def build_model(self, seed: int | None = None) -> nn.Module:
        """A freshly initialised model; ``seed`` fixes its initialisation."""
        if seed is None:
            return build_model(self.spec.model, self.data.in_shape, self.data.n_classes)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_model(self.spec.model, self.data.in_shape, self.data.n_classes)

    def identity(self) -> dict:
        """What an artifact records about the task it was made for."""
        return {
            "task": self.name,
            "fingerprint": self.fingerprint,
            "n_train": self.data.n_train,
            "n_val": self.data.n_val,
            "n_classes": self.data.n_classes,
            "model": asdict(self.spec.model),
        }


def task_names() -> list[str]:
    """Names of the tasks shipped in ``configs/tasks``."""
    return config_names("tasks")


def describe_tasks() -> dict[str, str]:
    """List the tasks shipped in configs/tasks, each with the first line of its YAML."""
    return {name: (TASK_DIR / f"{name}.yaml").read_text().splitlines()[0].lstrip("# ")
            for name in task_names()}


def load_task(name: str = "digits", data: str | Path | None = None) -> Task:
    """Load a task by name (a shipped ``configs/tasks/<name>.yaml``) or from a YAML path
    (the task's name is then the file's stem).

    ``data`` is the local directory or file for tasks that need one (cifar10, tensors).
    """
    path = config_path("tasks", name)
    spec = load_dataclass(TaskSpec, path)
    return Task(path.stem, spec, load_data(spec.data, data))
