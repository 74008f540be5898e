"""Attribution backends: predict the logits of a model retrained without a forget set.

Every backend is a :class:`Predictor`: ``predict(original_logits, forget, points)``.

* :func:`fit_datamodels`: regression datamodels (ridge or lasso) on a datamodel fleet,
  per class logit, targets = all points; a :class:`LinearAttribution` whose ``predict``
  is DM-Direct, h(x) = f(x; theta0) - s * sum_{i in F} beta_i(x).
* :func:`fit_trak`: TRAK (``traker``) scores rescaled to logit units, same class.
* :class:`OraclePredictor`: logits of real retrained models (oracle fleets).
* :class:`GroupAttribution` (:func:`fit_group_from_fleets`): the group-aware backend, the
  default of DMM and DM-Direct: density datamodels on a fleet of varying keep rates predict
  the margins of the removed examples along the removal path, with their spread; linear
  datamodels, each removed example weighted by how far its own margin falls with its
  group, predict every other point and are blended into the forget points' means
  (:mod:`dmm.attribution.group`).

Artifacts: :func:`save_attribution` / :func:`load_attribution` (alias :func:`load`).
Names are imported lazily, so that ``dmm`` CLI start-up does not load torch or traker.

Memory (n training examples, P points, C classes, m fleet models, K originals, |F| the
forget set). beta is never expanded to [n, P, C] to predict:

* ridge keeps beta = V A, V [n, r], A [r, P, C], r = min(m, n) (the dual form when
  m < n); a prediction costs K x r + r x P x C reads and K x P x C output.
* lasso and TRAK keep beta itself as a float32 memmap [n, P, C] on disk; a prediction
  reads only the |F| rows of the forgotten examples (|F| x P x C in memory).
* fitting: the fleet's masks and logits (m x n + m x P x C), the SVD (ridge) or the Gram
  matrix n x n plus about five n x block work matrices (lasso, ``block`` outputs at a
  time); TRAK holds proj_dim-sized features per model and one [n, P] score block.

The DM-Direct scale s (DESIGN.md section 4) is fitted by least squares of actual on
predicted class-centred logit shifts on calibration forget sets with real oracles, never
the evaluated set (:func:`fit_scale_on_oracles`); without calibration oracles it is the
slope on held-out datamodel-fleet models. It is stored in the artifact's manifest.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Predictor": "predictor",
    "forget_masks": "predictor",
    "LinearAttribution": "linear",
    "OraclePredictor": "oracle",
    "GroupAttribution": "group",
    "fit_group_attribution": "group",
    "fit_group_from_fleets": "group",
    "fit_datamodels": "datamodels",
    "split_models": "datamodels",
    "heldout_slope": "datamodels",
    "ridge_fit": "ridge",
    "ridge_path": "ridge",
    "fista_lasso": "lasso",
    "lasso_path": "lasso",
    "fit_trak": "trak_scores",
    "compute_trak_scores": "trak_scores",
    "fit_units": "calibration",
    "fit_scale_on_oracles": "calibration",
    "fit_scale_from_fleets": "calibration",
    "attribution_lds": "quality",
    "margin_lds": "quality",
    "margin_matrix": "forget_suite",
    "principal_projections": "forget_suite",
    "build_forget_suite": "forget_suite",
    "write_suite": "forget_suite",
    "write_forget_sets": "forget_suite",
    "attribute": "build",
    "random_set": "forget_suite",
    "top_k": "forget_suite",
    "top_bottom_k": "forget_suite",
    "class_set": "forget_suite",
    "save_attribution": "store",
    "load_attribution": "store",
    "load": "store",
    "read_manifest": "store",
    "update_scale": "store",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return __all__
