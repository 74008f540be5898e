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
from dmm.bench.protocol import FLOOR, criterion, method_of
from dmm.unlearning.registry import method_class

COLUMNS = ["forget_set", "method", "klom95_forget", "klom95_retain", "klom95_val",
           "klom95_mean", "accuracy_val", "ulira_auc", "compute_fraction", "seconds",
           "klom99_forget", "klom99_retain", "klom99_val", "accuracy_forget",
           "accuracy_retain", "diverged", "params", "competition_score", "loss_attack_auc",
           "klom95_forget_rev", "klom95_retain_rev", "klom95_val_rev", "klom95_mean_rev",
           "spread_forget", "spread_retain", "spread_val",
           *(f"klom95_{k}{tag}_{end}" for tag in ("", "_rev")
             for k in ("forget", "retain", "val", "mean") for end in ("lo", "hi"))]


def worse(row: dict[str, Any]) -> float:
    """The worse of a row's two directions' mean KLoM95 (what selection minimises)."""
    return criterion(row, "worst-direction")


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
    """The results as markdown: per forget set a table in each KLoM direction, then the
    checks."""
    from dmm.bench.protocol import SELECTION

    rows = results["rows"]
    lines = [f"# dmm bench: {cfg.task}", "",
             "KLoM95 = 95th percentile over points of the KL divergence of margin histograms, "
             f"N = {cfg.models} models a side, in both directions: **KL(oracle ‖ unlearned)** "
             "(DESIGN.md; `klom95_*` in results.csv) and **KL(unlearned ‖ oracle)** (the "
             "direction of the DMM paper's released auditing code and of EasyDUB, which also "
             "penalises unlearned outputs more spread out than the oracles'; `klom95_*_rev`). "
             "Brackets: 95% bootstrap interval (200 smoothed resamples of N models with "
             "replacement on each side, seed 0, shifted by the resamples' bias; see "
             "`dmm.evals.klom.klom_interval`). spread = median over "
             "retain points of std(unlearned) / std(oracle) of the margins across models (1 = "
             "as spread out as retrained models). Hyperparameters are chosen per forget set on "
             f"a *selection* pair of fleets by {SELECTION[cfg.selection]} (`selection: "
             f"{cfg.selection}`) and reported on a fresh *report* pair (held-out protocol). "
             "noise-floor = a second oracle fleet (Retrain at full budget). compute = fraction "
             "of one retraining; seconds = wall time for all N models.", ""]

    def cell(r: dict[str, Any], key: str, bold: bool = False) -> str:
        value = _f(r.get(key))
        value = f"**{value}**" if bold else value
        if r.get(f"{key}_lo") is None:
            return value
        return f"{value} [{_f(r[f'{key}_lo'])}, {_f(r[f'{key}_hi'])}]"

    for name in results["sets"]:
        set_rows = [r for r in rows if r["forget_set"] == name]
        lines += [f"## {name} ({len(results['sets'][name])} examples)", "",
                  "| method | forget | retain | val | mean | spread | val acc | U-LiRA AUC | "
                  "compute | seconds | chosen (grid values) |", "|" + "---|" * 11]
        for r in set_rows:
            keys = results["varied"].get(method_of(r["method"]), [])
            params = ", ".join(f"{k}={r['params'][k]}" for k in keys) or "–"
            flag = f" ({r['diverged']} diverged)" if r.get("diverged") else ""
            lines.append(
                f"| {r['method']}{flag} | {cell(r, 'klom95_forget')} | "
                f"{cell(r, 'klom95_retain')} | {cell(r, 'klom95_val')} | "
                f"{cell(r, 'klom95_mean', True)} | {_f(r.get('spread_retain'))} | "
                f"{_f(r['accuracy_val'], 3)} | {_f(r.get('ulira_auc'), 3)} | "
                f"{_f(r['compute_fraction'], 3)} | {_f(r['seconds'], 1)} | {params} |")
        lines += ["", "KL(unlearned ‖ oracle):", "", "| method | forget | retain | val | mean |",
                  "|---|---|---|---|---|"]
        for r in set_rows:
            lines.append(f"| {r['method']} | {cell(r, 'klom95_forget_rev')} | "
                         f"{cell(r, 'klom95_retain_rev')} | {cell(r, 'klom95_val_rev')} | "
                         f"{cell(r, 'klom95_mean_rev', True)} |")
        lines.append("")
    lines += ["## Checks", ""] + [f"- {c}" for c in checks(results, cfg)]
    lines += ["", *backend_table(results, cfg)]
    t = results["timings"]
    lines += ["", "## Timings (s, this run; cached stages are not counted)", ""]
    lines += [f"- {k}: {v:.0f}" for k, v in t.items()]
    return "\n".join(lines) + "\n"


