"""Input coercion and validation shared by the evaluation modules.

Every public function in ``dmm.evals`` accepts numpy arrays, anything
``np.asarray`` understands, or torch tensors (converted with
``.detach().cpu().numpy()`` without importing torch here).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def as_numpy(x: Any, *, dtype: Any = None) -> np.ndarray:
    """Return ``x`` as a numpy array; torch tensors are detached and moved to the CPU."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def as_float(x: Any, name: str, *, ndim: int | None = None, finite: bool = True) -> np.ndarray:
    """``x`` as float64, checking its number of dimensions and (optionally) finiteness."""
    arr = as_numpy(x)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or arr.dtype == bool
    ):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {arr.shape}")
    if finite and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite values")
    return arr


def as_bool(x: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """``x`` as a boolean array of exactly ``shape``."""
    arr = as_numpy(x)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if arr.dtype != bool:
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} must be boolean (or 0/1)")
        arr = arr.astype(bool)
    return arr


def as_labels(x: Any, name: str, n_points: int, n_classes: int) -> np.ndarray:
    """Integer class labels of shape [n_points], each in [0, n_classes)."""
    arr = as_numpy(x)
    if arr.ndim != 1 or arr.shape[0] != n_points:
        raise ValueError(f"{name} must have shape ({n_points},), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
        raise ValueError(f"{name} must lie in [0, {n_classes}), got [{arr.min()}, {arr.max()}]")
    return arr.astype(np.int64, copy=False)


def as_index(x: Any, name: str, n_points: int) -> np.ndarray:
    """A split given as integer indices (or a boolean mask) into ``n_points`` points."""
    arr = as_numpy(x)
    if arr.dtype == bool:
        if arr.shape != (n_points,):
            raise ValueError(f"split {name!r}: boolean mask must have shape ({n_points},)")
        return np.flatnonzero(arr)
    if arr.ndim != 1:
        raise ValueError(f"split {name!r}: indices must be 1-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"split {name!r}: indices must be integers, got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() >= n_points:
        raise ValueError(f"split {name!r}: indices must lie in [0, {n_points})")
    return arr.astype(np.int64, copy=False)
