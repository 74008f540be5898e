"""What ``dmm bench`` writes: results tables (CSV, markdown), a Pareto plot, margin
histograms of the worst points, a summary JSON, and a wandb run carrying the same."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from dmm.artifacts import atomic_path, write_json
from dmm.bench.config import BenchConfig
from dmm.bench.protocol import FLOOR, method_of
from dmm.unlearning.registry import method_class

COLUMNS = ["forget_set", "method", "klom95_forget", "klom95_retain", "klom95_val",
           "klom95_mean", "accuracy_val", "ulira_auc", "compute_fraction", "seconds",
           "klom99_forget", "klom99_retain", "klom99_val", "accuracy_forget",
           "accuracy_retain", "diverged", "params", "competition_score", "loss_attack_auc"]


def _csv(rows: list[dict[str, Any]], path: Path) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(r.get(k)) for k in COLUMNS})
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def _cell(v: Any) -> Any:
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


def _f(v: Any, digits: int = 2) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def markdown(results: dict[str, Any], cfg: BenchConfig) -> str:
    """The results as markdown: one table per forget set, then the checks."""
    rows = results["rows"]
    lines = [f"# dmm bench: {cfg.task}", "",
             f"KLoM95 = 95th percentile over points of KL(oracle ‖ unlearned) margin "
             f"histograms, N = {cfg.models} models a side; hyperparameters chosen per forget "
             "set by forget KLoM95 on a *selection* pair of fleets, reported on a fresh "
             "*report* pair (held-out protocol). noise-floor = a second oracle fleet "
             "(Retrain at full budget). compute = fraction of one retraining; "
             "seconds = wall time for all N models.", ""]
    header = ("| method | forget | retain | val | mean | val acc | U-LiRA AUC | compute | "
              "seconds | chosen (grid values) |")
    for name in results["sets"]:
        set_rows = [r for r in rows if r["forget_set"] == name]
        lines += [f"## {name} ({len(results['sets'][name])} examples)", "", header,
                  "|" + "---|" * 10]
        for r in set_rows:
            keys = results["varied"].get(r["method"].split("@")[0], [])
            params = ", ".join(f"{k}={r['params'][k]}" for k in keys) or "–"
            flag = f" ({r['diverged']} diverged)" if r.get("diverged") else ""
            lines.append(
                f"| {r['method']}{flag} | {_f(r['klom95_forget'])} | {_f(r['klom95_retain'])} | "
                f"{_f(r['klom95_val'])} | **{_f(r['klom95_mean'])}** | "
                f"{_f(r['accuracy_val'], 3)} | {_f(r.get('ulira_auc'), 3)} | "
                f"{_f(r['compute_fraction'], 3)} | {_f(r['seconds'], 1)} | {params} |")
        lines.append("")
    lines += ["## Checks", ""] + [f"- {c}" for c in checks(results, cfg)]
    t = results["timings"]
    lines += ["", "## Timings (s, this run; cached stages are not counted)", ""]
    lines += [f"- {k}: {v:.0f}" for k, v in t.items()]
    return "\n".join(lines) + "\n"


def checks(results: dict[str, Any], cfg: BenchConfig) -> list[str]:
    """Per forget set: the best method without oracles (no reference method) by mean
    KLoM95, and the headline methods against the floor."""
    out = []
    rows = results["rows"]
    for name in results["sets"]:
        set_rows = [r for r in rows if r["forget_set"] == name]
        floor = next(r for r in set_rows if r["method"] == FLOOR)
        fair = [r for r in set_rows if r["method"] != FLOOR
                and not method_class(method_of(r["method"])).reference]
        if not fair:
            continue
        best = min(fair, key=lambda r: r["klom95_mean"])
        text = f"{name}: best without oracles: {best['method']} ({best['klom95_mean']:.2f})"
        for head in (r for r in set_rows if r["method"] in cfg.report.headline):
            ratio = head["klom95_mean"] / floor["klom95_mean"]
            forget = head["klom95_forget"] / floor["klom95_forget"]
            text += (f"; {head['method']} {head['klom95_mean']:.2f} = {ratio:.2f}x the floor "
                     f"({floor['klom95_mean']:.2f}), forget split {forget:.2f}x")
        out.append(text)
    return out


def pareto_plot(grid: list[dict[str, Any]], sets: list[str], path: Path,
                floors: dict[str, float]) -> None:
    """Mean KLoM95 against compute, one point per method and grid point, front drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    methods = sorted({r["method"] for r in grid})
    cols = min(3, len(sets))
    rows_n = math.ceil(len(sets) / cols)
    fig = Figure(figsize=(5 * cols, 4 * rows_n))
    FigureCanvasAgg(fig)
    colors = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    markers = "ovs^D<>pPX*h"
    for i, name in enumerate(sets):
        ax = fig.add_subplot(rows_n, cols, i + 1)
        pts = [r for r in grid if r["forget_set"] == name and math.isfinite(r["klom95_mean"])]
        for j, m in enumerate(methods):
            mine = [r for r in pts if r["method"] == m]
            ax.scatter([r["compute_fraction"] for r in mine], [r["klom95_mean"] for r in mine],
                       color=colors[m], marker=markers[j % len(markers)], label=m, s=22,
                       alpha=0.8)
        front, best = [], math.inf
        for r in sorted(pts, key=lambda r: (r["compute_fraction"], r["klom95_mean"])):
            if r["klom95_mean"] < best:
                best = r["klom95_mean"]
                front.append((r["compute_fraction"], best))
        if front:
            ax.step(*zip(*front, strict=True), where="post", color="k", lw=1, label="front")
        ax.axhline(floors[name], color="grey", ls="--", lw=1, label="noise floor")
        ax.set_xscale("symlog", linthresh=1e-3)  # linear near 0: zero-cost methods show
        ax.set_xlim(-2e-4, 1.5)
        ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("compute (fraction of one retraining)")
        ax.set_ylabel("mean KLoM95 (selection fleets)")
        if i == 0:
            ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def histogram_plots(rows: list[dict[str, Any]], labels: np.ndarray, out: Path,
                    methods: list[str]) -> list[Path]:
    """Oracle vs unlearned margin histograms at the worst points, per forget set."""
    from dmm.evals import margins, plot_margin_histograms
    from dmm.fleet import load_fleet

    paths = []
    for r in rows:
        if r["method"] not in methods or "outputs_file" not in r:
            continue
        oracle = margins(np.asarray(load_fleet(r["oracles"]).logits), labels)
        path = out / "histograms" / f"{r['forget_set']}-{r['method']}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        with np.load(r["outputs_file"]) as f:
            unlearned = f["margins"]
        plot_margin_histograms(oracle, unlearned, path, n_worst=8,
                               labels=("oracle", r["method"]),
                               suptitle=f"{r['method']} on {r['forget_set']}: worst points "
                               "by KL(oracle ‖ unlearned)")
        paths.append(path)
    return paths


