"""The fleet store on disk, and reading it.

A fleet store is a directory::

    manifest.json   task, training-set fingerprint, kind, size, seed, recipe, versions, and
                    the checksums: sha256 of masks.npy and labels.npy, and per shard of its
                    logits rows and its weights file (with that file's size)
    masks.npy       [models, n_train] bool: which examples each model trained on
    labels.npy      [points] labels of all points (train first, then validation)
    logits.npy      [models, points, classes] float32/float16 memmap
    weights/        stacked weights per shard (safetensors), when kept
    shards/         one JSON marker per finished shard: its checksums, validation accuracy
                    and, under ``run``, where and how long it ran (the only fields that
                    differ between two builds of the same fleet)

It is built in ``<out>.partial`` by one writer at a time (``<out>.partial.lock``,
:mod:`dmm.fleet.lock`). Each shard is a job (:mod:`dmm.executor`) that may run in another
process or on another machine sharing the filesystem: :func:`write_shard` writes its
logits (``shards/<shard>.npy``), its weights and, last, its marker, each atomically; the
writer (:class:`FleetWriter`) then copies the logits into ``logits.npy``, checked against
the marker's checksum. A shard counts as done once its marker exists, so an interrupted
build resumes from its finished shards; the complete store is renamed to ``<out>``, so a
reader never sees a half-written one.

Reading (:func:`load_fleet`) checks, every time, that every file is there with exactly its
expected size (a truncated shard is named at once, for the cost of a few ``stat`` calls)
and, by default, the sha256 of every shard's logits rows, of masks.npy and labels.npy: on
the first open of those files in a process only (a cache keyed by their inode, size and
modification time), so that a benchmark that opens its fleets many times pays once. That
costs about one more read of the logits (sha256 hashes 0.2 GB/s on one loaded core of the
development machine, a 3,000-model digits fleet in about a second), and every use of a
fleet reads all its logits anyway; a damaged store then fails where it is opened, naming
the shard, instead of giving wrong numbers later. Weights files, read only when models are
loaded, are hashed then (:meth:`Fleet.ensemble`), once per process too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
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
    save_npy,
    versions,
    write_json,
)
from dmm.ensemble import Ensemble
from dmm.errors import DmmError
from dmm.recipe import model_key
from dmm.tasks import Task

FLEET_FORMAT = "dmm.fleet/3"  # 3: shard checksums in the manifest; 2: fixed step budget
Kind = Literal["original", "oracle", "datamodel", "subset"]
KINDS: tuple[str, ...] = ("original", "oracle", "datamodel", "subset")
_MARKER = re.compile(r"^(\d+)\.json$")
_VERIFIED: set[tuple] = set()  # files of this process already hashed: (path, inode, ...)


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

    def __reduce__(self) -> tuple:
        """Sent to another process as its path (the store is on a shared filesystem)."""
        return load_fleet, (self.path,)

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
        """Load the models (weights must have been kept) as one :class:`Ensemble`; each
        shard's weights file is checked against its checksum (once per process)."""
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
                file = weights_path(self.path, s)
                if "shards" in self.manifest:
                    _check_hash(file, self.manifest["shards"][s]["weights_sha256"],
                                partial(file_sha256, file), self._shard_name(s))
                parts[s] = load_file(str(file))
            for name, v in parts[s].items():
                state.setdefault(name, []).append(v[j - s * size])
        stacked = {k: torch.stack(v) for k, v in state.items()}
        return Ensemble.from_stacked(task.build_model, stacked)

    def _shard_name(self, s: int) -> str:
        return shard_name(self.path, s, *self.manifest["shards"][s]["models"])


def shard_name(path: Path, s: int, start: int, stop: int) -> str:
    """How errors name a shard: ``fleet DIR: shard 3 (models 6-7)``."""
    return f"fleet {path}: shard {s} (models {start}-{stop - 1})"


