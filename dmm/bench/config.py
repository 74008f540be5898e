"""The benchmark's typed YAML config (``configs/bench/<task>.yaml``)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dmm.config import load_yaml, parse_dataclass
from dmm.errors import DmmError
from dmm.evals.metrics import DEFAULT_METRICS, check_metrics
from dmm.executor import ExecutorSpec


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
class GroupSpec:
    """The group-aware backend (:mod:`dmm.attribution.group`).

    Args:
        models: size of its density fleet.
        alpha_range: each density-fleet model keeps each example with its own probability,
            drawn uniformly in this range.
        neighbours: substitutes kept per example.
        power: exponent of the substitution weights max(cos, 0) ** power.
        neighbourhood_sizes: sizes of the input-space neighbourhoods (the nearest training
            examples to seeded random training points) that, with the random calibration
            sets, calibrate it (never evaluated).
    """

    models: int = 3000
    alpha_range: list[float] = field(default_factory=lambda: [0.3, 0.97])
    neighbours: int = 64
    power: float = 8.0
    neighbourhood_sizes: list[int] = field(default_factory=lambda: [20, 30, 50, 50, 100])


@dataclass
class TrakSpec:
    """The TRAK backend: scores from ``models`` originals, units from the datamodel fleet.

    Args:
        models: originals whose gradients TRAK projects.
        proj_dim: projection dimension.
        lambda_reg: ridge on Phi^T Phi.
    """

    models: int = 20
    proj_dim: int = 512
    lambda_reg: float = 10.0


@dataclass
class AttributionSpec:
    """The attribution backends DMM and DM-Direct use.

    Args:
        models: size of the datamodel fleet (random halves): the linear datamodels, which
            also build the forget-set suite.
        solver: ``ridge`` (closed form) or ``lasso``, for those datamodels.
        calibration_sizes: sizes of the fresh random forget sets (not in the suite, never
            evaluated) whose oracles fit the DM-Direct scale s.
        calibration_models: oracles per calibration set (against as many originals).
        backends: the backends every method that needs one runs with; the first is the
            default (its rows keep the method's name, the others get ``[backend]``):
            ``group`` (:mod:`dmm.attribution.group`, on top of the ``solver`` datamodels),
            ``ridge`` or ``lasso`` (linear datamodels on the datamodel fleet) or ``trak``.
        group: the group-aware backend's settings.
        trak: the TRAK backend's settings.
    """

    models: int = 3000
    solver: Literal["ridge", "lasso"] = "ridge"
    calibration_sizes: list[int] = field(default_factory=lambda: [50, 50, 50])
    calibration_models: int = 50
    backends: list[Literal["group", "ridge", "lasso", "trak"]] = field(
        default_factory=lambda: ["group", "ridge"])
    group: GroupSpec = field(default_factory=GroupSpec)
    trak: TrakSpec = field(default_factory=TrakSpec)


@dataclass
class SuiteSpec:
    """The forget-set suite (DESIGN.md section 6) and which of its sets are benchmarked.

    Args:
        random_sizes, pc_sizes, pc_top_bottom, classes, class_size, seed: see
            :func:`dmm.attribution.build_forget_suite`.
        evaluate: the suite's sets to benchmark (default: all; ``[]``: none, only ``files``).
        files: users' own forget sets, name -> index file (.txt/.csv/.npy/.json; a
            relative path is relative to the config file); each is evaluated like the
            suite's sets.
    """

    random_sizes: list[int] = field(default_factory=lambda: [10, 50, 150])
    pc_sizes: list[int] = field(default_factory=lambda: [10, 50])
    pc_top_bottom: int = 50
    classes: list[int] = field(default_factory=lambda: [3, 8])
    class_size: int = 50
    seed: int = 0
    evaluate: list[str] | None = None
    files: dict[str, str] = field(default_factory=dict)


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
        executor: where fleet shards and runs execute (:class:`dmm.executor.ExecutorSpec`:
            ``kind`` local or ray, ``address``, ``cpus_per_task``, ``gpus_per_task``,
            ``max_retries``); results do not depend on it.
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
    executor: ExecutorSpec = field(default_factory=ExecutorSpec)
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
    base = Path(path).resolve().parent
    cfg.forget_sets.files = {name: str(base / f) for name, f in cfg.forget_sets.files.items()}
    if not cfg.attribution.backends or len(set(cfg.attribution.backends)) < len(
            cfg.attribution.backends):
        raise DmmError(f"{path}: attribution.backends must name distinct backends")
    if cfg.models < 4:
        raise DmmError(f"{path}: models must be at least 4, got {cfg.models}")
    if not cfg.methods:
        raise DmmError(f"{path}: no methods to benchmark")
    if cfg.forget_sets.evaluate == [] and not cfg.forget_sets.files:
        raise DmmError(f"{path}: no forget sets to benchmark (forget_sets.evaluate is empty "
                       "and there are no files)")
    try:
        check_metrics(cfg.metrics)
    except ValueError as e:
        raise DmmError(f"{path}: {e}") from None
    return cfg
