"""The benchmark protocol's steps (DESIGN.md sections 5-7), over one :class:`Workspace`.

1. :func:`fit_attribution`: datamodels on a datamodel fleet, the forget-set suite built
   from them, the DM-Direct scale s fitted on calibration sets that are never evaluated.
2. :func:`originals`: two independent fleets of N originals (selection, report);
   :func:`sides`: per forget set and phase, N oracles that score and N that OM matches.
3. :func:`run_point`: one method at one grid point on all N originals of a phase, scored
   by the metrics; :func:`choose` keeps, per forget set, the best point among those where
   no model diverged: by default the lowest worse-of-both-directions mean KLoM95, with the
   ``paper`` selection the lowest forget KLoM95 in KL(oracle || unlearned).
4. The chosen point is re-run on the *report* originals and scored against the *report*
   oracles; :func:`floor_row` scores the noise floor, KLoM(report oracles || selection
   oracles) at the same N. Oracle Matching matches the oracle fleet it is not scored
   against, whose models retrain its originals' own keys (:func:`sides`).
5. :func:`ulira`: U-LiRA per forget set and method (chosen point) on a shadow fleet.

Fleets live in a :class:`~dmm.fleet.FleetCache`; every run's scores are cached as JSON
keyed by method, hyperparameters, forget set, fleets and metrics, so a re-run reproduces
the tables exactly without recomputing. Each run not cached yet is one job
(:class:`RunJob`, :func:`run_job`) of the config's executor (:mod:`dmm.executor`); a
:class:`Runs` is what the jobs read, opened once per process (on a Ray worker from the
cache on the shared filesystem).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from dmm.artifacts import read_json, write_json
from dmm.attribution.linear import LinearAttribution
from dmm.bench.config import BenchConfig
from dmm.ensemble import Ensemble
from dmm.errors import DmmError
from dmm.evals.metrics import REVISION, Case, Outputs, columns, evaluate_case
from dmm.evals.splits import Splits
from dmm.executor import ExecutorSpec
from dmm.fleet import Fleet, FleetCache
from dmm.forget_sets import read_indices
from dmm.tasks import Task, load_task
from dmm.training import accelerator
from dmm.unlearning.base import Inputs, Problem
from dmm.unlearning.configs import configured_method
from dmm.unlearning.registry import method_class

SEEDS = {"datamodels": 1, "select": 2, "report": 3, "calibration": 4, "shadows": 5,
         "density": 7, "trak": 8}
PHASES = ("select", "report")
FLOOR = "noise-floor"  # the label of the noise floor's rows (a second oracle fleet)


@dataclass
class Workspace:
    """One benchmark's config, task and caches (fleets, runs) under ``out/cache``."""

    cfg: BenchConfig
    out: Path
    device: str = "auto"
    log: Callable[[str], None] = print
    progress: bool = True
    task: Task = field(init=False)
    fleets: FleetCache = field(init=False)
    timings: dict[str, float] = field(default_factory=dict)
    backend_costs: dict[str, dict[str, int]] = field(default_factory=dict)
    backend_ids: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.task = load_task(self.cfg.task, self.cfg.data)
        self.cache = self.out / "cache"
        self.fleets = FleetCache(self.cache / "fleets", self.task, self.cfg.shard_size,
                                 self.device, self.log, self.progress, self.cfg.executor)
        self.fleets.timings = self.timings
        self.labels = self.task.data.y_all.numpy()
        self.n = self.task.data.n_train

    def fleet(self, name: str, kind: str, models: int, seed: int, **kwargs: Any) -> Fleet:
        """A fleet of the benchmark (its seed offset by the config's seed)."""
        return self.fleets.get(name, kind, models, self.cfg.seed * 100 + seed, **kwargs)

    def splits(self, forget: np.ndarray) -> Splits:
        return Splits.of(forget, self.n, len(self.labels))


@dataclass
class Sides:
    """One protocol phase on one forget set: originals, scoring oracles, matching oracles."""

    originals: Fleet
    ensemble: Ensemble
    oracles: Fleet
    oracle_outputs: Outputs
    other_oracles: Fleet


