"""Artifacts on disk: atomic writes, JSON, manifests and training-set fingerprints.

Every artifact carries a manifest naming the task and the training-set fingerprint it
was made for; :func:`check_compatible` refuses artifacts made for another task or
training set.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from dmm.errors import DmmError


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent
    )
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it becomes ``path``.

    An existing ``path`` is replaced only after the new one is complete (``overwrite``).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise DmmError(f"output {path} already exists (pass --overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        replace_dir(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def replace_dir(src: Path, dst: Path) -> None:
    """Move directory ``src`` to ``dst``; an existing ``dst`` is replaced only then."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def to_jsonable(obj: Any) -> Any:
    """A plain-Python copy of ``obj`` for strict JSON: numpy and torch scalars and arrays to
    numbers and lists, paths to strings, NaN and infinities to None."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "detach"):  # a torch tensor (torch is not imported here)
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray | np.generic):
        return to_jsonable(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(obj: Any) -> str:
    """Strict, indented JSON of :func:`to_jsonable` (obj)."""
    return json.dumps(to_jsonable(obj), indent=2, allow_nan=False)


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented strict JSON (NaN as null), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(dumps(obj) + "\n")


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """Save an array as ``.npy``, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DmmError(f"{path} does not exist") from None
    except json.JSONDecodeError as e:
        raise DmmError(f"{path} is not valid JSON: {e}") from None


def fingerprint(*arrays: Any) -> str:
    """A short, stable hash of arrays' shapes, dtypes and contents."""
    import hashlib

    h = hashlib.sha256()
    for a in arrays:
        a = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def check_compatible(manifest: dict, task_name: str, task_fingerprint: str, what: str) -> None:
    """Refuse an artifact made for another task or training set."""
    if manifest.get("task") != task_name:
        raise DmmError(f"{what} was made for task {manifest.get('task')!r}, not {task_name!r}")
    if manifest.get("fingerprint") != task_fingerprint:
        raise DmmError(
            f"{what} was made for another training set of task {task_name!r} "
            f"(fingerprint {manifest.get('fingerprint')} != {task_fingerprint})"
        )


def versions() -> dict[str, str]:
    """Versions of the libraries that shape results, for manifests."""
    import importlib.metadata as md

    out = {}
    for pkg in ("dmm", "torch", "numpy", "pytorch-lightning"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "unknown"
    return out
