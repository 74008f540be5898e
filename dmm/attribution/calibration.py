"""Scales that put attributions in logit units and calibrate DM-Direct (DESIGN.md 4, 5).

Two scalars, each fitted by least squares:

* **units** (TRAK only): TRAK scores tau are proportional to datamodel weights but in no
  particular unit. On datamodel-fleet models, the centred logits y_j - b are regressed
  on the raw prediction sum_i (mask_ji - mean_i) tau_i: beta = a * tau.
* **DM-Direct scale s**: h = f(theta0) - s * sum_{i in F} beta_i. On calibration forget
  sets (never the evaluated ones), the actual shift E[oracle] - E[original] is regressed
  on the predicted shift -sum_{i in F} beta_i, pooled over the sets, all points and
  classes: s = <-e, d> / <e, e>. Without calibration oracles, s is the slope of actual on
  predicted centred outputs of held-out datamodel-fleet models (it undoes shrinkage but
  not the gap between half-subset models and models trained on all of S).

Both regressions centre each point's logits across classes first: softmax (and the
margin) ignores a per-point constant, so only the class-relative part is matched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from dmm.attribution.linear import LinearAttribution
from dmm.attribution.predictor import as_tensor, forget_masks
from dmm.errors import DmmError
from dmm.fleet import Fleet

ORACLE_SCALE_METHOD = ("least squares of actual (mean oracle - mean original) on predicted "
                       "(-sum_F beta) class-centred logit shifts, pooled over calibration sets")


def class_centred(z: torch.Tensor) -> torch.Tensor:
    """Logits minus their mean over classes (the last axis)."""
    return z - z.mean(-1, keepdim=True)


def slope(predicted: torch.Tensor, actual: torch.Tensor) -> float:
    """Least-squares slope through the origin of ``actual`` on ``predicted``."""
    p, a = predicted.double().flatten(), actual.double().flatten()
    denom = (p * p).sum()
    if denom <= 0:
        raise DmmError("cannot fit a scale: the predicted shifts are all zero")
    return float((p * a).sum() / denom)


def fit_units(attr: LinearAttribution, masks: np.ndarray, logits: np.ndarray,
              batch: int = 256) -> float:
    """The factor a with centred logits ~ a * (the attribution's centred prediction) on
    subset models (``masks`` [M, n_train], ``logits`` [M, points, C])."""
    num = den = 0.0
    b = torch.from_numpy(np.asarray(attr.intercept, dtype=np.float32))
    for i in range(0, len(masks), batch):
        pred = class_centred(attr.predict_subset(masks[i : i + batch].astype(np.float32)) - b)
        act = class_centred(as_tensor(logits[i : i + batch]) - b)
        num += float((pred.double() * act.double()).sum())
        den += float(pred.double().pow(2).sum())
    if den <= 0:
        raise DmmError("cannot fit units: the attribution predicts no variation")
    return num / den


def fit_scale_on_oracles(attr: LinearAttribution, original_logits: Any,
                         calibration: Sequence[tuple[np.ndarray, Any]]
                         ) -> tuple[float, list[dict[str, float]]]:
    """DM-Direct scale s from calibration forget sets with real oracles.

    Args:
        attr: the attribution (its own ``scale`` is ignored).
        original_logits: [K, points, C] logits of originals (trained on all of S).
        calibration: (forget indices, oracle logits [K', points, C]) per calibration set.

    Returns s and, per set, its own least-squares s and its size.
    """
    if not calibration:
        raise DmmError("no calibration forget sets given")
    base = as_tensor(np.asarray(original_logits, dtype=np.float32).mean(0))
    num = den = 0.0
    per_set = []
    for forget, oracle_logits in calibration:
        mask = forget_masks(forget, 1, attr.n_train).float()
        predicted = class_centred(-attr.forget_effect(mask)[0])
        actual = class_centred(as_tensor(np.asarray(oracle_logits, dtype=np.float32).mean(0))
                               - base)
        if actual.shape != predicted.shape:
            raise DmmError(f"oracle logits cover {list(actual.shape)}, the attribution "
                           f"{list(predicted.shape)} (points, classes)")
        n_s = float((predicted.double() * actual.double()).sum())
        d_s = float(predicted.double().pow(2).sum())
        per_set.append({"size": int(mask.sum()), "scale": n_s / d_s if d_s > 0 else float("nan")})
        num, den = num + n_s, den + d_s
    if den <= 0:
        raise DmmError("cannot fit a scale: the predicted shifts are all zero")
    return num / den, per_set


def fit_scale_from_fleets(attr: LinearAttribution, originals: Fleet, oracles: Sequence[Fleet]
                          ) -> tuple[float, dict[str, Any]]:
    """:func:`fit_scale_on_oracles` from an original fleet and calibration oracle fleets
    (each oracle fleet's manifest names its forget set); returns s and a description."""
    if originals.manifest.get("kind") != "original":
        raise DmmError(f"calibration originals {originals.path} is not an original fleet")
    for f in oracles:
        if f.manifest.get("kind") != "oracle":
            raise DmmError(f"calibration fleet {f.path} is not an oracle fleet")
    s, per_set = fit_scale_on_oracles(attr, originals.logits, [(f.forget, f.logits)
                                                               for f in oracles])
    for entry, f in zip(per_set, oracles, strict=True):
        entry["oracles"] = str(f.path)
    return s, {"method": ORACLE_SCALE_METHOD, "originals": str(originals.path),
               "per_set": per_set}