def calibration_fleets(ws: Workspace) -> tuple[Fleet, list[Fleet]]:
    """Originals and, per fresh random calibration set (never evaluated), its oracles."""
    spec = ws.cfg.attribution
    originals = ws.fleet("calibration_originals", "original", spec.calibration_models,
                         SEEDS["calibration"])
    rng = np.random.default_rng([ws.cfg.seed, SEEDS["calibration"]])
    oracles = [ws.fleet(f"calibration_oracles_{i}", "oracle", spec.calibration_models,
                        SEEDS["calibration"] + 10 + i,
                        forget=np.sort(rng.choice(ws.n, size, replace=False)))
               for i, size in enumerate(spec.calibration_sizes)]
    return originals, oracles


def fit_attribution(ws: Workspace) -> LinearAttribution:
    """Linear datamodels on the datamodel fleet, the forget suite built from them, and
    their DM-Direct scale fitted on the random calibration sets."""
    from dmm.attribution import (
        build_forget_suite,
        fit_datamodels,
        fit_scale_from_fleets,
        load_attribution,
        save_attribution,
        write_suite,
    )

    spec, cache = ws.cfg.attribution, ws.cache
    path, suite = cache / "attribution", cache / "forget_sets"
    if (path / "manifest.json").is_file() and (suite / "suite.json").is_file():
        return load_attribution(path, ws.task)
    dm = ws.fleet("datamodels", "datamodel", spec.models, SEEDS["datamodels"])
    t0 = time.perf_counter()
    ws.log(f"fitting {spec.solver} datamodels on {spec.models} models")
    attr = fit_datamodels(dm, spec.solver, device=_solver_device(ws))
    ws.timings["datamodels fit"] = time.perf_counter() - t0
    s = ws.cfg.forget_sets
    sets, info = build_forget_suite(
        attr, ws.labels, tuple(s.random_sizes), tuple(s.pc_sizes), s.pc_top_bottom,
        tuple(s.classes), s.class_size, s.seed)
    write_suite(sets, info, suite, overwrite=True)
    originals, oracles = calibration_fleets(ws)
    attr.scale, attr.info["scale_fit"] = fit_scale_from_fleets(attr, originals, oracles)
    ws.log(f"DM-Direct scale s = {attr.scale:.3f} (from {len(oracles)} fresh random sets)")
    save_attribution(attr, path, ws.task, overwrite=True)
    return load_attribution(path, ws.task)


def _cached(ws: Workspace, path: Path, settings: dict) -> Any:
    """The backend cached at ``path`` if it was fitted with ``settings``, else None (logged)."""
    from dmm.attribution import load_attribution

    if not (path / "manifest.json").is_file():
        return None
    cached = load_attribution(path, ws.task)
    if cached.info.get("settings") == settings:
        return cached
    ws.log(f"{path} was fitted with other settings: refitting")
    return None


def _solver_device(ws: Workspace) -> str:
    return "cuda" if accelerator(ws.device) == "gpu" else "cpu"


def neighbourhoods(ws: Workspace) -> list[np.ndarray]:
    """Input-space neighbourhoods (never evaluated): for each size k of the group spec,
    the k training examples nearest (Euclidean, on the raw inputs) to a seeded random
    training example."""
    x = ws.task.data.x_train.reshape(ws.n, -1).numpy().astype(np.float64)
    rng = np.random.default_rng([ws.cfg.seed, SEEDS["calibration"], 1])
    out = []
    for k in ws.cfg.attribution.group.neighbourhood_sizes:
        centre = x[rng.integers(ws.n)]
        out.append(np.sort(np.argsort(((x - centre) ** 2).sum(1), kind="stable")[:k]))
    return out


def neighbourhood_fleets(ws: Workspace) -> list[Fleet]:
    """The oracles of each calibration neighbourhood (:func:`neighbourhoods`)."""
    return [ws.fleet(f"calibration_neighbourhood_{i}_{len(f)}", "oracle",
                     ws.cfg.attribution.calibration_models, SEEDS["calibration"] + 50 + i,
                     forget=f) for i, f in enumerate(neighbourhoods(ws))]


