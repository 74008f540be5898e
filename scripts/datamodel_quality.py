"""Datamodel quality on digits: LDS of ridge, lasso and TRAK on held-out subset models.

Fits (or reuses, under ``--root``) regression datamodels on a 3,000-model datamodel fleet
(random halves) and TRAK on an ensemble of independently trained originals, then
measures each one's LDS on an *independent* datamodel fleet (another seed, never used
for fitting): the Spearman correlation across models between predicted and actual
margins, averaged over targets (validation targets; train targets alongside).

With ``--noise_models N`` it also estimates the ceiling that training noise puts on any
LDS: N models trained on one fixed random half differ only by their seed; the share of
the margin variance across the datamodel fleet that is not seed noise bounds the
correlation any predictor of the subset can reach.

The last line printed is the LDS of the lasso datamodels on validation targets.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from dmm.attribution.datamodels import fit_datamodels
from dmm.attribution.quality import attribution_lds
from dmm.attribution.store import cached_attribution
from dmm.evals import margins
from dmm.fleet import FleetCache, fleet_masks
from dmm.tasks import load_task


def noise_ceiling(task, fleets: FleetCache, test, models: int) -> float:  # noqa: ANN001
    """sqrt(1 - seed variance / total variance) of validation margins, averaged over targets."""
    n = task.data.n_train
    half = fleet_masks("datamodel", 1, n, seed=12345)[0]
    fixed = fleets.get(f"fixed_half{models}", "oracle", models, seed=7,
                       forget=np.flatnonzero(~half))
    seed_var = margins(fixed.logits[:, n:], fixed.labels[n:]).var(0, ddof=1)
    total_var = margins(test.logits[:, n:], test.labels[n:]).var(0, ddof=1)
    return float(np.sqrt(np.clip(1 - seed_var / total_var, 0, 1)).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=Path("runs/attr"), help="fleets and artifacts")
    p.add_argument("--models", type=int, default=3000, help="datamodel fleet size")
    p.add_argument("--test_models", type=int, default=500, help="independent LDS fleet size")
    p.add_argument("--trak_models", type=int, default=20, help="TRAK ensemble size (0: skip)")
    p.add_argument("--proj_dim", type=int, default=512)
    p.add_argument("--lambda_reg", type=float, default=10.0)
    p.add_argument("--noise_models", type=int, default=0, help="seed-noise ceiling (0: skip)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    t_start = time.perf_counter()
    task = load_task("digits")
    root, n = args.root, task.data.n_train
    fleets = FleetCache(root, task, device="cpu", progress=False)
    fleet = fleets.get(f"dm{args.models}", "datamodel", args.models, seed=0)
    test = fleets.get(f"dm_test{args.test_models}", "datamodel", args.test_models, seed=1)
    val, train = np.arange(n, n + task.data.n_val), np.arange(n)

    rows = []
    for solver in ("ridge", "lasso"):
        attr = cached_attribution(root / solver, task,
                                  lambda s=solver: fit_datamodels(fleet, s, device=args.device))
        rows.append((f"datamodels {solver}", attr, attr.info.get("fit_seconds", float("nan"))))
    if args.trak_models:
        from dmm.attribution.trak_scores import fit_trak

        ens = fleets.get(f"trak_ens{args.trak_models}", "original", args.trak_models, seed=200)
        attr = cached_attribution(root / "trak", task, lambda: fit_trak(
            task, ens, fleet, None, args.proj_dim, args.lambda_reg, device=args.device))
        rows.append((f"TRAK ({args.trak_models} models)", attr,
                     attr.info.get("fit_seconds", float("nan"))))

    print(f"\nLDS on {len(test)} independent subset models ({test.path}), fitting fleet "
          f"{len(fleet)} models")
    print(f"{'backend':24s} {'LDS val':>8s} {'LDS train':>9s} {'fit s':>7s}  regularisation")
    results = {}
    for name, attr, seconds in rows:
        lv = attribution_lds(attr, test.masks, test.logits, test.labels, val)
        lt = attribution_lds(attr, test.masks, test.logits, test.labels, train)
        results[name] = lv
        reg = attr.info.get("regularisation", {})
        desc = (f"path {np.round(reg['path'], 3).tolist()} chosen {reg['chosen_counts']}"
                if "chosen_counts" in reg else str(reg))
        print(f"{name:24s} {lv:8.4f} {lt:9.4f} {seconds:7.0f}  {desc}")
    if args.noise_models:
        ceiling = noise_ceiling(task, fleets, test, args.noise_models)
        print(f"seed-noise ceiling on validation margins ({args.noise_models} models on one "
              f"fixed half): {ceiling:.4f}")
    print(f"total {time.perf_counter() - t_start:.0f} s")
    print(f"LDS {results['datamodels lasso']:.4f}")


if __name__ == "__main__":
    main()
