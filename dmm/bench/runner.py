"""``dmm bench``: every method on every forget set, scored against oracles beside the noise
floor; the steps are those of :mod:`dmm.bench.protocol`, the outputs those of
:mod:`dmm.bench.outputs`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from dmm.bench import protocol as P
from dmm.bench.config import BenchConfig, load_bench_config
from dmm.config import config_path
from dmm.executor import Executor
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
    """The whole protocol; returns every table of the outputs.

    The runs are phases of independent jobs on the config's executor: every selection
    run, then (each set's grid complete, so its points can be chosen) every report run,
    then every U-LiRA; the tables keep the order of sets, methods and grid points."""
    t_start = time.perf_counter()
    cfg = ws.cfg
    grids = method_grids(cfg)  # fails on a bad grid before any training
    files = P.user_forget_sets(ws)  # and on a bad forget-set file
    linear = P.fit_attribution(ws)
    predictors = P.backends(ws, linear)
    sets = P.load_forget_sets(ws, files)
    runs = P.Runs(ws, sets, predictors, P.originals(ws))
    pairs = [(m, b) for m in grids for b in P.variants(ws, m)]
    executor = cfg.executor.build()
    t0 = time.perf_counter()
    floors = [P.floor_row(ws, s, forget, runs.sides("report", s)) for s, forget in sets.items()]
    for s in sets:  # every oracle fleet, before the runs
        runs.sides("select", s)
    select = [P.RunJob("select", s, m, point, b) for s in sets for m, b in pairs
              for point in grids[m]]
    grid_rows, selected, report, labels = [], [], [], []
    with tqdm(total=len(select) + len(sets) * len(pairs), desc="bench runs", unit="run",
              disable=not ws.progress) as bar:
        rows = iter(execute(runs, select, executor, bar))
        for set_name in sets:
            for method, backend in pairs:
                points = [next(rows) for _ in grids[method]]
                name = P.label(ws, method, backend)
                grid_rows += [{**r, "method": name} for r in points]
                for chosen in P.choose(method, points, cfg.selection):
                    selected.append({**chosen, "method": name})
                    report.append(P.RunJob("report", set_name, method, chosen["params"],
                                           backend))
                    labels.append(P.label(ws, configured_method(
                        method, **chosen["params"]).label(), backend))
        bar.total = len(select) + len(report)
        report_rows = [{**rep, "method": lbl, "method_name": job.method,
                        "backend": job.backend} for rep, lbl, job in
                       zip(execute(runs, report, executor, bar), labels, report, strict=True)]
    ws.timings["unlearning runs"] = time.perf_counter() - t0
    if "ulira" in cfg.metrics and cfg.ulira.models:
        t0 = time.perf_counter()
        runs.shadows()
        jobs = [P.RunJob("ulira", r["forget_set"], r["method_name"], r["params"], r["backend"])
                for r in report_rows]
        with tqdm(total=len(jobs), desc="U-LiRA", unit="run", disable=not ws.progress) as bar:
            for row, res in zip(report_rows, execute(runs, jobs, executor, bar), strict=True):
                row["ulira_auc"] = res["auc"]
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


def execute(runs: P.Runs, jobs: list[P.RunJob], executor: Executor, bar: tqdm
            ) -> list[dict[str, Any]]:
    """Every job's result, in the order of ``jobs``: cached ones read here, the others run
    on ``executor``."""
    out: list[Any] = [None] * len(jobs)
    todo = []
    for i, job in enumerate(jobs):
        if runs.cached(job):
            out[i] = P.run_job(runs, job)
            bar.update()
        else:
            todo.append(i)
    for k, result in executor.map(partial(P.run_job, runs), [jobs[i] for i in todo]):
        out[todo[k]] = result
        bar.set_postfix_str(f"{jobs[todo[k]].set_name} {jobs[todo[k]].method}")
        bar.update()
    return out


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
          device: Literal["auto", "cpu", "cuda"] = "auto",
          executor: Literal["local", "ray"] | None = None, address: str | None = None) -> Path:
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
        executor: where fleet shards and runs execute, local or ray (overrides the
            config's executor.kind; the tables do not depend on it).
        address: ray: the cluster (overrides the config's executor.address; none starts a
            local one, auto the one `ray start` runs here, or HOST:PORT).
    """
    config = config_path("bench", config)
    cfg = _load(config, quick, data, executor, address)
    out = out or Path("runs/bench") / (Path(config).stem + ("-quick" if quick else ""))
    run_bench(cfg, out, device=device, wandb=wandb)
    return out


def prepare(config: str | Path = "digits", out: Path | None = None,
            quick: bool = False, data: str | None = None,
            device: Literal["auto", "cpu", "cuda"] = "auto",
            executor: Literal["local", "ray"] | None = None,
            address: str | None = None) -> dict[str, Path]:
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
        executor: where fleet shards train, local or ray (overrides the config's).
        address: ray: the cluster (overrides the config's executor.address).
    """
    config = config_path("bench", config)
    cfg = _load(config, quick, data, executor, address)
    out = out or Path("runs/bench") / (Path(config).stem + ("-quick" if quick else ""))
    ws = P.Workspace(cfg, Path(out), device)
    P.backends(ws, P.fit_attribution(ws))
    cache = ws.cache
    paths = {"group": cache / "attribution_group", "trak": cache / "attribution_trak"}
    return {b: paths.get(b, cache / "attribution") for b in cfg.attribution.backends}


def _load(config: Path, quick: bool, data: str | None, executor: str | None,
          address: str | None) -> BenchConfig:
    """The config, with the command line's data directory and executor (an address stays
    the config's unless given, or dropped for the local executor)."""
    cfg = load_bench_config(config, quick=quick)
    if data is not None:
        cfg.data = data
    if executor is not None or address is not None:
        kind = executor or cfg.executor.kind
        cfg.executor = replace(cfg.executor, kind=kind, address=address if (
            address is not None or kind == "local") else cfg.executor.address)
    return cfg
