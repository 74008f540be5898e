"""Forget sets: index files of training examples to delete (.txt, .csv, .npy, .json)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from dmm.artifacts import atomic_path
from dmm.errors import DmmError

SUFFIXES = (".txt", ".csv", ".npy", ".json")


def _parse(path: Path) -> np.ndarray:
    try:
        if path.suffix == ".npy":
            raw = np.load(path, allow_pickle=False)
        elif path.suffix == ".json":
            obj = json.loads(path.read_text())
            raw = np.asarray(obj["indices"] if isinstance(obj, dict) else obj)
        else:
            text = path.read_text().replace(",", " ").split()
            raw = np.asarray([float(t) for t in text])
    except (ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise DmmError(f"cannot read indices from {path}: {e}") from None
    return np.asarray(raw).reshape(-1)


def read_indices(path: str | Path, n_train: int) -> np.ndarray:
    """Read and validate a forget set: non-negative integers below ``n_train``.

    Duplicates are removed with a warning; an empty set is an error. Returns sorted int64.
    """
    path = Path(path)
    if not path.is_file():
        raise DmmError(f"forget set {path} does not exist")
    if path.suffix not in SUFFIXES:
        raise DmmError(f"forget set {path} must be one of {', '.join(SUFFIXES)}")
    raw = _parse(path)
    return validate_indices(raw, n_train, str(path))


def validate_indices(raw: np.ndarray, n_train: int, source: str = "forget set") -> np.ndarray:
    """Check that ``raw`` holds distinct training indices (see :func:`read_indices`)."""
    raw = np.asarray(raw)
    if raw.size == 0:
        raise DmmError(f"{source} is empty")
    if raw.dtype.kind not in "iuf" or not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)):
        raise DmmError(f"{source} must hold integer indices")
    idx = raw.astype(np.int64)
    if idx.min() < 0:
        raise DmmError(f"{source} holds a negative index ({idx.min()})")
    if idx.max() >= n_train:
        raise DmmError(
            f"{source} holds index {idx.max()}, out of range for {n_train} training examples"
        )
    uniq = np.unique(idx)
    if len(uniq) < len(idx):
        warnings.warn(f"{source}: {len(idx) - len(uniq)} duplicate indices removed", stacklevel=2)
    return uniq


def write_indices(path: str | Path, indices: np.ndarray) -> None:
    """Write indices one per line (``.txt``) or as ``.npy``/``.json``, atomically."""
    path = Path(path)
    idx = np.asarray(indices, dtype=np.int64)
    with atomic_path(path) as tmp:
        if path.suffix == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, idx)
        elif path.suffix == ".json":
            tmp.write_text(json.dumps(idx.tolist()))
        else:
            tmp.write_text("".join(f"{i}\n" for i in idx))
