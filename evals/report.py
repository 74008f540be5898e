"""KLoM blocks of an evaluation report and its markdown table.

Every metric in a report names its reference models, the models compared to them, and
the direction of the divergence, e.g. ``"direction": "KL(oracle || unlearned)"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dmm.artifacts import to_jsonable

from ._arrays import as_float
from .klom import CLIP, MAIN_SPLITS, N_BINS, Q_FLOOR, klom, klom_summary

SCHEMA = "dmm.evals.report/2"


def klom_block(reference: Any, compared: Any, splits: Mapping[str, Any], *,
               reference_models: str = "oracle", compared_models: str = "unlearned"
               ) -> dict[str, Any]:
    """KLoM of ``compared`` against ``reference`` margins ([N, points] each), summarised
    per split; ``splits`` must hold forget, retain and validation."""
    missing = [s for s in MAIN_SPLITS if s not in splits]
    if missing:
        raise ValueError(f"splits must include {list(MAIN_SPLITS)}; missing {missing}")
    ref = as_float(reference, f"{reference_models} margins", ndim=2)
    comp = as_float(compared, f"{compared_models} margins", ndim=2)
    summary = klom_summary(klom(ref, comp), splits)
    return to_jsonable({
        "metric": "KLoM",
        "direction": f"KL({reference_models} || {compared_models})",
        "reference_models": reference_models,
        "compared_models": compared_models,
        "n_models_per_side": int(ref.shape[0]),
        "binning": {"bins": N_BINS, "clip": [-CLIP, CLIP], "q_floor": Q_FLOOR, "log": "natural"},
        "splits": summary["splits"],
        "mean_p95": summary["mean_p95"],
        "mean_p95_of": list(MAIN_SPLITS),
    })


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}"


def klom_table_markdown(report: Mapping[str, Any]) -> str:
    """The KLoM table of an evaluation report as markdown, noise floor beside it."""
    k = report["metrics"]["klom"]
    nf = k.get("noise_floor")
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