def fit_group(ws: Workspace, linear: LinearAttribution) -> Any:
    """The group-aware backend: density datamodels, substitutes, calibration (cached)."""
    from dmm.attribution import load_attribution, save_attribution
    from dmm.attribution.group import MODEL_REVISION, fit_group_from_fleets

    path = ws.cache / "attribution_group"
    spec, g = ws.cfg.attribution, ws.cfg.attribution.group
    settings = {**asdict(g), "calibration_sizes": list(spec.calibration_sizes),
                "calibration_models": spec.calibration_models, "model": MODEL_REVISION}
    if (cached := _cached(ws, path, settings)) is not None:
        return cached
    density = ws.fleet("density", "datamodel", g.models, SEEDS["density"],
                       alpha_range=tuple(g.alpha_range))
    dm = ws.fleet("datamodels", "datamodel", spec.models, SEEDS["datamodels"])
    originals, oracles = calibration_fleets(ws)
    nbhd = neighbourhood_fleets(ws)
    t0 = time.perf_counter()
    ws.log(f"fitting the group-aware backend on {g.models} density models")
    attr = fit_group_from_fleets(linear, density, dm, originals, [*oracles, *nbhd],
                                 g.neighbours, g.power)
    for entry, f in zip(attr.info["calibration"]["sets"], [*oracles, *nbhd], strict=True):
        entry["construction"] = ("random" if f in oracles else "input-space neighbourhood "
                                 "of a seeded random training example")
    attr.info["settings"] = settings
    ws.timings["group backend fit"] = time.perf_counter() - t0
    save_attribution(attr, path, ws.task, overwrite=True)
    return load_attribution(path, ws.task)


def fit_trak(ws: Workspace) -> LinearAttribution:
    """TRAK on originals, in the datamodel fleet's logit units, scale on the calibration
    sets (cached)."""
    from dmm.attribution import fit_scale_from_fleets, load_attribution, save_attribution
    from dmm.attribution.trak_scores import fit_trak as trak

    path = ws.cache / "attribution_trak"
    spec = ws.cfg.attribution
    settings = {**asdict(spec.trak), "calibration_sizes": list(spec.calibration_sizes),
                "calibration_models": spec.calibration_models}
    if (cached := _cached(ws, path, settings)) is not None:
        return cached
    ens = ws.fleet("trak_originals", "original", spec.trak.models, SEEDS["trak"])
    dm = ws.fleet("datamodels", "datamodel", spec.models, SEEDS["datamodels"])
    t0 = time.perf_counter()
    attr = trak(ws.task, ens, dm, None, spec.trak.proj_dim, spec.trak.lambda_reg,
                device=_solver_device(ws))
    attr.scale, attr.info["scale_fit"] = fit_scale_from_fleets(attr, *calibration_fleets(ws))
    attr.info["settings"] = settings
    ws.timings["TRAK fit"] = time.perf_counter() - t0
    save_attribution(attr, path, ws.task, overwrite=True)
    return load_attribution(path, ws.task)


def backends(ws: Workspace, linear: LinearAttribution) -> dict[str, Any]:
    """Every attribution backend of the config, by name, the default first, with what each
    cost once (models trained, by fleet) in ``ws.backend_costs``."""
    from dmm.attribution import fit_datamodels, fit_scale_from_fleets

    spec, out = ws.cfg.attribution, {}
    calib = spec.calibration_models * (1 + len(spec.calibration_sizes))
    linear_cost = {"datamodel fleet": spec.models, "calibration": calib}
    for name in spec.backends:
        if name == spec.solver:
            out[name], cost = linear, linear_cost
        elif name in ("ridge", "lasso"):
            attr = fit_datamodels(ws.fleet("datamodels", "datamodel", spec.models,
                                           SEEDS["datamodels"]), name,
                                  device=_solver_device(ws))
            attr.scale, attr.info["scale_fit"] = fit_scale_from_fleets(
                attr, *calibration_fleets(ws))
            out[name], cost = attr, linear_cost
        elif name == "group":
            out[name] = fit_group(ws, linear)
            cost = {**linear_cost, "density fleet": spec.group.models,
                    "calibration": calib + spec.calibration_models
                    * len(spec.group.neighbourhood_sizes)}
        else:
            out[name] = fit_trak(ws)
            cost = {"originals scored": spec.trak.models,
                    "datamodel fleet (units, LDS)": min(spec.models, 1500),
                    "calibration": calib}
        ws.backend_costs[name] = {**cost, "models": sum(cost.values())}
        ws.backend_ids[name] = identity(out[name])
    return out


