"""Fleets: many models of one task, each on its own subset mask, trained shard by shard.

A fleet store is a directory::

    manifest.json   task, training-set fingerprint, kind, size, seed, recipe, versions
    masks.npy       [models, n_train] bool: which examples each model trained on
    labels.npy      [points] labels of all points (train first, then validation)
    logits.npy      [models, points, classes] float32/float16 memmap
    weights/        stacked weights per shard (safetensors), when kept
    shards/         one JSON marker per finished shard

It is built in ``<out>.partial`` and renamed to ``<out>`` when complete. Re-running the
same command after an interruption resumes: finished shards are never recomputed, and
since every model's randomness comes from its own key (:func:`dmm.training.model_key`),
the result is exactly that of an uninterrupted run.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

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
from dmm.forget_sets import validate_indices
from dmm.tasks import Task
from dmm.training import model_key, train_ensemble

FLEET_FORMAT = "dmm.fleet/2"  # 2: fixed step budget per model (dmm.recipe.Recipe.epochs)
Kind = Literal["original", "oracle", "datamodel"]
KINDS: tuple[str, ...] = ("original", "oracle", "datamodel")


def fleet_masks(kind: str, n_models: int, n_train: int, seed: int,
                forget: np.ndarray | None = None, alpha: float = 0.5) -> np.ndarray:
    """Training masks [models, n_train]: all ones (original), all but ``forget`` (oracle),
    or independent Bernoulli(``alpha``) subsets (datamodel)."""
    masks = np.ones((n_models, n_train), dtype=bool)
    if kind == "oracle":
        masks[:, forget] = False
    elif kind == "datamodel":
        for j in range(n_models):
            rng = np.random.default_rng([model_key(seed, j), 1])
            masks[j] = rng.random(n_train) < alpha
    elif kind != "original":
        raise DmmError(f"unknown fleet kind {kind!r} (one of {', '.join(KINDS)})")
    return masks


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
            raise DmmError(f"fleet {self.path} kept no weights (train it with --save-weights)")
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
            path.with_name(path.name + ".partial").exists()) else ""
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


def train_fleet(
    task: Task,
    kind: Kind,
    models: int,
    out: str | Path,
    seed: int = 0,
    forget: np.ndarray | None = None,
    alpha: float = 0.5,
    shard_size: int = 256,
    dtype: Literal["float32", "float16"] = "float32",
    save_weights: bool | None = None,
    device: str = "auto",
    overwrite: bool = False,
    reuse: bool = False,
    progress: bool = True,
) -> Fleet:
    """Train (or resume) a fleet and store every model's logits on all points.

    Args:
        task: the task whose recipe trains each model.
        kind: ``original`` (all data), ``oracle`` (all but ``forget``) or ``datamodel``
            (random subsets, each example in with probability ``alpha``).
        models: fleet size.
        out: directory of the finished store (built in ``<out>.partial``).
        seed: the fleet's seed; model j's randomness is ``model_key(seed, j)``.
        shard_size: models trained together (one vectorised ensemble) and saved at once.
        dtype: storage type of the logits.
        save_weights: keep model weights (default: yes for originals and oracles).
        overwrite: replace an existing store at ``out`` (only once the new one is done).
        reuse: if ``out`` holds a complete fleet with exactly these settings, return it
            (a cache); one with other settings is refused.
    """
    out = Path(out)
    if models < 1:
        raise DmmError(f"the number of models must be positive, got {models}")
    if shard_size < 1:
        raise DmmError(f"shard size must be positive, got {shard_size}")
    if kind not in KINDS:
        raise DmmError(f"unknown fleet kind {kind!r} (one of {', '.join(KINDS)})")
    if (kind == "oracle") != (forget is not None):
        raise DmmError("an oracle fleet needs a forget set (--forget), and only an oracle fleet")
    if forget is not None:
        forget = validate_indices(forget, task.data.n_train)
    if out.exists() and not overwrite and not reuse:
        raise DmmError(f"output {out} already exists (pass --overwrite to replace it)")
    if save_weights is None:
        save_weights = kind != "datamodel"

    n_points = task.data.n_train + task.data.n_val
    manifest = {
        "format": FLEET_FORMAT,
        **task.identity(),
        "kind": kind,
        "models": models,
        "seed": seed,
        "alpha": alpha if kind == "datamodel" else None,
        "forget": None if forget is None else forget.tolist(),
        "shard_size": shard_size,
        "dtype": dtype,
        "save_weights": save_weights,
        "recipe": vars(task.recipe).copy(),
        "n_points": n_points,
    }
    if out.exists() and reuse and not overwrite:
        fleet = load_fleet(out, task)
        if {k: fleet.manifest.get(k) for k in manifest} != manifest:
            raise DmmError(f"{out} holds a fleet with other settings than requested")
        return fleet
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        old = read_json(partial / "manifest.json") if (partial / "manifest.json").exists() else {}
        if overwrite or {k: old.get(k) for k in manifest} != manifest:
            if not overwrite:
                raise DmmError(f"{partial} holds an unfinished fleet with other settings "
                               "(pass --overwrite to discard it)")
            shutil.rmtree(partial)
    if not partial.exists():
        _start_store(partial, task, manifest, fleet_masks(kind, models, task.data.n_train, seed,
                                                          forget, alpha))

    masks = np.load(partial / "masks.npy")
    logits = np.load(partial / "logits.npy", mmap_mode="r+")
    n_shards = -(-models // shard_size)
    done = {int(p.stem) for p in (partial / "shards").glob("*.json")}
    bar = tqdm(total=models, desc=f"fleet {kind}", unit="model", disable=not progress)
    bar.update(sum(min(shard_size, models - s * shard_size) for s in done))
    x_all = task.data.x_all
    for s in range(n_shards):
        if s in done:
            continue
        ids = list(range(s * shard_size, min((s + 1) * shard_size, models)))
        t0 = time.perf_counter()
        ens = train_ensemble(task, [model_key(seed, j) for j in ids], masks[ids], device=device)
        out_logits = ens.predict(x_all)
        logits[ids[0] : ids[-1] + 1] = out_logits.numpy().astype(dtype)
        logits.flush()
        if save_weights:
            with atomic_path(partial / "weights" / f"{s:05d}.safetensors") as tmp:
                save_file({k: v.contiguous() for k, v in ens.stacked_state().items()}, str(tmp))
        val = out_logits[:, task.data.n_train :].argmax(-1) == task.data.y_val
        write_json(partial / "shards" / f"{s:05d}.json", {
            "models": [ids[0], ids[-1] + 1],
            "seconds": time.perf_counter() - t0,
            "val_accuracy": val.float().mean(1).tolist(),
        })
        bar.update(len(ids))
    bar.close()
    del logits
    final = read_json(partial / "manifest.json")
    final["complete"] = True
    write_json(partial / "manifest.json", final)
    replace_dir(partial, out)
    return load_fleet(out)


def _start_store(partial: Path, task: Task, manifest: dict, masks: np.ndarray) -> None:
    tmp = partial.with_name(partial.name + ".new")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "shards").mkdir(parents=True)
    (tmp / "weights").mkdir()
    np.save(tmp / "masks.npy", masks)
    np.save(tmp / "labels.npy", task.data.y_all.numpy())
    shape = (manifest["models"], manifest["n_points"], task.data.n_classes)
    np.lib.format.open_memmap(tmp / "logits.npy", mode="w+", dtype=manifest["dtype"],
                              shape=shape).flush()
    write_json(tmp / "manifest.json", {**manifest, "versions": versions(), "complete": False})
    tmp.rename(partial)


def shard_summary(fleet: Fleet) -> dict[str, float]:
    """Mean/std validation accuracy and seconds per model, from the shard markers."""
    accs, secs = [], 0.0
    for p in sorted((fleet.path / "shards").glob("*.json")):
        m = read_json(p)
        accs += m["val_accuracy"]
        secs += m["seconds"]
    return {"val_accuracy_mean": float(np.mean(accs)), "val_accuracy_std": float(np.std(accs)),
            "seconds_per_model": secs / max(len(accs), 1)}
