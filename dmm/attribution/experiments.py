"""Reusable steps of the attribution quality scripts: fleets and artifacts are made once
under a run directory and reused (a fleet or artifact that exists is loaded, and refused
if it was made for another task or training set)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dmm.attribution.linear import LinearAttribution
from dmm.attribution.store import load_attribution, save_attribution
from dmm.fleet import Fleet, train_fleet
from dmm.tasks import Task


def ensure_fleet(task: Task, path: Path, kind: str, models: int, seed: int,
                 forget: np.ndarray | None = None, log: Callable[[str], None] = print) -> Fleet:
    """The fleet at ``path``, trained first if it does not exist (a cache: see
    :func:`dmm.fleet.train_fleet`'s ``reuse``)."""
    if not path.exists():
        log(f"training {models} {kind} models -> {path}")
    return train_fleet(task, kind, models, path, seed=seed, forget=forget, device="cpu",
                       reuse=True, progress=False)


def ensure_attribution(task: Task, path: Path, fit: Callable[[], LinearAttribution],
                       log: Callable[[str], None] = print) -> tuple[LinearAttribution, float]:
    """Load the attribution at ``path`` or fit and save it; returns it and the fit time
    (recorded in the manifest when it was fitted earlier)."""
    if (path / "manifest.json").is_file():
        attr = load_attribution(path, task)
        return attr, float(attr.info.get("fit_seconds", float("nan")))
    log(f"fitting -> {path}")
    t0 = time.perf_counter()
    attr = fit()
    seconds = time.perf_counter() - t0
    attr.info["fit_seconds"] = seconds
    save_attribution(attr, path, task)
    return load_attribution(path, task), seconds
