"""KLoM: KL divergence of margins per evaluation point, in both directions.

Definition (DESIGN.md section 5), for each point x:
  1. N oracle models (retrained without the forget set) and N unlearned models;
     their margins at x, clipped to [-100, 100].
  2. 20 equal-width bins spanning the joint [min, max] of both samples (width 1
     when min == max); every sample falls in a bin, the maximum included.
  3. p = oracle histogram, q = unlearned histogram, both normalised.
  4. ``oracle||unlearned`` (the default; the direction of DESIGN.md):
     where p > 0 and q == 0, q := 1e-5, q renormalised; KLoM(x) = sum_b p_b log(p_b / q_b).
     ``unlearned||oracle`` (the direction of the DMM paper's released auditing code and
     of EasyDUB): the same with the roles swapped, the 1e-5 floor on empty *oracle* bins;
     KLoM(x) = sum_b q_b log(q_b / p_b). It penalises an unlearned distribution that is
     wider than the oracles', which the default direction barely sees.
  Natural log. Either is 0 when the histograms agree and about ln(1e5) = 11.51 at most
  (exactly ln(1e5 + 1) when each side's samples all fall in one bin and the two bins
  differ; never above ln(1e5 + 19)).

Everything is vectorised over points: the cost is a few passes over [N, points].
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ._arrays import as_float, as_index

N_BINS = 20
CLIP = 100.0
Q_FLOOR = 1e-5
DIRECTION = "KL(oracle || unlearned)"
DIRECTIONS = ("oracle||unlearned", "unlearned||oracle")
KLOM_CAP = float(np.log(1.0 / Q_FLOOR))  # nominal cap ln(1e5); see the module docstring

MAIN_SPLITS = ("forget", "retain", "validation")


def _check_pair(oracle_margins: Any, unlearned_margins: Any) -> tuple[np.ndarray, np.ndarray]:
    oracle = as_float(oracle_margins, "oracle_margins", ndim=2)
    unlearned = as_float(unlearned_margins, "unlearned_margins", ndim=2)
    if oracle.shape[0] != unlearned.shape[0]:
        raise ValueError(
            f"KLoM needs the same number of models on both sides: "
            f"{oracle.shape[0]} oracle vs {unlearned.shape[0]} unlearned"
        )
    if oracle.shape[1] != unlearned.shape[1]:
        raise ValueError(
            f"KLoM needs the same points on both sides: "
            f"{oracle.shape[1]} oracle points vs {unlearned.shape[1]} unlearned points"
        )
    if oracle.shape[0] == 0:
        raise ValueError("KLoM needs at least one model on each side")
    return np.clip(oracle, -CLIP, CLIP), np.clip(unlearned, -CLIP, CLIP)


def klom_bin_edges(oracle_margins: Any, unlearned_margins: Any) -> np.ndarray:
    """The KLoM bin edges of every point, shape [points, 21] (clipped margins)."""
    oracle, unlearned = _check_pair(oracle_margins, unlearned_margins)
    lo, width = _joint_range(oracle, unlearned)
    return lo[:, None] + width[:, None] * np.arange(N_BINS + 1)


def _joint_range(oracle: np.ndarray, unlearned: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo = np.minimum(oracle.min(axis=0), unlearned.min(axis=0))
    hi = np.maximum(oracle.max(axis=0), unlearned.max(axis=0))
    width = (hi - lo) / N_BINS
    width = np.where(hi > lo, width, 1.0)
    return lo, width


def _bin_index(x: np.ndarray, lo: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Bin of each sample; bins are [e_b, e_{b+1}) except the last, which is closed."""
    t = x - lo
    t /= width  # >= 0: lo is the minimum
    idx = t.astype(np.int64)  # floor
    np.clip(idx, 0, N_BINS - 1, out=idx)
    # Where rounding could put a sample on the wrong side of an edge, decide it against
    # the edges themselves (as np.histogram does): only samples next to an edge.
    t -= idx
    tol = max(1e-9, 4 * N_BINS * float(np.finfo(t.dtype).eps))  # 1e-9 for float64
    near = np.flatnonzero((t < tol) | (t > 1 - tol))
    if near.size:
        flat, xs = idx.reshape(-1), x.reshape(-1)[near]
        col = near % x.shape[-1]  # lo and width are per point: the last axis
        lo_n, w_n = np.broadcast_to(lo, x.shape[-1:])[col], np.broadcast_to(width,
                                                                           x.shape[-1:])[col]
        k = flat[near]
        k = np.where((xs < lo_n + w_n * k) & (k > 0), k - 1, k)
        k = np.where((xs >= lo_n + w_n * (k + 1)) & (k < N_BINS - 1), k + 1, k)
        flat[near] = k
    return idx