def weights_path(root: Path, s: int) -> Path:
    return root / "weights" / f"{s:05d}.safetensors"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def rows_sha256(rows: np.ndarray) -> str:
    """sha256 of an array's bytes in C order (a shard's logits rows), block by block."""
    h = hashlib.sha256()
    step = max(1, (1 << 24) // max(rows[:1].nbytes, 1))
    for i in range(0, len(rows), step):
        h.update(np.ascontiguousarray(rows[i : i + step]).data)
    return h.hexdigest()


def _stat_key(path: Path) -> tuple:
    st = path.stat()
    return str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns


def _check_hash(path: Path, expected: str | None, digest: Any, what: str,
                extra: Any = None) -> None:
    """Compare ``digest()`` with ``expected``, unless this file version was checked."""
    key = (*_stat_key(path), extra, expected)
    if key in _VERIFIED:
        return
    if digest() != expected:
        raise DmmError(f"{what} is damaged: {path.name} does not match its checksum in the "
                       "manifest (train it again with --overwrite)")
    _VERIFIED.add(key)


def load_fleet(path: str | Path, task: Task | None = None, verify: bool = True) -> Fleet:
    """Open a complete fleet store; with ``task``, refuse one made for another training set.

    Every file's size is checked; with ``verify`` (default) also the checksums of every
    shard's logits, masks and labels, once per process (see the module docstring). A
    truncated or altered shard is a :class:`DmmError` naming it. (A store written by other
    means than :class:`FleetWriter`, without checksums in its manifest, gets the size
    checks only.)"""
    path = Path(path)
    if not (path / "manifest.json").is_file():
        hint = " (it is unfinished: re-run the same command to resume)" if (
            partial_path(path).exists()) else ""
        raise DmmError(f"{path} is not a fleet store{hint}")
    manifest = read_json(path / "manifest.json")
    if manifest.get("format") != FLEET_FORMAT:
        raise DmmError(f"{path} is not a fleet store of this dmm (format "
                       f"{manifest.get('format')!r}, expected {FLEET_FORMAT!r}; train it again)")
    if task is not None:
        check_compatible(manifest, task.name, task.fingerprint, f"fleet {path}")
    masks = _small(path, "masks.npy", manifest, verify)
    labels = _small(path, "labels.npy", manifest, verify)
    logits = _logits(path, manifest)
    for s, shard in enumerate(manifest.get("shards", [])):
        what = shard_name(path, s, *shard["models"])
        if shard["weights_bytes"] is not None:
            file = weights_path(path, s)
            size = file.stat().st_size if file.is_file() else None
            if size != shard["weights_bytes"]:
                raise DmmError(f"{what} is damaged: {file.name} has "
                               f"{'no file' if size is None else f'{size} bytes'}, expected "
                               f"{shard['weights_bytes']}")
        if verify:
            a, b = shard["models"]
            _check_hash(path / "logits.npy", shard["logits_sha256"],
                        lambda a=a, b=b: rows_sha256(logits[a:b]), what, (a, b))
    return Fleet(path, manifest, masks, logits, labels)


def _small(path: Path, name: str, manifest: dict, verify: bool) -> np.ndarray:
    file = path / name
    if not file.is_file():
        raise DmmError(f"fleet {path} is damaged: {name} is missing")
    expected = manifest.get("checksums", {}).get(name)
    if verify and expected is not None:
        _check_hash(file, expected, lambda: file_sha256(file), f"fleet {path}")
    try:
        return np.load(file)
    except (ValueError, OSError) as e:
        raise DmmError(f"fleet {path} is damaged: {name}: {e}") from None


def _logits(path: Path, manifest: dict) -> np.ndarray:
    """logits.npy as a memmap, after checking its header and its size: a short file names
    the first shard whose rows it cuts."""
    file = path / "logits.npy"
    try:
        with open(file, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if major == 1
                    else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read(f)
            offset = f.tell()
    except (OSError, ValueError) as e:
        raise DmmError(f"fleet {path} is damaged: logits.npy has no valid header ({e})") from None
    if shape[:2] != (manifest["models"], manifest["n_points"]) or dtype != manifest["dtype"]:
        raise DmmError(f"fleet {path} is damaged: logits.npy holds {dtype} {shape}, not the "
                       f"manifest's {manifest['dtype']} [{manifest['models']}, "
                       f"{manifest['n_points']}, ...]")
    row = int(np.prod(shape[1:])) * np.dtype(dtype).itemsize
    size = file.stat().st_size
    if size != offset + row * shape[0]:
        for s, shard in enumerate(manifest.get("shards", [])):
            if offset + row * shard["models"][1] > size:
                raise DmmError(f"{shard_name(path, s, *shard['models'])} is damaged: "
                               f"logits.npy is truncated ({size} of "
                               f"{offset + row * shape[0]} bytes)")
        raise DmmError(f"fleet {path} is damaged: logits.npy has {size} bytes, expected "
                       f"{offset + row * shape[0]}")
    return np.load(file, mmap_mode="r")


def partial_path(out: Path) -> Path:
    """Where the store for ``out`` is built."""
    return out.with_name(out.name + ".partial")


def lock_path(out: Path) -> Path:
    """The lock of the one process that builds ``out``."""
    return out.with_name(out.name + ".partial.lock")


def write_shard(partial: Path, shard: int, start: int, logits: np.ndarray,
                state: dict[str, torch.Tensor] | None, val_accuracy: list[float],
                run: dict[str, Any]) -> dict[str, Any]:
    """One finished shard (models ``start`` on) into the store being built in ``partial``:
    its logits, its weights (when kept) and, last, its marker; each file atomically.
    Returns the marker."""
    dtype = read_json(partial / "manifest.json")["dtype"]
    logits = np.ascontiguousarray(logits.astype(dtype))
    save_npy(partial / "shards" / f"{shard:05d}.npy", logits)
    weights = None
    if state is not None:
        with atomic_path(weights_path(partial, shard)) as tmp:
            save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
        weights = weights_path(partial, shard)
    marker = {"models": [start, start + len(logits)], "logits_sha256": rows_sha256(logits),
              "weights_sha256": None if weights is None else file_sha256(weights),
              "weights_bytes": None if weights is None else weights.stat().st_size,
              "val_accuracy": val_accuracy, "run": run}
    write_json(partial / "shards" / f"{shard:05d}.json", marker)
    return marker


def record_attempt(partial: Path, shard: int) -> dict[str, Any]:
    """Note that a shard starts (here, now); returns the ``run`` fields of its marker so far,
    with ``attempts``: how many times it has started."""
    file = partial / "attempts" / f"{shard:05d}.jsonl"
    run = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    file.parent.mkdir(exist_ok=True)
    with open(file, "a") as f:
        f.write(json.dumps(run) + "\n")
    return {**run, "attempts": len(file.read_text().splitlines())}


class FleetWriter:
    """A fleet store under construction in ``<out>.partial`` (its caller holds the lock).

    Opening it creates the store (masks, labels, an empty logits memmap and the manifest)
    or resumes one with exactly the same manifest, merging finished shards' logits that
    were not merged yet; :meth:`merge` copies one finished shard's logits into
    ``logits.npy`` and :meth:`finish` renames the complete store to ``out``.
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
        for s in self._markers():
            if (self.partial / "shards" / f"{s:05d}.npy").exists():
                self.merge(s, redo_if_damaged=True)

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

    def _markers(self) -> list[int]:
        return sorted(int(m.group(1)) for p in (self.partial / "shards").iterdir()
                      if (m := _MARKER.match(p.name)))

    def marker(self, s: int) -> dict[str, Any]:
        return read_json(self.partial / "shards" / f"{s:05d}.json")

    def done(self) -> set[int]:
        """The shards already written (their weights file, when kept, of the right size)."""
        out = set()
        for s in self._markers():
            size = self.marker(s)["weights_bytes"]
            file = weights_path(self.partial, s)
            if size is None or (file.is_file() and file.stat().st_size == size):
                out.add(s)
        return out

    def merge(self, s: int, redo_if_damaged: bool = False) -> None:
        """Copy finished shard ``s``'s logits into ``logits.npy`` (checked against its
        marker), then drop its own file. A damaged one is an error, or, with
        ``redo_if_damaged`` (resuming), forgotten so that the shard runs again."""
        marker, file = self.marker(s), self.partial / "shards" / f"{s:05d}.npy"
        a, b = marker["models"]
        try:
            rows = np.load(file)
            ok = rows.shape[0] == b - a and rows_sha256(rows) == marker["logits_sha256"]
        except (OSError, ValueError):
            ok = False
        if not ok:
            if not redo_if_damaged:
                raise DmmError(f"{shard_name(self.out, s, a, b)}: its logits file does not "
                               "match its checksum")
            (self.partial / "shards" / f"{s:05d}.json").unlink()
            file.unlink(missing_ok=True)
            return
        self.logits[a:b] = rows
        self.logits.flush()
        file.unlink()

    def finish(self) -> Fleet:
        """Record the checksums, mark the store complete and move it to ``out``
        (replacing an old one)."""
        del self.logits
        n = -(-self.manifest["models"] // self.manifest["shard_size"])
        shards = [self.marker(s) for s in range(n)]
        for tmp in [*self.partial.glob("shards/.*"), *self.partial.glob("weights/.*"),
                    *self.partial.glob("shards/*.npy")]:
            tmp.unlink()  # what killed attempts left behind (all shards are merged)
        shutil.rmtree(self.partial / "attempts", ignore_errors=True)
        keep = ("models", "logits_sha256", "weights_sha256", "weights_bytes")
        write_json(self.partial / "manifest.json", {
            **self.manifest, "complete": True,
            "checksums": {name: file_sha256(self.partial / name)
                          for name in ("masks.npy", "labels.npy")},
            "shards": [{k: m[k] for k in keep} for m in shards]})
        replace_dir(self.partial, self.out)
        return load_fleet(self.out)


def shard_summary(fleet: Fleet) -> dict[str, float]:
    """Mean/std validation accuracy and seconds per model, from the shard markers."""
    accs, secs = [], 0.0
    for p in sorted(p for p in (fleet.path / "shards").iterdir() if _MARKER.match(p.name)):
        m = read_json(p)
        accs += m["val_accuracy"]
        secs += m["run"]["seconds"]
    return {"val_accuracy_mean": float(np.mean(accs)), "val_accuracy_std": float(np.std(accs)),
            "seconds_per_model": secs / max(len(accs), 1)}
