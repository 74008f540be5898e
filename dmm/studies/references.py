"""Reference predictions made from real oracles: what a per-point predictor could reach
with perfect knowledge of the retrained models (not usable for unlearning itself)."""

from __future__ import annotations

from typing import Any

import numpy as np

from dmm.evals import margins


def perfect_mean_shift(original_logits: Any, oracle_logits: Any, labels: Any) -> np.ndarray:
    """Originals' logits [K, points, C] with each point's margin moved by the exact change
    of its mean margin (mean over ``oracle_logits`` minus mean over the originals), added to
    the true-class logit. DM-Direct adds one shift per point to every original: this is
    what it would reach with perfect datamodels and scale (a reference, it uses oracles)."""
    z = np.array(original_logits, dtype=np.float32)
    labels = np.asarray(labels)
    shift = margins(oracle_logits, labels).mean(0) - margins(z, labels).mean(0)
    z[:, np.arange(z.shape[1]), labels] += shift
    return z