def _histograms(samples: np.ndarray, lo: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Counts [points, N_BINS] of samples [N, points]."""
    n_points = samples.shape[1]
    idx = _bin_index(samples, lo, width)  # [N, points], a fresh array
    idx += np.arange(n_points) * N_BINS
    return np.bincount(idx.ravel(), minlength=n_points * N_BINS).reshape(n_points, N_BINS)


def klom(oracle_margins: Any, unlearned_margins: Any,
         direction: str = "oracle||unlearned") -> np.ndarray:
    """Per-point KLoM, shape [points]: KL(p_oracle || q_unlearned) by default, or
    KL(q_unlearned || p_oracle) with ``direction="unlearned||oracle"``.

    Args:
        oracle_margins: [N, points] margins of N oracle models (retrained without F).
        unlearned_margins: [N, points] margins of N unlearned models, same points.
        direction: ``oracle||unlearned`` or ``unlearned||oracle``.

    The argument order is fixed (oracles first); ``direction`` names the reference.
    Raises ValueError for different N, different point counts, arrays that are not
    2-D, NaN/inf margins or an unknown direction.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    oracle, unlearned = _check_pair(oracle_margins, unlearned_margins)
    lo, width = _joint_range(oracle, unlearned)
    p = _histograms(oracle, lo, width) / oracle.shape[0]
    q = _histograms(unlearned, lo, width) / unlearned.shape[0]
    return _kl(p, q) if direction == "oracle||unlearned" else _kl(q, p)


def _kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p || q) per row of histograms [points, bins], q floored at 1e-5 where p > 0."""
    q = np.where((p > 0) & (q == 0), Q_FLOOR, q)
    q = q / q.sum(axis=1, keepdims=True)
    ratio = np.where(p > 0, p / np.where(q > 0, q, 1.0), 1.0)
    return (p * np.log(ratio)).sum(axis=1)


def klom_summary(values: Any, splits: Mapping[str, Any], direction: str = DIRECTION
                 ) -> dict[str, Any]:
    """Summarise per-point KLoM values by split.

    Args:
        values: [points] KLoM values (from :func:`klom`).
        splits: split name -> indices (or boolean mask) into the points.

    Returns a JSON-serialisable dict::

        {"direction": "KL(oracle || unlearned)",
         "splits": {name: {"p95", "p99", "mean", "max", "n_points"}},
         "mean_p95": mean of the forget/retain/validation p95 (None unless all three
                     splits are present and non-empty)}
    """
    v = as_float(values, "values", ndim=1)
    out: dict[str, Any] = {}
    for name, index in splits.items():
        idx = as_index(index, name, v.shape[0])
        if idx.size == 0:
            out[name] = {"p95": None, "p99": None, "mean": None, "max": None, "n_points": 0}
            continue
        s = v[idx]
        out[name] = {
            "p95": float(np.percentile(s, 95)),
            "p99": float(np.percentile(s, 99)),
            "mean": float(s.mean()),
            "max": float(s.max()),
            "n_points": int(idx.size),
        }
    p95s = [out[k]["p95"] for k in MAIN_SPLITS if k in out]
    mean_p95 = float(np.mean(p95s)) if len(p95s) == 3 and None not in p95s else None
    return {"direction": direction, "splits": out, "mean_p95": mean_p95}


class _Smoother:
    """Resamples of the N models of ``x`` [N, points]: drawn models plus Gaussian kernel
    noise of Silverman's bandwidth per point, rescaled so that each point's mean and
    variance are the sample's (a smoothed, variance-preserving bootstrap: no two
    resampled margins coincide). float32 throughout."""

    def __init__(self, x: np.ndarray):
        self.x = x.astype(np.float32)
        mean, sd = x.mean(0, dtype=np.float64), x.std(0, dtype=np.float64)
        sd = np.where(x.max(0) > x.min(0), sd, 0.0)  # a constant point stays constant
        h = (1.06 * x.shape[0] ** -0.2) * sd
        self.mean = np.where(sd > 0, mean, x[0]).astype(np.float32)
        self.h = h.astype(np.float32)
        self.shrink = (1.0 / np.sqrt(1.0 + (h / np.where(sd > 0, sd, 1.0)) ** 2)).astype(
            np.float32)

    def __call__(self, draws: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """[b, N, points] for ``draws`` [b, N] model indices."""
        out = rng.standard_normal((len(draws), *self.x.shape), dtype=np.float32)
        out *= self.h
        out += self.x[draws]
        out -= self.mean
        out *= self.shrink
        out += self.mean
        return out


def bootstrap_p95(oracle_margins: Any, unlearned_margins: Any, splits: Mapping[str, Any],
                  resamples: int = 200, seed: int = 0, chunk: int = 10
                  ) -> dict[str, dict[str, np.ndarray]]:
    """Bootstrap samples of each split's KLoM95 (and of the mean of the three), in both
    directions: every resample draws N oracle and N unlearned models with replacement,
    independently per side and the same draw for every point, smooths them
    (:class:`_Smoother`) and recomputes the per-point KLoM (its bins included) and the
    split's 95th percentile.

    Why smoothed: the binned KL of N samples a side is biased upwards by sampling noise,
    and a plain resample's duplicated models make its histograms lumpier still, so plain
    resamples sit above the estimate (two fleets of one distribution, N = 100: KLoM95
    0.67, plain resamples 1.35 on average, their 2.5-97.5% range never containing it).
    Smoothed resamples have the estimate's spread; :func:`klom_interval` removes their
    remaining bias.

    Resamples are drawn in chunks of ``chunk``, each from its own stream of ``seed``
    (so the result depends on ``seed`` and ``chunk``, not on the threads that run them).

    Returns {direction: {split: [resamples], "mean": [resamples]}}.
    """
    if resamples < 1 or chunk < 1:
        raise ValueError(f"resamples and chunk must be at least 1, got {resamples}, {chunk}")
    oracle, unlearned = _check_pair(oracle_margins, unlearned_margins)
    n, points = oracle.shape
    idx = {k: as_index(v, k, points) for k, v in splits.items()}
    smooth_o, smooth_u = _Smoother(oracle), _Smoother(unlearned)

    def run(part: tuple[int, np.random.SeedSequence]) -> dict[str, dict[str, list[float]]]:
        b, seq = part  # its own stream: the result does not depend on the threads
        rng = np.random.default_rng(seq)
        d = rng.integers(0, n, size=(b, 2, n))
        o = smooth_o(d[:, 0], rng).transpose(1, 0, 2).reshape(n, b * points)
        u = smooth_u(d[:, 1], rng).transpose(1, 0, 2).reshape(n, b * points)
        lo, width = _joint_range(o, u)
        p = _histograms(o, lo, width) / n
        q = _histograms(u, lo, width) / n
        found: dict[str, dict[str, list[float]]] = {}
        for direction, (ref, other) in zip(DIRECTIONS, ((p, q), (q, p)), strict=True):
            values = _kl(ref, other).reshape(b, points)
            found[direction] = {k: np.percentile(values[:, v], 95, axis=1).tolist()
                                for k, v in idx.items()}
        return found

    sizes = [min(chunk, resamples - s) for s in range(0, resamples, chunk)]
    parts = list(zip(sizes, np.random.SeedSequence(seed).spawn(len(sizes)), strict=True))
    with ThreadPoolExecutor(max_workers=min(len(parts), os.cpu_count() or 1, 4)) as pool:
        found = list(pool.map(run, parts))
    out = {d: {k: [v for f in found for v in f[d][k]] for k in idx} for d in DIRECTIONS}
    result = {d: {k: np.asarray(v) for k, v in parts.items()} for d, parts in out.items()}
    for parts in result.values():
        if all(k in parts for k in MAIN_SPLITS):
            parts["mean"] = np.mean([parts[k] for k in MAIN_SPLITS], axis=0)
    return result


def klom_interval(oracle_margins: Any, unlearned_margins: Any, splits: Mapping[str, Any],
                  resamples: int = 200, seed: int = 0) -> dict[str, dict[str, list[float]]]:
    """95% bootstrap interval [lo, hi] of each split's KLoM95 (and of the mean of the
    three), in both directions: the 2.5th-97.5th percentiles of :func:`bootstrap_p95`,
    shifted by the resamples' bias (their mean minus the estimate), lo clipped at 0.

    Measured coverage of the true expected KLoM95 (200 points, N = 100, 40 trials):
    0.95 for two fleets of one distribution, 0.97 for a 1.3x wider one, 1.00 for shifts
    of 0.15-0.3 seed spreads, 0.75 at a saturated KLoM95 near 9.
    """
    oracle, unlearned = _check_pair(oracle_margins, unlearned_margins)
    boot = bootstrap_p95(oracle, unlearned, splits, resamples, seed)
    out: dict[str, dict[str, list[float]]] = {}
    for direction in DIRECTIONS:
        summary = klom_summary(klom(oracle, unlearned, direction), splits, direction)
        estimate = {k: v["p95"] for k, v in summary["splits"].items()}
        if "mean" in boot[direction]:
            estimate["mean"] = summary["mean_p95"]
        out[direction] = {}
        for k, samples in boot[direction].items():
            bias = float(samples.mean()) - estimate[k]
            lo, hi = np.percentile(samples, [2.5, 97.5]) - bias
            out[direction][k] = [max(float(lo), 0.0), max(float(hi), 0.0)]
    return out
