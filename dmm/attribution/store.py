"""Attribution artifacts on disk: one directory per fitted backend.

::

    manifest.json   format, task, training-set fingerprint, backend, solver, fleet,
                    regularisation, scale s and how it was fitted, LDS, versions
    intercept.npy   [points, classes] b(x)
    mask_mean.npy   [n_train] the mask centre
    coef.npy        [r, points, classes] float32 (read as a memmap: only needed rows load)
    basis.npy       [n_train, r] when beta = basis @ coef (ridge)

A group-aware backend (:class:`~dmm.attribution.group.GroupAttribution`, ``backend:
group``) keeps its ridge datamodels as such an artifact in ``ridge/`` and its own arrays
(beta, gamma, neighbours, weights, train_labels, rho, margin_mean, margin_std) as
``<name>.npy``; its manifest also holds abar, s, kappa, alpha_min, the spread's (a, b),
amplify (c), blend (lambda) and the model revision (an artifact without amplify and blend,
made before them, loads with both 0: the model it was fitted as).

Written atomically (built in a temporary directory, renamed when complete); loading
refuses an artifact made for another task or training set.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dmm.artifacts import atomic_dir, check_compatible, read_json, versions, write_json
from dmm.attribution.group import ARRAYS, MODEL_REVISION, GroupAttribution
from dmm.attribution.linear import LinearAttribution
from dmm.errors import DmmError
from dmm.tasks import Task

ATTRIBUTION_FORMAT = "dmm.attribution/1"


def save_attribution(attr: LinearAttribution | GroupAttribution, path: str | Path, task: Task,
                     overwrite: bool = False) -> Path:
    """Write ``attr`` for ``task`` to the directory ``path`` (atomically)."""
    path = Path(path)
    if isinstance(attr, GroupAttribution):
        return _save_group(attr, path, task, overwrite)
    if (attr.n_train, attr.n_points) != (task.data.n_train, task.data.n_train + task.data.n_val):
        raise DmmError(f"attribution shape ({attr.n_train} train, {attr.n_points} points) does "
                       f"not fit task {task.name!r}")
    manifest = {
        "format": ATTRIBUTION_FORMAT,
        **task.identity(),
        "n_points": attr.n_points,
        "rank": attr.rank,
        "factorised": attr.basis is not None,
        "scale": attr.scale,
        **attr.info,
        "versions": versions(),
    }
    with atomic_dir(path, overwrite=overwrite) as tmp:
        np.save(tmp / "intercept.npy", np.asarray(attr.intercept, dtype=np.float32))
        np.save(tmp / "mask_mean.npy", np.asarray(attr.mask_mean, dtype=np.float32))
        np.save(tmp / "coef.npy", np.asarray(attr.coef, dtype=np.float32))
        if attr.basis is not None:
            np.save(tmp / "basis.npy", np.asarray(attr.basis, dtype=np.float32))
        write_json(tmp / "manifest.json", manifest)
    return path


def _save_group(attr: GroupAttribution, path: Path, task: Task, overwrite: bool) -> Path:
    manifest = {"format": ATTRIBUTION_FORMAT, **task.identity(), "n_points": attr.n_points,
                "abar": attr.abar, "s": attr.s, "kappa": attr.kappa,
                "alpha_min": attr.alpha_min, "spread": list(attr.spread),
                "amplify": attr.amplify, "blend": attr.blend, "scale": attr.ridge.scale,
                **attr.info, "model_revision": MODEL_REVISION,
                "backend": "group", "versions": versions()}
    with atomic_dir(path, overwrite=overwrite) as tmp:
        save_attribution(attr.ridge, tmp / "ridge", task)
        for name in ARRAYS:
            value = getattr(attr, name)
            if value is not None:
                np.save(tmp / f"{name}.npy", np.asarray(value))
        write_json(tmp / "manifest.json", manifest)
    return path


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of an attribution artifact (checking that it is one)."""
    path = Path(path)
    if not (path / "manifest.json").is_file():
        raise DmmError(f"{path} is not an attribution artifact (no manifest.json)")
    manifest = read_json(path / "manifest.json")
    if manifest.get("format") != ATTRIBUTION_FORMAT:
        raise DmmError(f"{path} is not an attribution artifact (format "
                       f"{manifest.get('format')!r})")
    return manifest


def load_attribution(path: str | Path, task: Task) -> LinearAttribution | GroupAttribution:
    """Open an attribution artifact for ``task``; refuse one made for another task or
    training set. coef is memory-mapped (read-only)."""
    path = Path(path)
    manifest = read_manifest(path)
    check_compatible(manifest, task.name, task.fingerprint, f"attribution {path}")
    if manifest.get("backend") == "group":
        arrays = {name: np.load(path / f"{name}.npy") for name in ARRAYS
                  if (path / f"{name}.npy").is_file()}
        skip = {"format", "task", "fingerprint", "n_train", "n_val", "n_classes", "model",
                "n_points", "abar", "s", "kappa", "alpha_min", "spread", "amplify", "blend",
                "scale", "model_revision", "versions"}
        return GroupAttribution(load_attribution(path / "ridge", task), abar=manifest["abar"],
                                s=manifest["s"], kappa=manifest["kappa"],
                                alpha_min=manifest.get("alpha_min", 0.0),
                                spread=tuple(manifest["spread"]),
                                amplify=manifest.get("amplify", 0.0),
                                blend=manifest.get("blend", 0.0),
                                info={k: v for k, v in manifest.items() if k not in skip},
                                **arrays)
    basis = np.load(path / "basis.npy") if manifest.get("factorised") else None
    skip = {"format", "task", "fingerprint", "n_train", "n_val", "n_classes", "model",
            "n_points", "rank", "factorised", "scale", "versions"}
    return LinearAttribution(
        intercept=np.load(path / "intercept.npy"),
        mask_mean=np.load(path / "mask_mean.npy"),
        coef=np.load(path / "coef.npy", mmap_mode="r"),
        basis=basis,
        scale=float(manifest["scale"]),
        info={k: v for k, v in manifest.items() if k not in skip},
    )


def cached_attribution(path: str | Path, task: Task, fit: Callable[[], LinearAttribution],
                       log: Callable[[str], None] = print) -> LinearAttribution:
    """The attribution at ``path``, or ``fit()`` saved there first (its fit time recorded in
    the manifest as ``fit_seconds``); one made for another task is refused."""
    path = Path(path)
    if (path / "manifest.json").is_file():
        return load_attribution(path, task)
    log(f"fitting -> {path}")
    t0 = time.perf_counter()
    attr = fit()
    attr.info["fit_seconds"] = time.perf_counter() - t0
    save_attribution(attr, path, task)
    return load_attribution(path, task)


def update_scale(path: str | Path, task: Task, scale: float, scale_fit: dict[str, Any]) -> None:
    """Record a newly fitted DM-Direct scale s (and how it was fitted) in an artifact's
    manifest; the weights are untouched."""
    path = Path(path)
    manifest = read_manifest(path)
    check_compatible(manifest, task.name, task.fingerprint, f"attribution {path}")
    write_json(path / "manifest.json", {**manifest, "scale": float(scale),
                                        "scale_fit": scale_fit})


load = load_attribution