def identity(attr: Any) -> str:
    """What distinguishes one fitted backend from another on the same (immutable) fleets:
    its calibrated parameters and settings; part of every run's cache key."""
    fitted = {k: getattr(attr, k) for k in ("scale", "s", "kappa", "alpha_min", "spread",
                                            "abar", "amplify", "blend") if hasattr(attr, k)}
    return _key({**fitted, "settings": attr.info.get("settings")})


def suite_names(ws: Workspace) -> list[str]:
    """The names of the sets :func:`dmm.attribution.build_forget_suite` writes."""
    s = ws.cfg.forget_sets
    k = s.pc_top_bottom
    return [*(f"random_{n}" for n in s.random_sizes),
            *(f"pc{pc}_top_{n}" for pc in (1, 2) for n in s.pc_sizes),
            *([f"pc{pc}_top_{k}_bottom_{k}" for pc in (1, 2)] if k else []),
            *(f"class_{c}_{s.class_size}" for c in s.classes)]


def user_forget_sets(ws: Workspace) -> dict[str, np.ndarray]:
    """The config's own forget-set files, validated (before anything is trained)."""
    taken = set(suite_names(ws))
    out = {}
    for name, path in ws.cfg.forget_sets.files.items():
        if name in taken:
            raise DmmError(f"forget_sets.files: {name!r} is also a suite set's name")
        out[name] = read_indices(path, ws.n)
    return out


def load_forget_sets(ws: Workspace, files: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The evaluated sets: the suite's (all of them by default, none for ``evaluate: []``;
    a name of ``files`` in ``evaluate`` means that file), then every file."""
    folder = ws.cache / "forget_sets"
    names = ws.cfg.forget_sets.evaluate
    if names is None:
        names = sorted(p.stem for p in folder.glob("*.txt"))
    suite = [s for s in names if s not in files]
    missing = [s for s in suite if not (folder / f"{s}.txt").is_file()]
    if missing:
        raise DmmError(f"unknown forget sets {missing} (the suite has "
                       f"{sorted(p.stem for p in folder.glob('*.txt'))})")
    return {**{s: read_indices(folder / f"{s}.txt", ws.n) for s in suite}, **files}


def originals(ws: Workspace, phases: Iterable[str] = PHASES
              ) -> dict[str, tuple[Fleet, Ensemble]]:
    """The selection and report fleets of N originals, with their models loaded."""
    out = {}
    for phase in phases:
        f = ws.fleet(f"originals_{phase}", "original", ws.cfg.models, SEEDS[phase])
        out[phase] = (f, f.ensemble(ws.task))
    return out


def sides(ws: Workspace, phase: str, name: str, forget: np.ndarray,
          originals: dict[str, tuple[Fleet, Ensemble]]) -> Sides:
    """Phase ``phase`` of forget set ``name``: its originals, the N oracles that score it
    and the other phase's N oracles (what Oracle Matching matches).

    Each phase's oracles are keyed like the *other* phase's originals: oracle j of
    ``oracles_<set>_of_<phase>`` retrains original j of that phase from its model key (the
    same initialisation; the data order of a smaller training set differs) without the
    forget set.
    So the oracles that score a phase are independent of its originals, and the ones
    Oracle Matching matches there are its originals' own retrained twins, which
    fine-tuning can reach (matching an unrelated oracle left OM's retain margins 1.3-1.5x
    the floor in KL(unlearned || oracle) on development sets; its twin reaches the floor)."""
    other = "report" if phase == "select" else "select"
    oracles = ws.fleet(f"oracles_{name}_of_{other}", "oracle", ws.cfg.models, SEEDS[other],
                       forget=forget)
    matching = ws.fleet(f"oracles_{name}_of_{phase}", "oracle", ws.cfg.models, SEEDS[phase],
                        forget=forget)
    fleet, ens = originals[phase]
    return Sides(fleet, ens, oracles, Outputs.from_logits(oracles.logits, ws.labels), matching)


def phase_metrics(ws: Workspace, phase: str) -> list[str]:
    """The metrics a phase's rows carry: all but U-LiRA (:func:`ulira` adds it to report
    rows), and the bootstrap intervals and the competition score only on reported rows
    (selection, by KLoM, needs neither)."""
    skip = {"ulira"} | ({"klom_interval", "competition_score"} if phase == "select" else set())
    return [m for m in ws.cfg.metrics if m not in skip]


def score(ws: Workspace, outputs: Outputs, sides: Sides, forget: np.ndarray,
          phase: str = "report") -> dict[str, Any]:
    """The metrics of ``phase`` of ``outputs`` against the scoring oracles of ``sides``."""
    case = Case(sides.oracle_outputs, outputs, ws.splits(forget))
    return columns(evaluate_case(case, phase_metrics(ws, phase)))


def floor_row(ws: Workspace, set_name: str, forget: np.ndarray, report: Sides
              ) -> dict[str, Any]:
    """The noise floor: the selection oracles scored against the report oracles."""
    other = Outputs.from_logits(report.other_oracles.logits, ws.labels)
    return {"forget_set": set_name, "method": FLOOR, "params": {}, "diverged": 0,
            "compute_fraction": 1.0, "seconds": 0.0, **score(ws, other, report, forget)}


def variants(ws: Workspace, method: str) -> list[str | None]:
    """The attribution backends a method runs with: every configured one if it needs a
    predictor, else none."""
    if "predictor" in method_class(method).requires:
        return list(ws.cfg.attribution.backends)
    return [None]


def label(ws: Workspace, name: str, backend: str | None) -> str:
    """A row's name: ``name`` (a method or its label), ``[backend]`` unless the default."""
    return name if backend in (None, ws.cfg.attribution.backends[0]) else f"{name}[{backend}]"


