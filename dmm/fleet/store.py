"""The fleet store on disk, and reading it.

A fleet store is a directory::

    manifest.json   task, training-set fingerprint, kind, size, seed, recipe, versions
    masks.npy       [models, n_train] bool: which examples each model trained on
    labels.npy      [points] labels of all points (train first, then validation)
    logits.npy      [models, points, classes] float32/float16 memmap
    weights/        stacked weights per shard (safetensors), when kept
    shards/         one JSON marker per finished shard

A :class:`FleetWriter` builds it in ``<out>.partial`` shard by shard and renames it to
``<out>`` when complete, so that an interrupted build resumes from its finished shards
and a reader never sees a half-written store.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from dmm.artifacts import (
    atomic_path,
    check_compatible,
    read_json,
    replace_dir,
    versions,
    write_json,
)
from dmm.ensemble import Ensemble
from dmm.errors import DmmError
from dmm.recipe import model_key
from dmm.tasks import Task

FLEET_FORMAT = "dmm.fleet/2"  # 2: fixed step budget per model (dmm.recipe.Recipe.epochs)
Kind = Literal["original", "oracle", "datamodel", "subset"]
KINDS: tuple[str, ...] = ("original", "oracle", "datamodel", "subset")


@dataclass
class Fleet:
    """A fleet store opened for reading. Unpacks as ``masks, logits = fleet``.

    ``masks`` is [models, n_train] bool; ``logits`` is [models, points, classes] (a
    read-only memmap), train points first, then validation; ``labels`` is [points].
    """

    path: Path
    manifest: dict
    masks: np.ndarray
    logits: np.ndarray
    labels: np.ndarray

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.masks, self.logits))

    def __len__(self) -> int:
        return len(self.masks)

    @property
    def n_train(self) -> int:
        return self.manifest["n_train"]

    @property
    def keys(self) -> list[int]:
        """Each model's random key."""
        return [model_key(self.manifest["seed"], j) for j in range(len(self))]

    @property
    def forget(self) -> np.ndarray | None:
        f = self.manifest.get("forget")
        return None if f is None else np.asarray(f, dtype=np.int64)

    def ensemble(self, task: Task, indices: Sequence[int] | None = None) -> Ensemble:
        """Load the models (weights must have been kept) as one :class:`Ensemble`."""
        check_compatible(self.manifest, task.name, task.fingerprint, f"fleet {self.path}")
        if not self.manifest["save_weights"]:
            raise DmmError(f"fleet {self.path} kept no weights (train it with --save_weights)")
        size = self.manifest["shard_size"]
        wanted = list(range(len(self))) if indices is None else list(indices)
        parts: dict[int, dict[str, torch.Tensor]] = {}
        state: dict[str, list[torch.Tensor]] = {}
        for j in wanted:
            s = j // size
            if s not in parts:
                parts[s] = load_file(str(self.path / "weights" / f"{s:05d}.safetensors"))
            for name, v in parts[s].items():
                state.setdefault(name, []).append(v[j - s * size])
        stacked = {k: torch.stack(v) for k, v in state.items()}
        return Ensemble.from_stacked(task.build_model, stacked)


def load_fleet(path: str | Path, task: Task | None = None) -> Fleet:
    """Open a complete fleet store; with ``task``, refuse one made for another training set."""
    path = Path(path)
    if not (path / "manifest.json").is_file():
        hint = " (it is unfinished: re-run the same command to resume)" if (
            partial_path(path).exists()) else ""
        raise DmmError(f"{path} is not a fleet store{hint}")
    manifest = read_json(path / "manifest.json")
    if manifest.get("format") != FLEET_FORMAT:
        raise DmmError(f"{path} is not a fleet store (format {manifest.get('format')!r})")
    if task is not None:
        check_compatible(manifest, task.name, task.fingerprint, f"fleet {path}")
    return Fleet(
        path, manifest, np.load(path / "masks.npy"),
        np.load(path / "logits.npy", mmap_mode="r"), np.load(path / "labels.npy"),
    )


