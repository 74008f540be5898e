"""``dmm bench``: every method on every forget set, scored against oracles beside the noise
floor; the steps are those of :mod:`dmm.bench.protocol`, the outputs those of
:mod:`dmm.bench.outputs`."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from dmm.bench import protocol as P
from dmm.bench.config import BenchConfig, load_bench_config
from dmm.config import config_path
from dmm.unlearning.configs import checked_hparams, configured_method, grid_points, method_config


def method_grids(cfg: BenchConfig) -> dict[str, list[dict[str, Any]]]:
    """Every method's grid points (config defaults, the bench's fixed values, the point),
    each checked by building the method, so that a typo fails before any training."""
    out = {}
    for name, spec in cfg.methods.items():
        defaults, grid = method_config(name)
        grid = grid if spec.grid is None else spec.grid
        where = f"bench method {name!r}"
        points = [checked_hparams(name, {**defaults, **spec.defaults, **point}, where)
                  for point in grid_points(grid)]
        for point in points:
            configured_method(name, **point)
        out[name] = points
    return out


def run(ws: P.Workspace) -> dict[str, Any]:
    """The whole protocol; returns every table of the outputs."""
    t_start = time.perf_counter()
    cfg = ws.cfg
    grids = method_grids(cfg)  # fails on a bad grid before any training
    files = P.user_forget_sets(ws)  # and on a bad forget-set file
    linear = P.fit_attribution(ws)
    predictors = P.backends(ws, linear)
    sets = P.load_forget_sets(ws, files)
    originals = P.originals(ws)
    runs = [(m, b) for m in grids for b in P.variants(ws, m)]
    n_runs = len(sets) * sum(len(grids[m]) + 1 for m, _ in runs)
    bar = tqdm(total=n_runs, desc="bench runs", unit="run", disable=not ws.progress)
    grid_rows, selected, report_rows, floors = [], [], [], []
    t0 = time.perf_counter()
    for set_name, forget in sets.items():
        select = P.sides(ws, "select", set_name, forget, originals)
        report = P.sides(ws, "report", set_name, forget, originals)
        floors.append(P.floor_row(ws, set_name, forget, report))
        for method, backend in runs:
            predictor = predictors.get(backend) if backend else None
            rows = []
            for point in grids[method]:
                bar.set_postfix_str(f"{set_name} {method}")
                rows.append(P.run_point(ws, "select", set_name, forget, method, point, select,
                                        predictor, backend))
                bar.update()
            name = P.label(ws, method, backend)
            grid_rows += [{**r, "method": name} for r in rows]
            for chosen in P.choose(method, rows, cfg.selection):
                selected.append({**chosen, "method": name})
                rep = P.run_point(ws, "report", set_name, forget, method, chosen["params"],
                                  report, predictor, backend)
                row_label = configured_method(method, **chosen["params"]).label()
                report_rows.append({**rep, "method": P.label(ws, row_label, backend),
                                    "method_name": method, "backend": backend})
            bar.update()
    bar.close()
    ws.timings["unlearning runs"] = time.perf_counter() - t0
    if "ulira" in cfg.metrics and cfg.ulira.models:
        t0 = time.perf_counter()
        shadows = ws.fleet("shadows", "datamodel", cfg.ulira.models, P.SEEDS["shadows"],
                           save_weights=True)
        for row in tqdm(report_rows, desc="U-LiRA", unit="run", disable=not ws.progress):
            row["ulira_auc"] = P.ulira(ws, sets, row, predictors, shadows)
        ws.timings["U-LiRA"] = time.perf_counter() - t0
    for row in report_rows + floors:
        row.setdefault("ulira_auc", float("nan"))
    ws.timings["total"] = time.perf_counter() - t_start
    varied = {m: sorted(k for k in grids[m][0] if len({str(p[k]) for p in grids[m]}) > 1)
              for m in grids}
    return {"rows": _ordered(floors, report_rows), "selection": selected, "grid": grid_rows,
            "varied": varied, "sets": {k: v.tolist() for k, v in sets.items()},
            "user_sets": sorted(files), "attribution": {k: p.info for k, p in
                                                        predictors.items()},
            "backends": ws.backend_costs, "scale": linear.scale, "timings": ws.timings}


def _ordered(floors: list[dict], rows: list[dict]) -> list[dict]:
    """Per forget set: the floor first, then methods in config order."""
    out = []
    for floor in floors:
        out.append(floor)
        out += [r for r in rows if r["forget_set"] == floor["forget_set"]]
    return out


def run_bench(cfg: BenchConfig, out: str | Path, device: str = "auto", wandb: str = "offline",
              progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the benchmark of ``cfg`` and write its outputs into ``out``."""
    from dmm.bench.outputs import write_outputs

    out = Path(out)
    results = run(P.Workspace(cfg, out, device, log, progress))
    write_outputs(results, cfg, out, log, wandb)
    return results


def bench(config: str | Path = "digits", out: Path | None = None,
          quick: bool = False, data: str | None = None,
          wandb: Literal["offline", "online", "disabled"] = "offline",
          device: Literal["auto", "cpu", "cuda"] = "auto") -> Path:
    """Benchmark every method of a config on the task's forget-set suite: fleets of N
    originals and oracles (cached in <out>/cache and reused), grid search per forget set
    on one pair of fleets, report on a fresh pair, KLoM beside the noise floor, U-LiRA,
    compute. Writes results.csv/.md, selection.csv, grid.csv, pareto.png, histograms/ and a
    wandb run; returns the run directory.

    Args:
        config: bench config: a shipped one's name (configs/bench/<name>.yaml) or a path.
        out: run directory (default runs/bench/<config name>[-quick]).
        quick: the config's quick profile: tiny fleets, one grid point per method.
        data: local data directory for cifar10/tensors (overrides the config's).
        wandb: wandb logging: offline (default, no account), online or disabled.
        device: auto (CUDA when present), cpu or cuda.
    """
    config = config_path("bench", config)
    cfg = load_bench_config(config, quick=quick)
    if data is not None:
        cfg.data = data
    out = out or Path("runs/bench") / (Path(config).stem + ("-quick" if quick else ""))
    run_bench(cfg, out, device=device, wandb=wandb)
    return out


def prepare(config: str | Path = "digits", out: Path | None = None,
            quick: bool = False, data: str | None = None,
            device: Literal["auto", "cpu", "cuda"] = "auto") -> dict[str, Path]:
    """Train the fleets and fit the attribution backends of a bench config, as the bench
    would (cached in <out>/cache and reused by it), for `dmm unlearn --attribution` of the
    task's checkpoints; returns (and prints) each backend's artifact, the default first.

    Args:
        config: bench config whose `attribution` section to prepare (a shipped one's
            name or a path).
        out: run directory (default runs/bench/<config name>[-quick], the bench's own).
        quick: the config's quick profile (tiny fleets).
        data: local data directory for cifar10/tensors (overrides the config's).
        device: auto (CUDA when present), cpu or cuda.
    """
    config = config_path("bench", config)
    cfg = load_bench_config(config, quick=quick)
    if data is not None:
        cfg.data = data
    out = out or Path("runs/bench") / (Path(config).stem + ("-quick" if quick else ""))
    ws = P.Workspace(cfg, Path(out), device)
    P.backends(ws, P.fit_attribution(ws))
    cache = ws.cache
    paths = {"group": cache / "attribution_group", "trak": cache / "attribution_trak"}
    return {b: paths.get(b, cache / "attribution") for b in cfg.attribution.backends}