def checks(results: dict[str, Any], cfg: BenchConfig) -> list[str]:
    """Per forget set: the best method without oracles (no reference method) by the worse
    of the two directions' mean KLoM95, and the headline methods against the floor."""
    out = []
    rows = results["rows"]

    for name in results["sets"]:
        set_rows = [r for r in rows if r["forget_set"] == name]
        floor = next(r for r in set_rows if r["method"] == FLOOR)
        fair = [r for r in set_rows if r["method"] != FLOOR
                and not method_class(method_of(r["method"])).reference]
        if not fair:
            continue
        best = min(fair, key=worse)
        text = (f"{name}: best without oracles: {best['method']} ({best['klom95_mean']:.2f} "
                f"fwd, {best.get('klom95_mean_rev', float('nan')):.2f} rev)")
        for head in (r for r in set_rows if r["method"] in cfg.report.headline):
            text += f"; {head['method']} mean {head['klom95_mean'] / floor['klom95_mean']:.2f}x"
            if "klom95_mean_rev" in head:
                text += f" fwd / {head['klom95_mean_rev'] / floor['klom95_mean_rev']:.2f}x rev"
            text += (f" the floor ({floor['klom95_mean']:.2f} / "
                     f"{floor.get('klom95_mean_rev', float('nan')):.2f}), forget split "
                     f"{head['klom95_forget'] / floor['klom95_forget']:.2f}x fwd")
            if "klom95_forget_rev" in head:
                text += f" / {head['klom95_forget_rev'] / floor['klom95_forget_rev']:.2f}x rev"
            if "spread_retain" in head:
                text += f", retain spread {head['spread_retain']:.2f}"
        out.append(text)
    return out


def backend_table(results: dict[str, Any], cfg: BenchConfig) -> list[str]:
    """Each attribution backend's one-off cost (models trained, by fleet) beside the mean,
    over the evaluated forget sets, of DMM's mean KLoM95 with it (both directions) and of
    the floor's."""
    rows, sets = results["rows"], list(results["sets"])
    head = cfg.report.headline[0] if cfg.report.headline else "dmm"
    default = cfg.attribution.backends[0]
    lines = ["## Attribution backends (one-off cost, amortised over deletion requests)", "",
             f"| backend | models trained once | of which | {head} mean KLoM95 fwd / rev "
             "(mean over sets) | floor |", "|---|---|---|---|---|"]
    floor = [r for r in rows if r["method"] == FLOOR]
    f_fwd = np.mean([r["klom95_mean"] for r in floor])
    f_rev = np.mean([r.get("klom95_mean_rev", np.nan) for r in floor])
    for name, cost in results.get("backends", {}).items():
        label = head if name == default else f"{head}[{name}]"
        mine = [r for r in rows if r["method"] == label and r["forget_set"] in sets]
        fwd = np.mean([r["klom95_mean"] for r in mine]) if mine else float("nan")
        rev = np.mean([r.get("klom95_mean_rev", np.nan) for r in mine]) if mine else float("nan")
        parts = ", ".join(f"{k} {v}" for k, v in cost.items() if k != "models")
        lines.append(f"| {name}{' (default)' if name == default else ''} | {cost['models']} | "
                     f"{parts} | {_f(fwd)} / {_f(rev)} | {_f(f_fwd)} / {_f(f_rev)} |")
    return lines


def pareto_plot(grid: list[dict[str, Any]], sets: list[str], path: Path,
                floors: dict[str, float]) -> None:
    """The worse of the two directions' mean KLoM95 against compute, one point per method
    and grid point, front drawn."""
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
        pts = [r for r in grid if r["forget_set"] == name and math.isfinite(worse(r))]
        for j, m in enumerate(methods):
            mine = [r for r in pts if r["method"] == m]
            ax.scatter([r["compute_fraction"] for r in mine], [worse(r) for r in mine],
                       color=colors[m], marker=markers[j % len(markers)], label=m, s=22,
                       alpha=0.8)
        front, best = [], math.inf
        for r in sorted(pts, key=lambda r: (r["compute_fraction"], worse(r))):
            if worse(r) < best:
                best = worse(r)
                front.append((r["compute_fraction"], best))
        if front:
            ax.step(*zip(*front, strict=True), where="post", color="k", lw=1, label="front")
        ax.axhline(floors[name], color="grey", ls="--", lw=1, label="noise floor")
        ax.set_xscale("symlog", linthresh=1e-3)  # linear near 0: zero-cost methods show
        ax.set_xlim(-2e-4, 1.5)
        ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("compute (fraction of one retraining)")
        ax.set_ylabel("max(mean KLoM95 fwd, rev), selection fleets")
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
    floors = {r["forget_set"]: worse(r) for r in results["rows"] if r["method"] == FLOOR}
    pareto = out / "pareto.png"
    pareto_plot(results["grid"], list(results["sets"]), pareto, floors)
    labels = load_task(cfg.task, cfg.data).data.y_all.numpy()
    images = [pareto, *histogram_plots(results["rows"], labels, out, cfg.report.histograms)]
    write_json(out / "summary.json", {k: v for k, v in results.items() if k != "grid"})
    log_wandb(results, cfg, out, wandb_mode, images)
    log(md)
