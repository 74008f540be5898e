"""Group-aware attribution on digits: every predictor variant tried, per forget set.

Runs on the cached fleets of a benchmark (default: configs/bench/digits.yaml in
runs/bench/digits, trained and fitted first if missing): the bench's report originals,
its report oracles (scoring) and selection oracles (the noise floor, and the second
fleet behind the two reference bounds). For each evaluated forget set (and the config's
own forget-set files) and each variant it prints the RMS error of the predicted mean
margin on the forget and retain points (against the scoring oracles), then KLoM95 of
DM-Direct and of DMM (one fixed grid point) per split in both directions, beside:

* floor: the second oracle fleet;
* exact mean: the originals with each point's mean margin moved to the second oracle
  fleet's (what a perfect per-point shift reaches);
* exact mean + spread: also each point's spread scaled to that fleet's.

Variants: ridge (linear datamodels, the bench's); ridge + leave-group-out amplification
(c = 2); ridge + substitute-share scales (s0, k fitted on the calibration sets); density
path everywhere; the group backend without its ridge terms (the path at the forget points,
plain ridge elsewhere: the previous default), without the blend, without the
amplification, without spread; group (the default backend). Nothing is fitted on the
evaluated sets: their numbers here are reports.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from dmm.attribution.forget_suite import margin_matrix
from dmm.bench import load_bench_config
from dmm.bench import protocol as P
from dmm.evals import Splits, klom, margins
from dmm.studies.group_variants import Amplified, DensityOnly, SubstituteScaled
from dmm.unlearning.base import Inputs, Problem
from dmm.unlearning.configs import configured_method

DMM = {"lr": 5e-3, "epochs": 6, "batch_size": 16, "forget_share": 0.4}


def p95(oracle: np.ndarray, other: np.ndarray, splits: Splits) -> str:
    """forget/retain/val KLoM95, fwd | rev."""
    cells = []
    for d in ("oracle||unlearned", "unlearned||oracle"):
        v = klom(oracle, other, d)
        cells.append("/".join(f"{np.percentile(v[splits[k]], 95):.2f}" for k in splits))
    return " | ".join(cells)


def fit_substitute_scaled(ws: P.Workspace, ridge, group) -> SubstituteScaled:  # noqa: ANN001
    """s0, k by least squares of the forget points' mean margin shifts on the calibration
    sets (the group backend's own calibration sets)."""
    from scipy.optimize import least_squares

    originals, oracles = P.calibration_fleets(ws)
    nbhd = P.neighbourhood_fleets(ws)
    labels = ws.labels
    z0 = np.asarray(originals.logits, dtype=np.float32)
    m0 = margins(z0, labels).mean(0)
    sets = [(f.forget, margins(np.asarray(f.logits), labels).mean(0)) for f in [*oracles, *nbhd]]
    variant = SubstituteScaled(ridge, group, ridge.scale, 0.0)

    def resid(theta: np.ndarray) -> np.ndarray:
        variant.s0, variant.k = theta
        out = []
        for f, mo in sets:
            h = variant.predict(z0[:8], f, f).numpy()
            out.append(margins(h, labels[f]).mean(0) - margins(z0[:8, f], labels[f]).mean(0)
                       - (mo[f] - m0[f]))
        return np.concatenate(out)

    variant.s0, variant.k = least_squares(resid, [ridge.scale, 1.0]).x
    return variant


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=Path("configs/bench/digits.yaml"))
    ap.add_argument("--out", type=Path, default=Path("runs/bench/digits"))
    ap.add_argument("--sets", nargs="*", default=None, help="forget sets (default: all)")
    args = ap.parse_args()
    t_start = time.perf_counter()
    ws = P.Workspace(load_bench_config(args.config), args.out, device="cpu", progress=False)
    files = P.user_forget_sets(ws)
    ridge = P.fit_attribution(ws)
    group = P.fit_group(ws, ridge)
    labels, n = ws.labels, ws.n
    variants = {
        "ridge": ridge,
        "ridge+amplified(c=2)": Amplified(ridge, margin_matrix(ridge, labels), 2.0),
        "ridge+substitutes": fit_substitute_scaled(ws, ridge, group),
        "density everywhere": DensityOnly(group),
        "group, path + ridge": dataclasses.replace(group, amplify=0.0, blend=0.0),
        "group, no blend": dataclasses.replace(group, blend=0.0),
        "group, no amplify": dataclasses.replace(group, amplify=0.0),
        "group, no spread": dataclasses.replace(group, spread=(0.0, 0.0)),
        "group (default)": group,
    }
    originals = P.originals(ws)
    sets = P.load_forget_sets(ws, files)
    if args.sets:
        sets = {k: v for k, v in sets.items() if k in args.sets}
    fleet, ens = originals["report"]
    z0 = np.asarray(fleet.logits, dtype=np.float32)
    m0 = margins(z0, labels)
    for name, forget in sets.items():
        report = P.sides(ws, "report", name, forget, originals)
        ma = report.oracle_outputs.margins
        mb = margins(np.asarray(report.other_oracles.logits), labels)
        splits = Splits.of(forget, n, len(labels))
        mean_only = m0 + (mb.mean(0) - m0.mean(0))
        mean_spread = mb.mean(0) + (m0 - m0.mean(0)) * (mb.std(0) / np.maximum(m0.std(0), 1e-6))
        print(f"\n{name} ({len(forget)} examples): KLoM95 forget/retain/val, "
              "KL(oracle||.) | KL(.||oracle)")
        print(f"  {'floor':22s} {p95(ma, mb, splits)}")
        print(f"  {'exact mean':22s} {p95(ma, mean_only, splits)}")
        print(f"  {'exact mean + spread':22s} {p95(ma, mean_spread, splits)}")
        for label, predictor in variants.items():
            h = predictor.predict(z0, forget).numpy()
            e = (margins(h, labels).mean(0) - m0.mean(0)) - (ma.mean(0) - m0.mean(0))
            rms = (f"rms {np.sqrt((e[splits.forget] ** 2).mean()):.2f}/"
                   f"{np.sqrt((e[splits.retain] ** 2).mean()):.2f}")
            problem = Problem.single(ws.task, ens, forget, keys=fleet.keys, device="cpu",
                                     inputs=Inputs(predictor=predictor))
            mu = margins(configured_method("dmm", **DMM)(problem).logits.numpy(), labels)
            print(f"  {label:22s} {rms} | dm-direct {p95(ma, margins(h, labels), splits)} "
                  f"| dmm {p95(ma, mu, splits)}", flush=True)
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
