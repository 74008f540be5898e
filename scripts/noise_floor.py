"""Noise floor, do-nothing and U-LiRA on digits; timing of ``dmm eval``.

1. For each concentrated forget set of 50 examples (50 of class 3; PC1 top-50 when
   ``--pc1_top_50`` names a set written by ``dmm forget-sets``): two independent
   100-oracle fleets give the noise floor KL(oracle || oracle_2), and 100 originals
   (do-nothing) are scored against the first, KLoM95 per split, through ``dmm eval``'s
   :func:`dmm.evals.commands.evaluate`.
2. U-LiRA on one shadow fleet (random halves, weights kept): do-nothing should be far
   from 0.5 AUC, retraining on half minus F (the ``retrain`` baseline) about 0.5.
3. The time of ``dmm eval`` on 100 vs 100 models, all 1,797 points (in process, and as
   a command including interpreter start-up).

Fleets and U-LiRA results are cached under ``--runs`` (default runs/evals).
Run: .venv/bin/python scripts/noise_floor.py --pc1_top_50 runs/attr_v1/forget_sets/pc1_top_50.txt
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from dmm.artifacts import check_compatible, read_json, write_json
from dmm.evals.evaluate import evaluate
from dmm.evals.ulira_harness import run_ulira
from dmm.fleet import FleetCache
from dmm.forget_sets import read_indices, write_indices
from dmm.tasks import Task, load_task
from dmm.unlearning.configs import configured_method

N_MODELS = 100
SEED_ORIGINALS, SEED_ORACLES, SEED_SHADOWS = 1000, 1100, 2000
ULIRA = {"models": 200, "n_targets": 40, "forget_size": 50, "seed": 0}


def forget_sets(task: Task, runs: Path, pc1: Path | None) -> dict[str, np.ndarray]:
    """50 random examples of class 3 (seed 0), and the PC1 top-50 set if given."""
    out = runs / "forget_sets"
    sets = {}
    path = out / "class_3_50.txt"
    if not path.exists():
        labels = task.data.y_train.numpy()
        rng = np.random.default_rng(0)
        write_indices(path, np.sort(rng.choice(np.flatnonzero(labels == 3), 50, replace=False)))
    sets["class_3_50"] = read_indices(path, task.data.n_train)
    if pc1 is not None:
        suite = pc1.parent / "suite.json"
        if suite.exists():
            check_compatible(read_json(suite), task.name, task.fingerprint, f"forget sets {suite}")
        idx = read_indices(pc1, task.data.n_train)
        write_indices(out / "pc1_top_50.txt", idx)
        sets["pc1_top_50"] = idx
    return sets


def klom_rows(task: Task, runs: Path, sets: dict[str, np.ndarray]) -> list[tuple]:
    fleets = FleetCache(runs, task, progress=False)
    originals = fleets.get("originals", "original", N_MODELS, SEED_ORIGINALS).path
    rows = []
    for i, (name, idx) in enumerate(sets.items()):
        oracles = [fleets.get(f"oracles_{name}_s{s + 1}", "oracle", N_MODELS,
                              SEED_ORACLES + 2 * i + s, forget=idx).path for s in (0, 1)]
        t0 = time.perf_counter()
        report = evaluate(oracles[0], originals, runs / f"eval_{name}", floor=oracles[1],
                          method="do-nothing", overwrite=True)
        seconds = time.perf_counter() - t0
        k = report["metrics"]["klom"]
        for label, block in (("noise floor", k["noise_floor"]), ("do-nothing", k)):
            p95 = [block["splits"][k]["p95"] for k in ("forget", "retain", "validation")]
            rows.append((name, label, *p95, block["mean_p95"]))
        rows.append((name, "eval seconds", seconds))
    return rows


def ulira_row(task: Task, runs: Path, method: str) -> dict:
    """U-LiRA of ``method`` on the shadow fleet, cached by its settings."""
    path = runs / f"ulira_{method}.json"
    settings = {**ULIRA, "method": method, "fleet_seed": SEED_SHADOWS}
    if path.exists():
        cached = read_json(path)
        if cached.get("settings") == settings:
            return cached["result"]
    shadows = FleetCache(runs, task, progress=False).get(
        "shadows", "datamodel", ULIRA["models"], SEED_SHADOWS, save_weights=True)
    result = run_ulira(task, configured_method(method), shadows, ULIRA["n_targets"],
                       ULIRA["forget_size"], ULIRA["seed"])
    write_json(path, {"settings": settings, "result": result})
    return result


def eval_command_seconds(runs: Path, name: str) -> float:
    """Wall time of ``dmm eval`` as a command (interpreter start-up and imports included)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dmm.cli", "eval", "--oracles",
                    str(runs / f"oracles_{name}_s1"), "--unlearned", str(runs / "originals"),
                    "--floor", str(runs / f"oracles_{name}_s2"), "--out",
                    str(runs / f"eval_{name}_cli"), "--overwrite"],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=Path("runs/evals"), help="cache directory")
    ap.add_argument("--pc1_top_50", type=Path, default=None,
                    help="PC1 top-50 forget set written by `dmm forget-sets` (optional)")
    args = ap.parse_args()
    t_start = time.perf_counter()
    task = load_task("digits")
    sets = forget_sets(task, args.runs, args.pc1_top_50)

    rows = klom_rows(task, args.runs, sets)
    print(f"\nKLoM95, {N_MODELS} vs {N_MODELS} models, KL(oracle || compared), digits")
    print(f"{'forget set':12s} {'compared':14s} {'forget':>7s} {'retain':>7s} "
          f"{'valid.':>7s} {'mean':>7s}")
    eval_times = []
    for row in rows:
        if row[1] == "eval seconds":
            eval_times.append(row[2])
            continue
        print(f"{row[0]:12s} {row[1]:14s} " + " ".join(f"{v:7.3f}" for v in row[2:]))

    ulira = {method: ulira_row(task, args.runs, method) for method in ("do-nothing", "retrain")}
    print(f"\nU-LiRA on digits: {ULIRA['models']} shadow models on random halves "
          f"({ULIRA['n_targets']} held out as targets), {ULIRA['forget_size']} forgotten "
          f"per model from a pool of {4 * ULIRA['forget_size']}")
    print(f"{'method':12s} {'AUC':>6s} {'acc':>6s} {'TPR@1%':>7s} {'TPR@.1%':>7s} "
          f"{'val acc':>7s} {'fgt acc':>7s}")
    for method, r in ulira.items():
        acc = r["model_accuracy"]
        print(f"{method:12s} {r['auc']:6.3f} {r['accuracy']:6.3f} {r['tpr_at_1pct_fpr']:7.3f} "
              f"{r['tpr_at_0.1pct_fpr']:7.3f} {acc['validation']:7.3f} {acc['forget']:7.3f}")

    first = next(iter(sets))
    cli = eval_command_seconds(args.runs, first)
    print("\ndmm eval, 100 vs 100 models (+100 noise floor), 1,797 points: "
          + ", ".join(f"{t:.1f} s" for t in eval_times)
          + f" in process; {cli:.1f} s as a command incl. start-up")
    print(f"total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
