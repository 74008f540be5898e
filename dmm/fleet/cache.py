"""Fleets kept by name under one folder and reused: the cache of the benchmark and the
measurement scripts (a fleet that exists with the requested settings is loaded, one
with other settings is refused; see :func:`dmm.fleet.train_fleet`'s ``reuse``). A fleet
that another process is training is waited for, then reused."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dmm.executor import ExecutorSpec
from dmm.fleet.store import Fleet
from dmm.fleet.train import train_fleet
from dmm.tasks import Task


class FleetCache:
    """Fleets of one task under ``root``, trained on first use.

    ``timings`` records the seconds spent training each fleet in this process (cached
    fleets cost nothing and are not listed); ``executor`` says where their shards train.
    """

    def __init__(self, root: str | Path, task: Task, shard_size: int = 256,
                 device: str = "auto", log: Callable[[str], None] = print,
                 progress: bool = True, executor: ExecutorSpec | None = None):
        self.root, self.task, self.shard_size = Path(root), task, shard_size
        self.device, self.log, self.progress = device, log, progress
        self.executor = executor or ExecutorSpec()
        self.timings: dict[str, float] = {}

    def get(self, name: str, kind: str, models: int, seed: int,
            forget: np.ndarray | None = None, masks: np.ndarray | None = None,
            save_weights: bool | None = None,
            alpha_range: tuple[float, float] | None = None) -> Fleet:
        """The fleet ``name``, trained first if it is not there yet."""
        path = self.root / name
        existed = path.exists()
        t0 = time.perf_counter()
        if not existed:
            self.log(f"training {models} {kind} models -> {path}")
        fleet = train_fleet(self.task, kind, models, path, seed=seed, forget=forget,
                            masks=masks, alpha_range=alpha_range, shard_size=self.shard_size,
                            save_weights=save_weights,
                            device=self.device, reuse=True, wait=True,
                            progress=self.progress, **self.executor.fleet_args())
        if not existed:
            self.timings[f"fleet {name}"] = time.perf_counter() - t0
        return fleet
