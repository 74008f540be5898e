"""The benchmark's typed YAML config (``configs/bench/<task>.yaml``)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dmm.config import load_yaml, parse_dataclass
from dmm.errors import DmmError
from dmm.evals.metrics import DEFAULT_METRICS, check_metrics


@dataclass
class MethodSpec:
    """One benchmarked method.

    Args:
        grid: hyperparameter grid searched per forget set (default: the ``grid`` of
            ``configs/methods/<name>.yaml``); ``{}`` runs the defaults only.
        defaults: fixed hyperparameters, over the method config's ``defaults``.
    """

    grid: dict[str, list[Any]] | None = None
    defaults: dict[str, Any] = field(default_factory=dict)


@dataclass
class AttributionSpec:
    """The datamodels DMM and DM-Direct use.

    Args:
        models: size of the datamodel fleet (random halves).
        solver: ``ridge`` (closed form) or ``lasso``.
        calibration_sizes: sizes of the fresh random forget sets (not in the suite, never
            evaluated) whose oracles fit the DM-Direct scale s.
        calibration_models: oracles per calibration set (against as many originals).
    """

    models: int = 3000
    solver: Literal["ridge", "lasso"] = "ridge"
    calibration_sizes: list[int] = field(default_factory=lambda: [50, 50, 50])
    calibration_models: int = 50


@dataclass
class SuiteSpec:
    """The forget-set suite (DESIGN.md section 6) and which of its sets are benchmarked.

    Args:
        random_sizes, pc_sizes, pc_top_bottom, classes, class_size, seed: see
            :func:`dmm.attribution.build_forget_suite`.
        evaluate: the sets to benchmark (default: all).
    """

    random_sizes: list[int] = field(default_factory=lambda: [10, 50, 150])
    pc_sizes: list[int] = field(default_factory=lambda: [10, 50])
    pc_top_bottom: int = 50
    classes: list[int] = field(default_factory=lambda: [3, 8])
    class_size: int = 50
    seed: int = 0
    evaluate: list[str] | None = None


@dataclass
class UliraSpec:
    """U-LiRA per forget set and method (0 models turns it off).

    Args:
        models: shadow models on random halves (targets included).
        targets: of which held out as attack targets.
        max_forget: each shadow forgets min(|forget set|, max_forget) pool examples.
    """

    models: int = 64
    targets: int = 16
    max_forget: int = 50


@dataclass
class ReportSpec:
    """What the tables single out.

    Args:
        headline: methods whose ratio to the noise floor the checks state.
        histograms: methods whose worst points get margin histograms.
    """

    headline: list[str] = field(default_factory=lambda: ["dmm"])
    histograms: list[str] = field(default_factory=lambda: ["dmm", "do-nothing"])


@dataclass
class BenchConfig:
    """Everything ``dmm bench`` runs.

    Args:
        task: task name or YAML path; ``data`` its local data if it needs some.
        models: N, the originals and oracles per fleet (KLoM's sample size).
        seed: base seed of every fleet of the benchmark.
        shard_size: models trained at once.
        methods: benchmarked methods by registered name.
        metrics: the metrics of every row (dmm.evals.metrics), as ``dmm eval`` computes them.
        selection: how each method's grid point is chosen per forget set on the selection
            fleets: ``worst-direction`` (default): the lowest of max(mean KLoM95 in
            KL(oracle || unlearned), mean KLoM95 in KL(unlearned || oracle)), so that damage
            visible in either direction counts; ``paper``: the published protocol, the
            lowest forget-split KLoM95 in KL(oracle || unlearned).
        report: which methods the checks and histograms single out.
        quick: overrides applied by ``--quick`` (same keys as this config).
    """

    task: str = "digits"
    data: str | None = None
    models: int = 100
    seed: int = 0
    shard_size: int = 256
    attribution: AttributionSpec = field(default_factory=AttributionSpec)
    forget_sets: SuiteSpec = field(default_factory=SuiteSpec)
    methods: dict[str, MethodSpec] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    selection: Literal["worst-direction", "paper"] = "worst-direction"
    report: ReportSpec = field(default_factory=ReportSpec)
    ulira: UliraSpec = field(default_factory=UliraSpec)
    quick: dict[str, Any] = field(default_factory=dict)


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_bench_config(path: str | Path, quick: bool = False) -> BenchConfig:
    """Read a bench config; with ``quick``, apply its ``quick`` overrides first."""
    raw = load_yaml(path)
    if quick:
        if not raw.get("quick"):
            raise DmmError(f"{path} has no quick profile (a 'quick:' section)")
        raw = _merge(raw, raw["quick"])
    cfg = parse_dataclass(BenchConfig, raw, str(path))
    if cfg.models < 4:
        raise DmmError(f"{path}: models must be at least 4, got {cfg.models}")
    if not cfg.methods:
        raise DmmError(f"{path}: no methods to benchmark")
    try:
        check_metrics(cfg.metrics)
    except ValueError as e:
        raise DmmError(f"{path}: {e}") from None
    return cfg
