"""Tasks: a dataset, a model and a training recipe, described by a YAML file: a shipped
``configs/tasks/<name>.yaml`` by name, or any path. Data and model may be your own, by
import path (``class_path`` and ``init_args``; see :mod:`dmm.tasks.data` and
:mod:`dmm.tasks.models`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dmm.config import CONFIG_DIR, config_names, config_path, load_yaml, one_line, parse_dataclass
from dmm.ensemble import Ensemble
from dmm.errors import DmmError
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


IMPORT_KEYS = ("class_path", "init_args")


def _import_entry(section: str, value: dict[str, Any], source: str) -> dict[str, Any]:
    """A task's ``data`` or ``model`` given by import path, checked. (jsonargparse reads a
    ``class_path`` key as a subclass of the spec's own class, so these entries are read
    here and the spec's other fields are validated by jsonargparse.)"""
    where = f"invalid config {source}: {section}"
    if "class_path" not in value:
        raise DmmError(f"{where}: init_args need a class_path")
    extra = sorted(set(value) - set(IMPORT_KEYS))
    if extra:
        raise DmmError(f"{where}: with a class_path, give only class_path and init_args "
                       f"(not {', '.join(map(str, extra))})")
    path, args = value["class_path"], value.get("init_args") or {}
    if not isinstance(path, str) or not isinstance(args, dict):
        raise DmmError(f"{where}: class_path must be an import path and init_args a mapping")
    return {"class_path": path, "init_args": args}


def load_spec(path: str | Path) -> TaskSpec:
    """A task YAML file as a :class:`TaskSpec`."""
    obj = load_yaml(path)
    imported = {section: _import_entry(section, obj.pop(section), str(path))
                for section in ("data", "model")
                if isinstance(obj.get(section), dict) and set(obj[section]) & set(IMPORT_KEYS)}
    spec = parse_dataclass(TaskSpec, obj, str(path))
    if "data" in imported:
        spec.data = DataSpec(**imported["data"])
    if "model" in imported:
        spec.model = ModelSpec(**imported["model"])
    return spec


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
            "model": self.spec.model.identity(),
        }

    def check_model(self) -> None:
        """Refuse (one line) a model that does not map a batch of the task's inputs to
        ``[batch, n_classes]`` logits, or one without buffers that does not run under
        ``torch.func.vmap`` (how such models train as a fleet). The random state is kept."""
        name = self.spec.model.resolved()[0]
        x, c = self.data.x_train[:2], self.data.n_classes
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            model = self.build_model().eval()
            try:
                out = model(x)
            except Exception as e:  # noqa: BLE001  (whatever the user's forward raises)
                raise DmmError(f"model {name} fails on a batch of the task's inputs "
                               f"{list(x.shape)}: {one_line(e)}") from None
            shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            if shape != [len(x), c]:
                raise DmmError(f"model {name} outputs {shape} for a batch of the task's "
                               f"inputs {list(x.shape)}, not [{len(x)}, {c}] (one column "
                               f"per class of task {self.name!r})")
            if next(model.buffers(), None) is None:
                try:
                    Ensemble([model]).eval()(x[None])
                except Exception as e:  # noqa: BLE001
                    raise DmmError(f"model {name} has no buffers but does not run under "
                                   f"torch.func.vmap (fleets of such models train "
                                   f"vectorised): {one_line(e)}") from None


def task_names() -> list[str]:
    """Names of the tasks shipped in ``configs/tasks``."""
    return config_names("tasks")


def describe_tasks() -> dict[str, str]:
    """List the tasks shipped in configs/tasks, each with the first line of its YAML."""
    return {name: (TASK_DIR / f"{name}.yaml").read_text().splitlines()[0].lstrip("# ")
            for name in task_names()}


def load_task(name: str = "digits", data: str | Path | None = None) -> Task:
    """Load a task by name (a shipped ``configs/tasks/<name>.yaml``) or from a YAML path
    (the task's name is then the file's stem), and check its model on its inputs.

    ``data`` is the local directory or file for tasks that need one (cifar10, tensors).
    """
    path = config_path("tasks", name)
    spec = load_spec(path)
    task = Task(path.stem, spec, load_data(spec.data, data))
    task.check_model()
    return task
