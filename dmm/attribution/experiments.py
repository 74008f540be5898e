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
from dmm.fleet import Fleet, load_fleet, train_fleet
from dmm.tasks import Task


def ensure_fleet(task: Task, path: Path, kind: str, models: int, seed: int,
                 forget: np.ndarray | None = None, log: Callable[[str], None] = print) -> Fleet:
    """Load the fleet at ``path``, training it first if it does not exist."""
    if (path / "manifest.json").is_file():
        fleet = load_fleet(path, task)
        same_forget = (forget is None) == (fleet.forget is None) and (
            forget is None or np.array_equal(np.sort(forget), np.sort(fleet.forget)))
        if len(fleet) < models or fleet.manifest["kind"] != kind or not same_forget:
            raise ValueError(f"{path} holds {len(fleet)} {fleet.manifest['kind']} models "
                             f"for another request than {models} {kind} models"
                             + ("" if same_forget else " (another forget set)"))
        return fleet
    log(f"training {models} {kind} models -> {path}")
    t0 = time.perf_counter()
    fleet = train_fleet(task, kind, models, path, seed=seed, forget=forget, device="cpu",
                        progress=False)
    log(f"  {time.perf_counter() - t0:.0f} s")
    return fleet


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