def run_path(ws: Workspace, phase: str, set_name: str, forget: np.ndarray, method: str,
             hparams: dict[str, Any], sides: Sides, backend: str | None = None) -> Path:
    """Where :func:`run_point` caches its row (keyed by everything that shapes it)."""
    key = _key({"method": method, "hparams": hparams, "forget": forget.tolist(),
                "originals": sides.originals.manifest["seed"],
                "oracles": sides.oracles.manifest["seed"],
                "matching": sides.other_oracles.manifest["seed"], "models": ws.cfg.models,
                "metrics": phase_metrics(ws, phase), "metrics_revision": REVISION,
                "backend": backend,
                **({"attribution": ws.backend_ids[backend]} if backend else {})})
    folder = method if backend is None else f"{method}[{backend}]"
    return ws.cache / "runs" / phase / set_name / folder / f"{key}.json"


def run_point(ws: Workspace, phase: str, set_name: str, forget: np.ndarray, method: str,
              hparams: dict[str, Any], sides: Sides, predictor: Any,
              backend: str | None = None) -> dict[str, Any]:
    """One method at one grid point on all N originals of a phase (cached); report rows
    carry the file of their outputs and the oracles they were scored against."""
    path = run_path(ws, phase, set_name, forget, method, hparams, sides, backend)
    outputs_file = path.with_suffix(".npz")
    if not path.is_file():
        write_json(path, _unlearn(ws, phase, set_name, forget, method, hparams, sides,
                                  predictor, outputs_file))
    row = read_json(path)
    if phase == "report":  # located now, so that the out dir can move
        row |= {"outputs_file": str(outputs_file), "oracles": str(sides.oracles.path)}
    return row


def _unlearn(ws: Workspace, phase: str, set_name: str, forget: np.ndarray, method: str,
             hparams: dict[str, Any], sides: Sides, predictor: Any,
             outputs_file: Path) -> dict[str, Any]:
    from dmm.artifacts import atomic_path
    from dmm.attribution.oracle import OraclePredictor

    problem = Problem.single(ws.task, sides.ensemble, forget, keys=sides.originals.keys,
                             device=ws.device,
                             inputs=Inputs(predictor=predictor,
                                           oracle=OraclePredictor(sides.other_oracles)))
    m = configured_method(method, **hparams)
    result = m(problem)
    outputs = Outputs.from_logits(result.logits.numpy(), ws.labels)
    if phase == "report":
        with atomic_path(outputs_file) as tmp, open(tmp, "wb") as f:
            np.savez(f, margins=outputs.margins, correct=outputs.correct)
    return {"forget_set": set_name, "method": method, "params": result.hparams,
            "diverged": int(result.diverged.sum()),
            "compute_fraction": result.compute_fraction, "seconds": result.seconds,
            **score(ws, outputs, sides, forget, phase)}