def partial_path(out: Path) -> Path:
    """Where the store for ``out`` is built."""
    return out.with_name(out.name + ".partial")


class FleetWriter:
    """A fleet store under construction in ``<out>.partial``.

    Opening it creates the store (masks, labels, an empty logits memmap and the manifest)
    or resumes one with exactly the same manifest; :meth:`write_shard` records one shard
    and :meth:`finish` renames the complete store to ``out``.
    """

    def __init__(self, out: Path, manifest: dict[str, Any], masks: np.ndarray,
                 labels: np.ndarray, n_classes: int, overwrite: bool = False):
        self.out, self.partial = out, partial_path(out)
        if self.partial.exists():
            old = read_json(self.partial / "manifest.json") if (
                self.partial / "manifest.json").exists() else {}
            if overwrite or {k: old.get(k) for k in manifest} != manifest:
                if not overwrite:
                    raise DmmError(f"{self.partial} holds an unfinished fleet with other "
                                   "settings (pass --overwrite to discard it)")
                shutil.rmtree(self.partial)
        if not self.partial.exists():
            self._start(manifest, masks, labels, n_classes)
        self.masks = np.load(self.partial / "masks.npy")
        self.logits = np.load(self.partial / "logits.npy", mmap_mode="r+")
        self.manifest = read_json(self.partial / "manifest.json")

    def _start(self, manifest: dict, masks: np.ndarray, labels: np.ndarray,
               n_classes: int) -> None:
        tmp = self.partial.with_name(self.partial.name + ".new")
        if tmp.exists():
            shutil.rmtree(tmp)
        (tmp / "shards").mkdir(parents=True)
        (tmp / "weights").mkdir()
        np.save(tmp / "masks.npy", masks)
        np.save(tmp / "labels.npy", labels)
        shape = (manifest["models"], manifest["n_points"], n_classes)
        np.lib.format.open_memmap(tmp / "logits.npy", mode="w+", dtype=manifest["dtype"],
                                  shape=shape).flush()
        write_json(tmp / "manifest.json", {**manifest, "versions": versions(), "complete": False})
        tmp.rename(self.partial)

    def done(self) -> set[int]:
        """The shards already written."""
        return {int(p.stem) for p in (self.partial / "shards").glob("*.json")}

    def write_shard(self, shard: int, ids: Sequence[int], logits: np.ndarray,
                    state: dict[str, torch.Tensor] | None, marker: dict[str, Any]) -> None:
        """Models ``ids`` (consecutive) of shard ``shard``: their logits, weights (when kept)
        and, last, the shard's marker (what makes the shard count as done)."""
        self.logits[ids[0] : ids[-1] + 1] = logits.astype(self.manifest["dtype"])
        self.logits.flush()
        if state is not None:
            with atomic_path(self.partial / "weights" / f"{shard:05d}.safetensors") as tmp:
                save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
        write_json(self.partial / "shards" / f"{shard:05d}.json",
                   {"models": [ids[0], ids[-1] + 1], **marker})

    def finish(self) -> Fleet:
        """Mark the store complete and move it to ``out`` (replacing an old one)."""
        del self.logits
        write_json(self.partial / "manifest.json", {**self.manifest, "complete": True})
        replace_dir(self.partial, self.out)
        return load_fleet(self.out)


def shard_summary(fleet: Fleet) -> dict[str, float]:
    """Mean/std validation accuracy and seconds per model, from the shard markers."""
    accs, secs = [], 0.0
    for p in sorted((fleet.path / "shards").glob("*.json")):
        m = read_json(p)
        accs += m["val_accuracy"]
        secs += m["seconds"]
    return {"val_accuracy_mean": float(np.mean(accs)), "val_accuracy_std": float(np.std(accs)),
            "seconds_per_model": secs / max(len(accs), 1)}
