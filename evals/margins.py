"""Per-example outputs of a classifier: margin, cross-entropy loss, true-class confidence.

All three take logits of shape [..., points, classes] (one model, or a fleet with
any number of leading dimensions) and labels of shape [points], and return float64
arrays of shape [..., points]. They are computed in float64 with the maximum
subtracted, so large logits do not overflow and C = 2 needs no special case.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._arrays import as_float, as_labels


def _prepare(logits: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    z = as_float(logits, "logits")
    if z.ndim < 2:
        raise ValueError(f"logits must have shape [..., points, classes], got {z.shape}")
    if z.shape[-1] < 2:
        raise ValueError(f"margins need at least 2 classes, got {z.shape[-1]}")
    y = as_labels(labels, "labels", z.shape[-2], z.shape[-1])
    return z, y


def _true_class_mask(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.arange(z.shape[-1]) == y[:, None]  # [points, classes], broadcasts over fleets


def _logsumexp(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True)))[..., 0]


def margins(logits: Any, labels: Any) -> np.ndarray:
    """Margin phi = z_y - logsumexp_{k != y} z_k, shape [..., points].

    Equal to log(p_y / (1 - p_y)) with p = softmax(z): the "logit-scaled
    confidence" used by LiRA, U-LiRA and the 2023 unlearning competition.
    """
    z, y = _prepare(logits, labels)
    mask = _true_class_mask(z, y)
    z_true = np.where(mask, z, 0.0).sum(axis=-1)
    z_other = np.where(mask, -np.inf, z)  # every row keeps >= 1 finite entry (C >= 2)
    return z_true - _logsumexp(z_other)


def loss(logits: Any, labels: Any) -> np.ndarray:
    """Cross-entropy loss per example, -log softmax(z)_y, shape [..., points]."""
    z, y = _prepare(logits, labels)
    z_true = np.where(_true_class_mask(z, y), z, 0.0).sum(axis=-1)
    return _logsumexp(z) - z_true


def confidence(logits: Any, labels: Any) -> np.ndarray:
    """Softmax probability of the true class, shape [..., points]."""
    return np.exp(-loss(logits, labels))
