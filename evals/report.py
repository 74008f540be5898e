"""Evaluation report: KLoM per split beside its noise floor, as JSON and markdown.

Every metric in the report names its reference models, the models compared to
them, and the direction of the divergence, e.g.
``"direction": "KL(oracle || unlearned)"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from dmm.artifacts import to_jsonable

from ._arrays import as_float
from .klom import CLIP, DIRECTION, MAIN_SPLITS, N_BINS, Q_FLOOR, klom, klom_summary

SCHEMA = "dmm.evals.report/1"
NOISE_FLOOR_DIRECTION = "KL(oracle || oracle_2)"


def _klom_block(
    reference: np.ndarray,
    compared: np.ndarray,
    splits: Mapping[str, Any],
    *,
    direction: str,
    reference_models: str,
    compared_models: str,
) -> dict[str, Any]:
    summary = klom_summary(klom(reference, compared), splits)
    return {
        "metric": "KLoM",
        "direction": direction,
        "reference_models": reference_models,
        "compared_models": compared_models,
        "n_models_per_side": int(reference.shape[0]),
        "binning": {"bins": N_BINS, "clip": [-CLIP, CLIP], "q_floor": Q_FLOOR, "log": "natural"},
        "splits": summary["splits"],
        "mean_p95": summary["mean_p95"],
        "mean_p95_of": list(MAIN_SPLITS),
    }


def klom_report(
    oracle_margins: Any,
    unlearned_margins: Any,
    splits: Mapping[str, Any],
    *,
    noise_floor_margins: Any = None,
    method: str = "unlearned",
    extra_metrics: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """JSON-serialisable evaluation report.

    Args:
        oracle_margins: [N, points] margins of N oracles (retrained without F).
        unlearned_margins: [N, points] margins of N unlearned models.
        splits: name -> indices (or boolean mask); "forget", "retain" and
            "validation" are required, other splits are reported too.
        noise_floor_margins: optional [N, points] margins of a second, independent
            oracle fleet ("oracle_2"); its KLoM against the first oracle fleet,
            KL(oracle || oracle_2), is reported beside the method's as "noise_floor".
        method: name of the unlearning method, recorded in the report.
        extra_metrics: further metric dicts (e.g. U-LiRA, accuracies) stored under
            "metrics" as given; each should name its own reference models.
    """
    missing = [s for s in MAIN_SPLITS if s not in splits]
    if missing:
        raise ValueError(f"splits must include {list(MAIN_SPLITS)}; missing {missing}")
    oracle = as_float(oracle_margins, "oracle_margins", ndim=2)
    unlearned = as_float(unlearned_margins, "unlearned_margins", ndim=2)
    models: dict[str, Any] = {
        "oracle": {"n": int(oracle.shape[0]),
                   "description": "retrained from scratch without the forget set"},
        "unlearned": {"n": int(unlearned.shape[0]),
                      "description": f"{method} applied to independently trained originals"},
    }
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "method": method,
        "n_points": int(oracle.shape[1]),
        "models": models,
        "klom": _klom_block(oracle, unlearned, splits, direction=DIRECTION,
                            reference_models="oracle", compared_models="unlearned"),
        "noise_floor": None,
    }
    if noise_floor_margins is not None:
        second = as_float(noise_floor_margins, "noise_floor_margins", ndim=2)
        if second.shape != unlearned.shape:
            raise ValueError(
                f"noise floor fleet must match the unlearned fleet's [N, points] "
                f"{unlearned.shape}, got {second.shape}"
            )
        models["oracle_2"] = {"n": int(second.shape[0]),
                              "description": "second, independent oracle fleet (noise floor)"}
        report["noise_floor"] = _klom_block(
            oracle, second, splits, direction=NOISE_FLOOR_DIRECTION,
            reference_models="oracle", compared_models="oracle_2",
        )
    if extra_metrics is not None:
        report["metrics"] = to_jsonable(extra_metrics)
    return to_jsonable(report)


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}"


def klom_table_markdown(report: Mapping[str, Any]) -> str:
    """The KLoM table of a :func:`klom_report` as markdown, noise floor beside it."""
    k = report["klom"]
    nf = report.get("noise_floor")
    head = ["split", "p95", "p99", "mean"]
    if nf is not None:
        head += ["noise floor p95", "noise floor p99"]
    head.append("points")
    lines = [
        f"KLoM of {report.get('method', 'unlearned')}: {k['direction']}, "
        f"{k['n_models_per_side']} models per side"
        + (f"; noise floor: {nf['direction']}" if nf is not None else ""),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, row in k["splits"].items():
        cells = [name, _fmt(row["p95"]), _fmt(row["p99"]), _fmt(row["mean"])]
        if nf is not None:
            cells += [_fmt(nf["splits"][name]["p95"]), _fmt(nf["splits"][name]["p99"])]
        cells.append(str(row["n_points"]))
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["mean of p95 (forget, retain, validation)", _fmt(k["mean_p95"]), "", ""]
    if nf is not None:
        cells += [_fmt(nf["mean_p95"]), ""]
    cells.append("")
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