SELECTION = {
    "worst-direction": "the lowest max(mean KLoM95 of KL(oracle || unlearned), mean KLoM95 "
                       "of KL(unlearned || oracle)) over the forget, retain and validation "
                       "splits",
    "paper": "the lowest forget-split KLoM95 of KL(oracle || unlearned) (the published "
             "protocol)",
}


def criterion(row: dict[str, Any], selection: str) -> float:
    """What selection minimises for one grid point's row."""
    if selection == "paper":
        return row["klom95_forget"]
    return max(row["klom95_mean"], row["klom95_mean_rev"])


def choose(method: str, rows: list[dict[str, Any]], selection: str = "worst-direction"
           ) -> list[dict[str, Any]]:
    """The grid point(s) carried to the report phase: the lowest :func:`criterion` among
    points with no diverged model (every point for methods that report each one)."""
    ok = [r for r in rows if r["diverged"] == 0] or rows
    if method_class(method).select_each_point:
        return ok
    return [min(ok, key=lambda r: (criterion(r, selection), r["compute_fraction"]))]


def ulira_path(ws: Workspace, sets: dict[str, np.ndarray], row: dict[str, Any]) -> Path:
    """Where :func:`ulira` caches one report row's U-LiRA."""
    spec, backend = ws.cfg.ulira, row.get("backend")
    size = min(len(sets[row["forget_set"]]), spec.max_forget)
    key = _key({"method": row["method_name"], "hparams": row["params"], "size": size,
                "spec": asdict(spec), "oracles": "twins of the shadows",
                **({"backend": backend, "attribution": ws.backend_ids[backend]}
                   if backend else {})})
    return ws.cache / "runs" / "ulira" / f"{row['method_name']}-{key}.json"


def ulira(ws: Workspace, sets: dict[str, np.ndarray], row: dict[str, Any],
          predictors: dict[str, Any], shadows: Fleet) -> float:
    """U-LiRA AUC of one report row's method at its chosen hyperparameters, with its
    backend (cached)."""
    from dmm.evals.ulira_harness import run_ulira

    spec = ws.cfg.ulira
    name, backend = row["method_name"], row.get("backend")
    size = min(len(sets[row["forget_set"]]), spec.max_forget)
    path = ulira_path(ws, sets, row)
    if not path.is_file():
        def oracles(masks: np.ndarray) -> Fleet:  # shadow j's twin: its key, its mask - F_j
            return ws.fleet(f"ulira_oracles_{size}_of_shadows", "subset", len(masks),
                            SEEDS["shadows"], masks=masks)

        method = configured_method(name, **row["params"])
        predictor = predictors.get(backend) if backend else None
        res = run_ulira(ws.task, method, shadows, spec.targets, size, seed=ws.cfg.seed,
                        device=ws.device, inputs=Inputs(predictor=predictor), oracles=oracles)
        write_json(path, {"auc": res["auc"], "report": res})
    return read_json(path)["auc"]


@dataclass(frozen=True)
class RunJob:
    """One bench run: ``method`` (with ``backend``) at grid point ``hparams`` on forget set
    ``set_name`` in phase ``select`` or ``report``, or (phase ``ulira``) its U-LiRA at the
    chosen point."""

    phase: str
    set_name: str
    method: str
    hparams: dict[str, Any]
    backend: str | None = None

    def __str__(self) -> str:
        name = self.method if self.backend is None else f"{self.method}[{self.backend}]"
        return (f"bench run {self.phase} {self.set_name} {name} "
                f"{json.dumps(self.hparams, sort_keys=True, default=str)}")

    def row(self) -> dict[str, Any]:
        """What :func:`ulira` reads of a report row."""
        return {"method_name": self.method, "backend": self.backend, "params": self.hparams,
                "forget_set": self.set_name}


