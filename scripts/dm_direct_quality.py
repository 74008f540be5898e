"""DM-Direct on digits: how close are predicted retrained margins to real oracles?

For each evaluated forget set F (default: random_50 and pc1_top_50 of the task's
forget-set suite), DM-Direct h = f(theta0) - s * sum_{i in F} beta_i is applied to each
of 100 independently trained originals and compared, by KLoM(oracle || DM-Direct), with
100 oracles (models retrained without F). The noise floor is KLoM of a second,
independent 100-oracle fleet against the first. Reported per split (forget / retain /
validation): the 95th percentile of KLoM, DM-Direct with the calibrated scale s, with
s = 1, and the originals themselves (no unlearning). The column "perfect mean shift" moves
each original's margin at each point by the exact change of the mean margin (measured on
the second oracle fleet): what DM-Direct, which adds one shift per point to every
original, would reach with perfect datamodels and scale. It is the reference for a
per-point shift at this N, as the noise floor is the reference for any method.

The stored scale s is fitted on calibration forget sets that are never evaluated: by
default four fresh random sets of 50 examples (seeds 101-104; 50 oracles each against
50 other originals), i.e. requests of the kind and size expected, and it is recorded in
the attribution's manifest. For contrast, s is also fitted on one concentrated set
(default pc2_top_50, never evaluated) and shown as an extra column: a linear datamodel
fitted on half-subsets over-predicts the effect of a few random deletions from the full
set (s < 1) but needs s near 1 for a coherent cluster, so one s cannot serve both.
Fleets and the suite are made once under ``--root`` and reused.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from dmm.attribution.calibration import fit_scale_from_fleets
from dmm.attribution.forget_suite import build_forget_suite, random_set, write_suite
from dmm.attribution.store import load_attribution, update_scale
from dmm.evals import Splits, klom_block, margins
from dmm.fleet import FleetCache
from dmm.forget_sets import read_indices
from dmm.studies.references import perfect_mean_shift
from dmm.tasks import load_task

SPLITS = ("forget", "retain", "validation")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=Path("runs/attr"), help="fleets and artifacts")
    p.add_argument("--attribution", type=Path, default=Path("runs/attr/lasso"))
    p.add_argument("--sets", nargs="+", default=["random_50", "pc1_top_50"])
    p.add_argument("--calibration_size", type=int, default=50,
                   help="size of the random calibration sets")
    p.add_argument("--calibration_seeds", type=int, nargs="+", default=[101, 102, 103, 104])
    p.add_argument("--concentrated", default="pc2_top_50",
                   help="suite set for the contrasting concentrated-set scale")
    p.add_argument("--models", type=int, default=100, help="originals and oracles per side")
    p.add_argument("--calibration_models", type=int, default=50,
                   help="oracles per calibration set, and calibration originals")
    args = p.parse_args()
    t_start = time.perf_counter()
    task = load_task("digits")
    n, n_points = task.data.n_train, task.data.n_train + task.data.n_val
    root = args.root
    attr = load_attribution(args.attribution, task)
    suite = root / "forget_sets"
    if not suite.exists():
        write_suite(*build_forget_suite(attr, task.data.y_all.numpy()), suite)
    forget = {name: read_indices(suite / f"{name}.txt", n)
              for name in {*args.sets, args.concentrated}}
    if args.concentrated in args.sets:
        raise SystemExit("the concentrated calibration set must not be an evaluated set")
    calib_names = []
    for seed in args.calibration_seeds:
        name = f"random_{args.calibration_size}_seed{seed}"
        forget[name] = random_set(n, args.calibration_size, np.random.default_rng(seed))
        calib_names.append(name)

    fleets = FleetCache(root, task, device="cpu", progress=False)
    calib_orig = fleets.get(f"calib_orig{args.calibration_models}", "original",
                            args.calibration_models, seed=6000)

    def oracles(name: str):  # noqa: ANN202
        return fleets.get(f"calib_oracle_{name}", "oracle", args.calibration_models, seed=5000,
                          forget=forget[name])

    s, how = fit_scale_from_fleets(attr, calib_orig, [oracles(name) for name in calib_names])
    how["sets"] = calib_names
    update_scale(args.attribution, task, s, how)
    attr.scale = s
    s_conc, _ = fit_scale_from_fleets(attr, calib_orig, [oracles(args.concentrated)])
    print(f"scale s = {s:.4f} fitted on {', '.join(calib_names)} (per set: "
          + ", ".join(f"{e['scale']:.3f}" for e in how["per_set"])
          + f"); on {args.concentrated}: {s_conc:.4f}")

    originals = fleets.get(f"orig{args.models}", "original", args.models, seed=100)
    z0 = torch.from_numpy(np.array(originals.logits, dtype=np.float32))
    labels = originals.labels
    verdicts = []
    for name in args.sets:
        oracle_a, oracle_b = (fleets.get(f"oracle_{name}_s{k}", "oracle", args.models,
                                         seed=1000 * k, forget=forget[name]) for k in (1, 2))
        effect = attr.forget_effect(
            torch.from_numpy(np.isin(np.arange(n), forget[name])[None]).float())
        sides = {
            "floor (2nd oracles)": oracle_b.logits,
            "perfect mean shift": perfect_mean_shift(z0.numpy(), oracle_b.logits, labels),
            f"DM-Direct s={s:.2f}": (z0 - s * effect).numpy(),
            f"[s={s_conc:.2f} concentr.]": (z0 - s_conc * effect).numpy(),
            "DM-Direct s=1": (z0 - effect).numpy(),
            "originals": z0.numpy(),
        }
        splits = Splits.of(forget[name], n, n_points)
        reference = margins(oracle_a.logits, labels)
        table = {k: klom_block(reference, margins(v, labels), splits)["splits"]
                 for k, v in sides.items()}
        print(f"\n{name} ({len(forget[name])} examples): KLoM95, KL(oracle || .), "
              f"{args.models} models per side")
        print(f"{'split':11s}" + "".join(f"{k:>22s}" for k in sides) + f"{'ratio':>8s}")
        for split in SPLITS:
            p95 = {k: table[k][split]["p95"] for k in sides}
            floor, vals = p95["floor (2nd oracles)"], list(p95.values())
            ratio = p95[f"DM-Direct s={s:.2f}"] / floor
            verdicts.append((name, split, ratio, p95["perfect mean shift"] / floor))
            print(f"{split:11s}" + "".join(f"{v:22.3f}" for v in vals) + f"{ratio:8.2f}")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    for name, split, ratio, bound in verdicts:
        mark = "within" if ratio <= 1.3 else "ABOVE"
        print(f"{name:12s} {split:11s} DM-Direct / floor = {ratio:.2f} ({mark} 1.3x); "
              f"perfect mean shift / floor = {bound:.2f}")


if __name__ == "__main__":
    main()
