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
               reference_models: str = "oracle", compared_models: str = "unlearned",
               direction: str = "oracle||unlearned") -> dict[str, Any]:
    """KLoM of ``compared`` margins against ``reference`` margins ([N, points] each),
    summarised per split; ``splits`` must hold forget, retain and validation.
    ``direction`` ``oracle||unlearned`` is KL(reference || compared), ``unlearned||oracle``
    KL(compared || reference)."""
    missing = [s for s in MAIN_SPLITS if s not in splits]
    if missing:
        raise ValueError(f"splits must include {list(MAIN_SPLITS)}; missing {missing}")
    ref = as_float(reference, f"{reference_models} margins", ndim=2)
    comp = as_float(compared, f"{compared_models} margins", ndim=2)
    names = (reference_models, compared_models)
    name = "KL({} || {})".format(*(names if direction == "oracle||unlearned" else names[::-1]))
    summary = klom_summary(klom(ref, comp, direction), splits, name)
    return to_jsonable({
        "metric": "KLoM",
        "direction": name,
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
    """The KLoM table of an evaluation report as markdown: both directions, the noise floor
    beside each."""
    k = report["metrics"]["klom"]
    nf = k.get("noise_floor")
    blocks = [("", k), (" rev", k["reverse"])]
    if nf is not None:
        blocks += [(" floor", nf), (" floor rev", nf["reverse"])]
    head = ["split", *(f"p95{tag}" for tag, _ in blocks), "p99", "mean", "points"]
    lines = [
        f"KLoM of {report.get('method', 'unlearned')}, {k['n_models_per_side']} models per "
        f"side: p95 = {k['direction']}, p95 rev = {k['reverse']['direction']}"
        + (f"; floor: {nf['direction']} and {nf['reverse']['direction']}"
           if nf is not None else ""),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, row in k["splits"].items():
        cells = [name, *(_fmt(b["splits"][name]["p95"]) for _, b in blocks),
                 _fmt(row["p99"]), _fmt(row["mean"]), str(row["n_points"])]
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["mean of p95 (forget, retain, validation)", *(_fmt(b["mean_p95"]) for _, b in blocks),
             "", "", ""]
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
