"""Time KLoM on the digits-sized case: 100 oracle vs 100 unlearned models, 1,797 points.

Usage: python scripts/klom_speed.py [--models 100] [--points 1797] [--repeats 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dmm.evals import klom


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--points", type=int, default=1797)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    oracle = rng.normal(size=(args.models, args.points)) * 3.0
    unlearned = rng.normal(size=(args.models, args.points)) * 3.0 + 0.5
    klom(oracle, unlearned)  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        klom(oracle, unlearned)
        times.append(time.perf_counter() - start)
    times_ms = np.array(times) * 1e3
    print(
        f"KLoM, {args.models} vs {args.models} models, {args.points} points: "
        f"median {np.median(times_ms):.1f} ms, min {times_ms.min():.1f} ms, "
        f"max {times_ms.max():.1f} ms over {args.repeats} runs"
    )


if __name__ == "__main__":
    main()