class Runs:
    """What the runs of one benchmark read, each part opened on first use: the forget sets,
    the attribution backends, the originals, each set's sides, the U-LiRA shadows.

    It reaches another process (a Ray worker) as its config, run directory, device and
    sets, and is opened there from the cache once per process (:func:`open_runs`): every
    fleet and backend exists by then, trained or fitted by the driver (a backend that is
    fitted, not stored, is fitted again there, identically).
    """

    def __init__(self, ws: Workspace, sets: dict[str, np.ndarray],
                 predictors: dict[str, Any] | None = None,
                 originals: dict[str, tuple[Fleet, Ensemble]] | None = None):
        self.ws, self.sets, self._predictors = ws, sets, predictors
        self._originals = dict(originals or {})
        self._sides: dict[tuple[str, str], Sides] = {}
        self._shadows: Fleet | None = None

    def __reduce__(self) -> tuple:
        """By absolute paths: a worker's working directory is not the driver's."""
        cfg = self.ws.cfg
        task = str(Path(cfg.task).resolve()) if Path(cfg.task).suffix in (
            ".yaml", ".yml") else cfg.task
        data = None if cfg.data is None else str(Path(cfg.data).resolve())
        return open_runs, (replace(cfg, task=task, data=data), self.ws.out.resolve(),
                           self.ws.device, self.sets)

    def predictors(self) -> dict[str, Any]:
        if self._predictors is None:
            self._predictors = backends(self.ws, fit_attribution(self.ws))
        return self._predictors

    def sides(self, phase: str, set_name: str) -> Sides:
        if (phase, set_name) not in self._sides:
            if phase not in self._originals:
                self._originals |= originals(self.ws, (phase,))
            self._sides[phase, set_name] = sides(self.ws, phase, set_name,
                                                 self.sets[set_name], self._originals)
        return self._sides[phase, set_name]

    def shadows(self) -> Fleet:
        if self._shadows is None:
            self._shadows = self.ws.fleet("shadows", "datamodel", self.ws.cfg.ulira.models,
                                          SEEDS["shadows"], save_weights=True)
        return self._shadows

    def cached(self, job: RunJob) -> bool:
        """Whether ``job``'s result is in the cache already."""
        if job.phase == "ulira":
            return ulira_path(self.ws, self.sets, job.row()).is_file()
        return run_path(self.ws, job.phase, job.set_name, self.sets[job.set_name], job.method,
                        job.hparams, self.sides(job.phase, job.set_name), job.backend).is_file()


_OPEN: dict[str, Runs] = {}  # per process


def open_runs(cfg: BenchConfig, out: Path, device: str, sets: dict[str, np.ndarray]) -> Runs:
    """The :class:`Runs` of a benchmark in this process (a worker's: quiet, and training
    in-process whatever a job trains, as U-LiRA's oracles)."""
    key = _key({"cfg": asdict(cfg), "out": str(out), "device": device,
                "sets": {k: v.tolist() for k, v in sets.items()}})
    if key not in _OPEN:
        ws = Workspace(replace(cfg, executor=ExecutorSpec()), Path(out), device,
                       log=lambda _: None, progress=False)
        _OPEN.clear()
        _OPEN[key] = Runs(ws, sets)
    return _OPEN[key]


def run_job(runs: Runs, job: RunJob) -> dict[str, Any]:
    """Run (or read from the cache) one bench run: its row, or ``{"auc": ...}``."""
    if job.phase == "ulira":
        return {"auc": ulira(runs.ws, runs.sets, job.row(), runs.predictors(), runs.shadows())}
    predictor = runs.predictors().get(job.backend) if job.backend else None
    return run_point(runs.ws, job.phase, job.set_name, runs.sets[job.set_name], job.method,
                     job.hparams, runs.sides(job.phase, job.set_name), predictor, job.backend)


def _key(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def method_of(label: str) -> str:
    """The method name of a row label (``retrain@0.1`` -> ``retrain``, ``dmm[ridge]`` ->
    ``dmm``)."""
    return label.split("@")[0].split("[")[0]