def log_wandb(results: dict[str, Any], cfg: BenchConfig, out: Path, mode: str,
              images: list[Path]) -> None:
    """One wandb run (offline unless asked) with the results table, plots and timings."""
    if mode == "disabled":
        return
    import os

    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(project="dmm-bench", name=f"{cfg.task}", dir=str(out), mode=mode,
                     config=asdict(cfg), reinit="finish_previous")
    table = wandb.Table(columns=COLUMNS, data=[[_cell(r.get(c)) for c in COLUMNS]
                                               for r in results["rows"]])
    run.log({"results": table, **{f"plots/{p.stem}": wandb.Image(str(p)) for p in images}})
    run.summary.update({f"timings/{k}": v for k, v in results["timings"].items()})
    run.finish()


def write_outputs(results: dict[str, Any], cfg: BenchConfig, out: Path,
                  log: Callable[[str], None] = print, wandb_mode: str = "offline") -> None:
    """Write every output of a benchmark run into ``out``."""
    from dmm.tasks import load_task

    out.mkdir(parents=True, exist_ok=True)
    _csv(results["rows"], out / "results.csv")
    _csv(results["selection"], out / "selection.csv")
    _csv(results["grid"], out / "grid.csv")
    md = markdown(results, cfg)
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(md)
    floors = {r["forget_set"]: r["klom95_mean"] for r in results["rows"]
              if r["method"] == FLOOR}
    pareto = out / "pareto.png"
    pareto_plot(results["grid"], list(results["sets"]), pareto, floors)
    labels = load_task(cfg.task, cfg.data).data.y_all.numpy()
    images = [pareto, *histogram_plots(results["rows"], labels, out, cfg.report.histograms)]
    write_json(out / "summary.json", {k: v for k, v in results.items() if k != "grid"})
    log_wandb(results, cfg, out, wandb_mode, images)
    log(md)
