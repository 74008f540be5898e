"""Top-1 accuracy of one model or a fleet, overall and per split."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ._arrays import as_float, as_index, as_labels


def _correct(logits: Any, labels: Any) -> np.ndarray:
    z = as_float(logits, "logits")
    if z.ndim not in (2, 3):
        raise ValueError(f"logits must be [points, classes] or [models, points, classes], "
                         f"got shape {z.shape}")
    y = as_labels(labels, "labels", z.shape[-2], z.shape[-1])
    return z.argmax(axis=-1) == y  # ties go to the lowest class index


def accuracy(logits: Any, labels: Any, mask: Any = None) -> float | np.ndarray:
    """Fraction of points whose argmax logit is the label.

    logits [P, C] gives a float; a fleet [M, P, C] gives per-model accuracies [M].
    ``mask`` ([P] or [M, P] bool) restricts each model to its own points; a model with no
    masked point gets NaN.
    """
    correct = _correct(logits, labels)
    if mask is None:
        if correct.shape[-1] == 0:
            raise ValueError("accuracy of zero points is undefined")
        acc = correct.mean(axis=-1)
    else:
        m = np.broadcast_to(np.asarray(mask, dtype=bool), correct.shape)
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = (correct & m).sum(axis=-1) / m.sum(axis=-1)
    return float(acc) if acc.ndim == 0 else acc


def accuracy_by_split(
    logits: Any, labels: Any, splits: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Per split: mean and std over models of the accuracy, and the sizes.

    ``splits`` maps a name to indices (or a boolean mask) into the points. One model
    ([P, C] logits) is a fleet of one (std 0). Empty splits give ``mean: None``.
    """
    correct = _correct(logits, labels)
    if correct.ndim == 1:
        correct = correct[None, :]
    out: dict[str, dict[str, Any]] = {}
    for name, index in splits.items():
        idx = as_index(index, name, correct.shape[1])
        if idx.size == 0:
            out[name] = {"mean": None, "std": None, "n_models": correct.shape[0], "n_points": 0}
            continue
        per_model = correct[:, idx].mean(axis=1)
        out[name] = {
            "mean": float(per_model.mean()),
            "std": float(per_model.std()),
            "n_models": int(correct.shape[0]),
            "n_points": int(idx.size),
        }
    return out
