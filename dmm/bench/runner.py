"""``dmm bench``: every method on every forget set, scored by KLoM against oracles.

Protocol (DESIGN.md sections 5-7):

1. Fleets (cached under ``<out>/cache``, reused across methods and re-runs): a datamodel
   fleet, two independent fleets of N originals (selection, report) and, per forget set,
   two independent fleets of N oracles (selection, report).
2. Datamodels fitted on the datamodel fleet; the forget-set suite built from them; the
   DM-Direct scale s fitted on calibration sets that are never evaluated.
3. Selection: each method's grid on the selection originals, scored against the
   selection oracles; the chosen point per forget set has the lowest forget KLoM95
   among points where no model diverged.
4. Report (held-out): the chosen point re-run on the *report* originals and scored
   against the *report* oracles. The noise floor is KLoM(report oracles || selection
   oracles) at the same N. Oracle Matching matches the oracle fleet that it is not
   scored against.
5. U-LiRA per forget set and method (chosen point) on a shadow fleet of random halves.

Every run's scores are cached as JSON keyed by method, hyperparameters, forget set and
fleets, so a re-run reproduces the tables exactly without recomputing.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from dmm.artifacts import read_json, save_npy, write_json
from dmm.bench.config import BenchConfig
from dmm.errors import DmmError
from dmm.evals import klom, klom_summary, margins
from dmm.fleet import Fleet, train_fleet
from dmm.forget_sets import read_indices
from dmm.tasks import Task, load_task
from dmm.unlearning.base import Problem, Result
from dmm.unlearning.configs import checked_hparams, configured_method, grid_points, method_config

SPLITS = ("forget", "retain", "val")
SEEDS = {"datamodels": 1, "select": 2, "report": 3, "calibration": 4, "shadows": 5}


@dataclass
class Sides:
    """One protocol phase on one forget set: originals, scoring oracles, matching oracles."""

    originals: Fleet
    ensemble: Any
    oracles: Fleet
    oracle_margins: np.ndarray
    other_oracles: Fleet


class Bench:
    """The state of one benchmark run; :meth:`run` does everything."""

    def __init__(self, cfg: BenchConfig, out: Path, device: str = "auto",
                 log: Callable[[str], None] = print, progress: bool = True):
        self.cfg, self.out, self.device, self.log, self.progress = cfg, out, device, log, progress
        self.cache = out / "cache"
        self.task: Task = load_task(cfg.task, cfg.data)
        self.labels = self.task.data.y_all.numpy()
        self.n = self.task.data.n_train
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------ fleets and artifacts
    def fleet(self, name: str, kind: str, models: int, seed: int,
              forget: np.ndarray | None = None, save_weights: bool | None = None) -> Fleet:
        t0 = time.perf_counter()
        path = self.cache / "fleets" / name
        existed = path.exists()
        if not existed:
            self.log(f"training {models} {kind} models -> {path}")
        f = train_fleet(self.task, kind, models, path, seed=self.cfg.seed * 100 + seed,
                        forget=forget, shard_size=self.cfg.shard_size, save_weights=save_weights,
                        device=self.device, reuse=True, progress=self.progress)
        if not existed:
            self.timings[f"fleet {name}"] = time.perf_counter() - t0
        return f

    def attribution(self) -> Any:
        """Datamodels on the datamodel fleet, the forget suite, and the calibrated scale."""
        from dmm.attribution import (
            build_forget_suite,
            fit_datamodels,
            fit_scale_from_fleets,
            load_attribution,
            save_attribution,
            write_suite,
        )

        spec = self.cfg.attribution
        path, suite = self.cache / "attribution", self.cache / "forget_sets"
        if (path / "manifest.json").is_file() and (suite / "suite.json").is_file():
            return load_attribution(path, self.task)
        dm = self.fleet("datamodels", "datamodel", spec.models, SEEDS["datamodels"])
        t0 = time.perf_counter()
        self.log(f"fitting {spec.solver} datamodels on {spec.models} models")
        attr = fit_datamodels(dm, spec.solver, device="cuda" if self.device == "cuda" else "cpu")
        self.timings["datamodels fit"] = time.perf_counter() - t0
        s = self.cfg.forget_sets
        sets, info = build_forget_suite(
            attr, self.labels, tuple(s.random_sizes), tuple(s.pc_sizes), s.pc_top_bottom,
            tuple(s.classes), s.class_size, s.seed)
        write_suite(sets, info, suite, overwrite=True)
        originals = self.fleet("calibration_originals", "original", spec.calibration_models,
                               SEEDS["calibration"])
        rng = np.random.default_rng([self.cfg.seed, SEEDS["calibration"]])
        oracles = [self.fleet(f"calibration_oracles_{i}", "oracle", spec.calibration_models,
                              SEEDS["calibration"] + 10 + i,
                              forget=np.sort(rng.choice(self.n, size, replace=False)))
                   for i, size in enumerate(spec.calibration_sizes)]
        attr.scale, attr.info["scale_fit"] = fit_scale_from_fleets(attr, originals, oracles)
        self.log(f"DM-Direct scale s = {attr.scale:.3f} (from {len(oracles)} fresh random sets)")
        save_attribution(attr, path, self.task, overwrite=True)
        return load_attribution(path, self.task)

    def forget_sets(self) -> dict[str, np.ndarray]:
        folder = self.cache / "forget_sets"
        names = self.cfg.forget_sets.evaluate or sorted(p.stem for p in folder.glob("*.txt"))
        missing = [s for s in names if not (folder / f"{s}.txt").is_file()]
        if missing:
            raise DmmError(f"unknown forget sets {missing} (the suite has "
                           f"{sorted(p.stem for p in folder.glob('*.txt'))})")
        return {s: read_indices(folder / f"{s}.txt", self.n) for s in names}

    # ------------------------------------------------------------ scoring
    def splits(self, forget: np.ndarray) -> dict[str, np.ndarray]:
        is_forget = np.zeros(self.n, dtype=bool)
        is_forget[forget] = True
        return {"forget": np.flatnonzero(is_forget), "retain": np.flatnonzero(~is_forget),
                "validation": np.arange(self.n, len(self.labels))}

    def score(self, logits: np.ndarray, oracle_margins: np.ndarray, forget: np.ndarray
              ) -> dict[str, Any]:
        """KLoM(oracle || these models) per split and accuracy per split (mean over models)."""
        splits = self.splits(forget)
        summary = klom_summary(klom(oracle_margins, margins(logits, self.labels)), splits)
        correct = logits.argmax(-1) == self.labels
        row = {}
        for short, split in zip(SPLITS, ("forget", "retain", "validation"), strict=True):
            row[f"klom95_{short}"] = summary["splits"][split]["p95"]
            row[f"klom99_{short}"] = summary["splits"][split]["p99"]
            row[f"accuracy_{short}"] = float(correct[:, splits[split]].mean())
        row["klom95_mean"] = summary["mean_p95"]
        return row

    def sides(self, phase: str, name: str, forget: np.ndarray,
              originals: dict[str, tuple[Fleet, Any]]) -> Sides:
        other = "report" if phase == "select" else "select"
        oracles = self.fleet(f"oracles_{name}_{phase}", "oracle", self.cfg.models,
                             SEEDS[phase] + 10, forget=forget)
        matching = self.fleet(f"oracles_{name}_{other}", "oracle", self.cfg.models,
                              SEEDS[other] + 10, forget=forget)
        fleet, ens = originals[phase]
        return Sides(fleet, ens, oracles, margins(np.asarray(oracles.logits), self.labels),
                     matching)

    def run_point(self, phase: str, set_name: str, forget: np.ndarray, method: str,
                  hparams: dict[str, Any], sides: Sides, attr: Any) -> dict[str, Any]:
        """One method at one grid point on all N originals of a phase (cached)."""
        key = _key({"method": method, "hparams": hparams, "forget": forget.tolist(),
                    "originals": sides.originals.manifest["seed"],
                    "oracles": sides.oracles.manifest["seed"], "models": self.cfg.models})
        path = self.cache / "runs" / phase / set_name / method / f"{key}.json"
        if not path.is_file():
            write_json(path, self._unlearn(phase, set_name, forget, method, hparams, sides,
                                           attr, path.with_suffix(".npy")))
        row = read_json(path)
        if phase == "report":  # for the margin histograms; located now, so the out dir can move
            row |= {"margins_file": str(path.with_suffix(".npy")),
                    "oracles": str(sides.oracles.path)}
        return row

    def _unlearn(self, phase: str, set_name: str, forget: np.ndarray, method: str,
                 hparams: dict[str, Any], sides: Sides, attr: Any, margins_file: Path
                 ) -> dict[str, Any]:
        from dmm.attribution import OraclePredictor

        problem = Problem.single(self.task, sides.ensemble, forget, keys=sides.originals.keys,
                                 device=self.device, context={
                                     "predictor": attr,
                                     "oracle": OraclePredictor(sides.other_oracles)})
        result: Result = configured_method(method, **hparams)(problem)
        logits = result.logits.numpy()
        if phase == "report":
            save_npy(margins_file, margins(logits, self.labels).astype(np.float32))
        return {"forget_set": set_name, "method": method, "params": result.hparams,
                "diverged": int(result.diverged.sum()),
                "compute_fraction": result.compute_fraction, "seconds": result.seconds,
                **self.score(logits, sides.oracle_margins, forget)}

    # ------------------------------------------------------------ the whole run
    def run(self) -> dict[str, Any]:
        t_start = time.perf_counter()
        grids = method_grids(self.cfg)  # fails on a bad grid before any training
        attr = self.attribution()
        sets = self.forget_sets()
        originals = {}
        for phase in ("select", "report"):
            f = self.fleet(f"originals_{phase}", "original", self.cfg.models, SEEDS[phase])
            originals[phase] = (f, f.ensemble(self.task))
        methods = list(grids)
        n_runs = len(sets) * (sum(len(g) for g in grids.values()) + len(methods))
        bar = tqdm(total=n_runs, desc="bench runs", unit="run", disable=not self.progress)
        grid_rows, selected, report_rows, floors = [], [], [], []
        t0 = time.perf_counter()
        for set_name, forget in sets.items():
            select = self.sides("select", set_name, forget, originals)
            report = self.sides("report", set_name, forget, originals)
            floor = self.score(np.asarray(report.other_oracles.logits), report.oracle_margins,
                               forget)
            floors.append({"forget_set": set_name, "method": "noise-floor", "params": {},
                           "diverged": 0, "compute_fraction": 1.0, "seconds": 0.0, **floor})
            for method in methods:
                rows = []
                for point in grids[method]:
                    bar.set_postfix_str(f"{set_name} {method}")
                    rows.append(self.run_point("select", set_name, forget, method, point,
                                               select, attr))
                    bar.update()
                grid_rows += rows
                for chosen in self.choose(method, rows):
                    selected.append(chosen)
                    rep = self.run_point("report", set_name, forget, method, chosen["params"],
                                         report, attr)
                    report_rows.append({**rep, "method": _label(method, chosen["params"])})
                bar.update()
        bar.close()
        self.timings["unlearning runs"] = time.perf_counter() - t0
        ulira = self.ulira(sets, report_rows, attr)
        for row in report_rows:
            row["ulira_auc"] = ulira.get((row["forget_set"], row["method"]), float("nan"))
        for row in floors:
            row["ulira_auc"] = float("nan")
        self.timings["total"] = time.perf_counter() - t_start
        varied = {m: sorted(k for k in grids[m][0] if len({str(p[k]) for p in grids[m]}) > 1)
                  for m in methods}
        return {"rows": _ordered(floors, report_rows), "selection": selected, "grid": grid_rows,
                "varied": varied,
                "sets": {k: v.tolist() for k, v in sets.items()}, "attribution": attr.info,
                "scale": attr.scale, "timings": self.timings}

    def choose(self, method: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The grid point(s) carried to the report phase: the lowest forget KLoM95 among
        points with no diverged model (retrain: every budget, each its own row)."""
        ok = [r for r in rows if r["diverged"] == 0] or rows
        if method == "retrain":
            return ok
        return [min(ok, key=lambda r: (r["klom95_forget"], r["compute_fraction"]))]

    def ulira(self, sets: dict[str, np.ndarray], rows: list[dict[str, Any]], attr: Any
              ) -> dict[tuple[str, str], float]:
        """U-LiRA AUC per (forget set, method row) with the chosen hyperparameters."""
        from dmm.evals.ulira_harness import run_ulira

        spec = self.cfg.ulira
        if spec.models == 0:
            return {}
        t0 = time.perf_counter()
        shadows = self.fleet("shadows", "datamodel", spec.models, SEEDS["shadows"],
                             save_weights=True)
        out = {}
        todo = [r for r in rows if not _registered()[_base(r["method"])].uses_oracles]
        for row in tqdm(todo, desc="U-LiRA", unit="run", disable=not self.progress):
            name = _base(row["method"])
            size = min(len(sets[row["forget_set"]]), spec.max_forget)
            key = _key({"method": name, "hparams": row["params"], "size": size,
                        "spec": asdict(spec)})
            path = self.cache / "runs" / "ulira" / f"{name}-{key}.json"
            if not path.is_file():
                method = configured_method(name, **row["params"])
                res = run_ulira(self.task, method, shadows, spec.targets, size,
                                seed=self.cfg.seed, device=self.device,
                                context={"predictor": attr})
                write_json(path, {"auc": res["auc"], "report": res})
            out[(row["forget_set"], row["method"])] = read_json(path)["auc"]
        self.timings["U-LiRA"] = time.perf_counter() - t0
        return out


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


def _registered() -> dict[str, Any]:
    import dmm.baselines  # noqa: F401  (registers the baselines)
    from dmm.unlearning import METHODS

    return METHODS


def _key(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _label(method: str, params: dict[str, Any]) -> str:
    return f"retrain@{params['fraction']:g}" if method == "retrain" else method


def _base(label: str) -> str:
    return label.split("@")[0]


def _ordered(floors: list[dict], rows: list[dict]) -> list[dict]:
    """Per forget set: the floor first, then methods in config order."""
    out = []
    for floor in floors:
        out.append(floor)
        out += [r for r in rows if r["forget_set"] == floor["forget_set"]]
    return out


def run_bench(cfg: BenchConfig, out: str | Path, device: str = "auto", wandb: str = "offline",
              progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the benchmark and write its outputs into ``out`` (see :mod:`dmm.bench.outputs`)."""
    from dmm.bench.outputs import write_outputs

    out = Path(out)
    results = Bench(cfg, out, device, log, progress).run()
    write_outputs(results, cfg, out, log, wandb)
    return results
