"""Every baseline on digits: KLoM95 per split at each method's best grid point.

For each forget set (a random 50-example set and a class-concentrated one: 50 training
examples of class 3; more with ``--forget NAME=FILE``), it trains (or loads, from
``--out``) 100 originals, 100 oracles (reference, seed 1) and a second, independent
100-oracle fleet (seed 2) for the noise floor. Each method runs on all originals at every
point of its grid; the best point is the one with the lowest forget-split KLoM95
(DESIGN.md section 7) among the points where no model diverged. KLoM is
KL(oracle || unlearned) (DESIGN.md section 5). Retrain's budgets are reported as separate
rows (retrain@fraction).

Grids: by default a reduced grid per method (``QUICK`` below: subsets of the shipped
grids, small enough for 2 CPU cores); ``--full-grid`` runs the grids of
``configs/methods/<name>.yaml``. Results per grid point are cached as JSON under
``<out>/<forget set>/results`` (delete them to recompute).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dmm.artifacts import read_json, write_json
from dmm.errors import DmmError
from dmm.evals import klom, klom_summary, margins
from dmm.fleet import Fleet, load_fleet, train_fleet
from dmm.forget_sets import read_indices, write_indices
from dmm.tasks import Task, load_task
from dmm.unlearning import Problem
from dmm.unlearning.base import val_accuracy
from dmm.unlearning.configs import configured_method, grid_points, method_config

METHODS = ["do-nothing", "ga", "gd", "neggrad-plus", "scrub", "random-labels", "salun",
           "l1-sparse", "ssd", "retrain"]

# Reduced grids for 2 CPU cores: each value is in the shipped grid of configs/methods.
QUICK: dict[str, dict[str, list[Any]]] = {
    "do-nothing": {},
    "ga": {"lr": [1e-5, 1e-3, 1e-2], "epochs": [1, 3, 5, 7, 10]},  # the published grid
    "gd": {"lr": [1e-3, 1e-2], "epochs": [1, 3, 5]},
    "neggrad-plus": {"alpha": [0.95, 0.99], "lr": [1e-2], "epochs": [1, 3]},
    "scrub": {"forget_batch_size": [32], "msteps": [3], "lr": [5e-3, 5e-4], "epochs": [5]},
    "random-labels": {"lr": [1e-3, 1e-2], "epochs": [1, 3]},
    "salun": {"gamma": [0.5], "lr": [1e-3, 1.3e-2], "epochs": [1, 5]},
    "l1-sparse": {"gamma": [1e-4, 5e-4], "lr": [1e-2], "epochs": [3]},
    "ssd": {"alpha": [1.0, 10.0, 100.0], "lam": [0.1, 1.0]},
    "retrain": {"fraction": [0.1, 0.25, 0.5, 1.0]},
}


def fleet(task: Task, path: Path, kind: str, models: int, seed: int,
          forget: np.ndarray | None = None) -> Fleet:
    """Load a cached fleet, or train it."""
    if (path / "manifest.json").is_file():
        f = load_fleet(path, task)
        if len(f) != models or f.manifest["seed"] != seed:
            raise DmmError(f"{path} holds another fleet (delete it to retrain)")
        return f
    print(f"training {models} {kind} models -> {path}", flush=True)
    return train_fleet(task, kind, models, path, seed=seed, forget=forget, device="cpu",
                       progress=False)


def forget_sets(task: Task, extra: list[str]) -> dict[str, np.ndarray]:
    """The default random and class-3 sets (seed 0), plus NAME=FILE ones."""
    rng = np.random.default_rng(0)
    n, y = task.data.n_train, task.data.y_train.numpy()
    sets = {
        "random_50": np.sort(rng.choice(n, 50, replace=False)),
        "class_3_50": np.sort(rng.choice(np.flatnonzero(y == 3), 50, replace=False)),
    }
    for item in extra:
        name, _, path = item.partition("=")
        sets[name] = read_indices(path, n)
    return sets


def evaluate(logits: np.ndarray | torch.Tensor, oracle_margins: np.ndarray, labels: np.ndarray,
             splits: dict[str, np.ndarray]) -> dict[str, Any]:
    values = klom(oracle_margins, margins(np.asarray(logits), labels))
    return klom_summary(values, splits)


def point_name(method: str, point: dict[str, Any]) -> str:
    return method + "".join(f",{k}={v}" for k, v in point.items())


def run_point(name: str, point: dict[str, Any], problem: Problem, oracle_margins: np.ndarray,
              labels: np.ndarray, splits: dict[str, np.ndarray], cache: Path) -> dict[str, Any]:
    """Run one grid point on all originals (or read its cached result)."""
    path = cache / f"{point_name(name, point)}.json"
    if path.is_file():
        return read_json(path)
    result = configured_method(name, **point)(problem)
    row: dict[str, Any] = {
        "method": name, "point": point, "seconds": result.seconds,
        "compute_fraction": result.compute_fraction,
        "diverged": int(result.diverged.sum()), "klom": None, "val_accuracy": None,
    }
    if not result.diverged.any():
        row["klom"] = evaluate(result.logits, oracle_margins, labels, splits)
        row["val_accuracy"] = float(val_accuracy(result.logits, problem.task).mean())
    write_json(path, row)
    return row


def fmt(row: dict[str, Any] | None, label: str, grid: str) -> str:
    if row is None or row["klom"] is None:
        return f"{label:<14} {'all grid points diverged':>44}  {grid}"
    s = row["klom"]["splits"]
    point = ",".join(f"{k}={v}" for k, v in row["point"].items()) or "-"
    acc = row.get("val_accuracy")
    return (f"{label:<14} {s['forget']['p95']:7.2f} {s['retain']['p95']:7.2f} "
            f"{s['validation']['p95']:7.2f} {row['klom']['mean_p95']:7.2f} "
            f"{acc if acc is not None else float('nan'):6.3f} "
            f"{row.get('compute_fraction', 0.0):6.3f}  {grid:<9} {point}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=100, help="models per fleet (N)")
    ap.add_argument("--out", type=Path, default=Path("runs/baselines"))
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    ap.add_argument("--full-grid", action="store_true",
                    help="run the shipped grids of configs/methods instead of QUICK")
    ap.add_argument("--forget", nargs="*", default=[], metavar="NAME=FILE",
                    help="extra forget sets (index files)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    t_start = time.perf_counter()
    task = load_task("digits")
    n, labels = task.data.n_train, task.data.y_all.numpy()
    root = args.out / f"n{args.models}"
    originals = fleet(task, root / "originals", "original", args.models, seed=0)
    ensemble = originals.ensemble(task)
    tables = []
    for set_name, forget in forget_sets(task, args.forget).items():
        d = root / set_name
        d.mkdir(parents=True, exist_ok=True)
        write_indices(d / "forget.txt", forget)
        oracle = fleet(task, d / "oracles", "oracle", args.models, seed=1, forget=forget)
        oracle2 = fleet(task, d / "oracles_2", "oracle", args.models, seed=2, forget=forget)
        oracle_m = margins(np.asarray(oracle.logits), labels)
        splits = {"forget": forget, "retain": np.setdiff1d(np.arange(n), forget),
                  "validation": np.arange(n, len(labels))}
        floor = klom_summary(klom(oracle_m, margins(np.asarray(oracle2.logits), labels)), splits)
        oracle2_acc = val_accuracy(torch.tensor(np.asarray(oracle2.logits)), task)
        floor_row = {"point": {}, "klom": floor, "compute_fraction": 1.0,
                     "val_accuracy": float(oracle2_acc.mean())}
        problem = Problem.single(task, ensemble, forget, keys=originals.keys, device="cpu")
        lines = [fmt(floor_row, "noise floor", "-")]
        for name in args.methods:
            t0 = time.perf_counter()
            grid = method_config(name)[1] if args.full_grid else QUICK[name]
            rows = [run_point(name, p, problem, oracle_m, labels, splits, d / "results")
                    for p in grid_points(grid)]
            ok = [r for r in rows if r["klom"] is not None]
            size = f"{len(ok)}/{len(rows)}"
            if name == "retrain":  # each budget is its own row
                lines += [fmt(r, f"retrain@{r['point']['fraction']}", "1/1") for r in rows]
            else:
                best = min(ok, key=lambda r: r["klom"]["splits"]["forget"]["p95"], default=None)
                lines.append(fmt(best, name, size))
            print(f"[{set_name}] {name}: {len(rows)} points, "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
        tables.append((set_name, len(forget), lines))
    header = (f"{'method':<14} {'forget':>7} {'retain':>7} {'val':>7} {'mean':>7} "
              f"{'valacc':>6} {'cost':>6}  {'ok/grid':<9} best point (by forget KLoM95)")
    print(f"\nKLoM95 = 95th percentile over points of KL(oracle || unlearned), "
          f"N = {args.models} models a side; cost = compute fraction of one retraining")
    for set_name, size, lines in tables:
        print(f"\n## {set_name} ({size} examples)\n{header}")
        print("\n".join(lines))
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    write_json(root / "summary.json", {s: lines for s, _, lines in tables})


if __name__ == "__main__":
    main()
