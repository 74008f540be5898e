"""Linear datamodeling score (LDS, DESIGN.md section 3).

For held-out subset models j = 1..M and targets t = 1..T: the Spearman correlation,
across models, between predicted and actual outputs at each target, averaged over
targets. Computed in one pass: average ranks along the model axis, then Pearson.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._arrays import as_float


def spearman_per_target(predicted: Any, actual: Any) -> np.ndarray:
    """Spearman correlation across models for each target, shape [T].

    ``predicted`` and ``actual`` are [M, T] (models x targets). A target whose
    predicted or actual column is constant has no correlation: NaN.
    """
    pred = as_float(predicted, "predicted", ndim=2)
    act = as_float(actual, "actual", ndim=2)
    if pred.shape != act.shape:
        raise ValueError(f"predicted and actual must have the same shape: {pred.shape} vs "
                         f"{act.shape}")
    if pred.shape[0] < 3:
        raise ValueError(f"a rank correlation across models needs at least 3 models, "
                         f"got {pred.shape[0]}")
    from scipy.stats import rankdata  # imported lazily: scipy.stats takes ~1 s to import

    rp = rankdata(pred, axis=0)
    ra = rankdata(act, axis=0)
    rp -= rp.mean(axis=0)
    ra -= ra.mean(axis=0)
    num = (rp * ra).sum(axis=0)
    den = np.sqrt((rp * rp).sum(axis=0) * (ra * ra).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def lds(predicted: Any, actual: Any) -> dict[str, Any]:
    """LDS: mean over targets of the per-target Spearman correlation.

    Targets with a constant predicted or actual column are skipped and counted.
    Returns ``{"lds", "n_targets", "n_targets_used", "n_skipped_constant"}``;
    ``lds`` is None when every target was skipped.
    """
    rho = spearman_per_target(predicted, actual)
    ok = ~np.isnan(rho)
    return {
        "lds": float(rho[ok].mean()) if ok.any() else None,
        "n_targets": int(rho.size),
        "n_targets_used": int(ok.sum()),
        "n_skipped_constant": int((~ok).sum()),
    }
