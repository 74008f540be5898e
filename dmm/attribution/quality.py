"""Quality of an attribution: the linear datamodeling score (LDS) on subset models.

LDS (DESIGN.md section 3): for held-out subset models, the Spearman correlation across
models between predicted and actual *margins* at each target, averaged over targets.
Predicted margins are the margins of the predicted per-class logits.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dmm.attribution.linear import LinearAttribution
from dmm.errors import DmmError
from dmm.evals import lds, margins


def margin_lds(predicted_logits: Any, actual_logits: Any, labels: Any) -> float:
    """LDS between margins of predicted and actual logits [models, points, classes]."""
    result = lds(margins(predicted_logits, labels), margins(actual_logits, labels))
    if result["lds"] is None:
        raise DmmError("LDS undefined: every target's margins are constant across models")
    return float(result["lds"])


def attribution_lds(attr: LinearAttribution, masks: np.ndarray, logits: np.ndarray,
                    labels: np.ndarray, points: np.ndarray | None = None,
                    batch: int = 256) -> float:
    """LDS of ``attr`` on subset models (``masks`` [M, n_train], ``logits`` [M, points, C])
    at ``points`` (default all); ``labels`` are the labels of all points."""
    pts = np.arange(attr.n_points) if points is None else np.asarray(points)
    if len(masks) != len(logits):
        raise DmmError(f"{len(masks)} masks but {len(logits)} models' logits")
    pred = np.concatenate([
        attr.predict_subset(masks[i : i + batch].astype(np.float32), pts).numpy()
        for i in range(0, len(masks), batch)
    ])
    return margin_lds(pred, np.asarray(logits[:, pts], dtype=np.float32), labels[pts])
