"""``dmm eval``: the evaluation metrics on fleet stores or saved arrays, as a JSON report.

Inputs: an oracle fleet (retrained without the forget set; it fixes the task, the
training-set fingerprint, the labels and, through its manifest, the forget set), the
unlearned models (a fleet store; a ``.npy`` of logits [N, points, C] or margins
[N, points]; or a ``.npz`` with ``margins`` and ``correct``, as ``dmm bench`` saves each
run; train points first, then validation) and optionally a second, independent oracle
fleet for the noise floor. Splits: forget F, retain (train minus F), validation. The
metrics are those of :mod:`dmm.evals.metrics`, run from a list; U-LiRA runs when a
``ulira`` job is given (:func:`dmm.evals.ulira_harness.ulira_job`).

Every input is checked before anything is computed; the output directory (report.json,
report.md, klom.npy, histograms.png) is written atomically, so an error leaves nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dmm.errors import DmmError

from .klom import DIRECTION, MAIN_SPLITS, klom
from .margins import margins
from .metrics import DEFAULT_METRICS, Case, Outputs, check_metrics, evaluate_case
from .report import SCHEMA, klom_table_markdown
from .splits import Splits

if TYPE_CHECKING:
    from dmm.fleet import Fleet

_CHUNK = 16384  # points per margin computation (bounds float64 temporaries)


def _outputs(logits: np.ndarray, labels: np.ndarray) -> Outputs:
    m = np.empty(logits.shape[:2], dtype=np.float64)
    for s in range(0, logits.shape[1], _CHUNK):
        m[:, s:s + _CHUNK] = margins(logits[:, s:s + _CHUNK], labels[s:s + _CHUNK])
    return Outputs(m, logits.argmax(-1) == labels)


def load_outputs(path: Path, role: str, labels: np.ndarray, n_classes: int,
                 identity: dict | None = None) -> tuple[Outputs, Fleet | None]:
    """A fleet store (checked against ``identity``), or a ``.npy`` / ``.npz`` of outputs;
    returns the outputs and the fleet (None for arrays)."""
    from dmm.artifacts import check_compatible
    from dmm.fleet import load_fleet

    n_points = labels.shape[0]
    if path.is_dir():
        fleet = load_fleet(path)
        if identity is not None:
            check_compatible(fleet.manifest, identity["task"], identity["fingerprint"],
                             f"{role} fleet {path}")
        if not np.array_equal(fleet.labels, labels):
            raise DmmError(f"{role} fleet {path} has other labels than the oracle fleet")
        return _outputs(np.asarray(fleet.logits, dtype=np.float32), labels), fleet
    if path.suffix not in (".npy", ".npz"):
        raise DmmError(f"{role} input {path} must be a fleet directory, a .npy or a .npz file")
    if not path.is_file():
        raise DmmError(f"{role} input {path} does not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
        arrays = dict(loaded) if path.suffix == ".npz" else {"array": loaded}
    except (OSError, ValueError) as e:
        raise DmmError(f"cannot read {role} array {path}: {e}") from None
    if path.suffix == ".npz":
        if "margins" not in arrays:
            raise DmmError(f"{role} file {path} holds no 'margins' array")
        arr, correct = arrays["margins"], arrays.get("correct")
    else:
        arr, correct = arrays["array"], None
    if arr.dtype.kind != "f":
        raise DmmError(f"{role} array {path} must hold floats, got dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[1:] == (n_points, n_classes) and correct is None:
        out = _outputs(arr.astype(np.float32, copy=False), labels)
    elif arr.ndim == 2 and arr.shape[1] == n_points:
        if correct is not None and correct.shape != arr.shape:
            raise DmmError(f"{role} file {path}: 'correct' must have the shape of 'margins'")
        out = Outputs(arr.astype(np.float64, copy=False),
                      None if correct is None else correct.astype(bool))
    else:
        raise DmmError(f"{role} array {path} has shape {arr.shape}; expected logits "
                       f"[N, {n_points}, {n_classes}] or margins [N, {n_points}] "
                       "(train points, then validation)")
    if not np.isfinite(out.margins).all():
        raise DmmError(f"{role} array {path} holds NaN or infinite values")
    return out, None


def resolve_forget(oracle_manifest: dict, oracle_masks: np.ndarray, forget_file: Path | None,
                   source: str) -> tuple[np.ndarray, str]:
    """The forget set (from the file, else the manifest); the oracles must have been
    trained on exactly train minus F."""
    from dmm.forget_sets import read_indices

    n_train = oracle_manifest["n_train"]
    recorded = oracle_manifest.get("forget")
    if forget_file is not None:
        forget, origin = read_indices(forget_file, n_train), str(forget_file)
    elif recorded is not None:
        forget, origin = np.asarray(recorded, dtype=np.int64), f"manifest of {source}"
    else:
        raise DmmError(f"{source} records no forget set: pass --forget FILE")
    want = np.ones(n_train, dtype=bool)
    want[forget] = False
    if not (np.asarray(oracle_masks, dtype=bool) == want).all():
        raise DmmError(f"{source} was not trained on exactly the training set minus the "
                       f"forget set ({origin}); it is no oracle for it")
    return forget, origin


def _same_n(sides: dict[str, Outputs], models: int | None) -> dict[str, Outputs]:
    counts = {role: len(s) for role, s in sides.items()}
    if models is not None:
        short = {r: n for r, n in counts.items() if n < models}
        if models < 1 or short:
            raise DmmError(f"--models {models}: need that many models on every side, have "
                           + ", ".join(f"{n} {r}" for r, n in counts.items()))
        return {role: s.first(models) for role, s in sides.items()}
    if len(set(counts.values())) > 1:
        raise DmmError("KLoM compares the same number of models per side, got "
                       + ", ".join(f"{n} {r}" for r, n in counts.items())
                       + f" (pass --models {min(counts.values())} to use the first of each)")
    return sides


def _worst_points(values: np.ndarray, splits: Splits, n_worst: int,
                  n_train: int) -> tuple[list[int], list[str]]:
    points, titles = [], []
    for name in MAIN_SPLITS:
        idx = splits[name]
        for i in idx[np.argsort(-values[idx], kind="stable")[:n_worst]]:
            points.append(int(i))
            where = f"train {i}" if i < n_train else f"validation {i - n_train}"
            titles.append(f"{name}: {where}")
    return points, titles


def evaluate(oracles: Path, unlearned: Path, out: Path, floor: Path | None = None,
             forget: Path | None = None, method: str | None = None, models: int | None = None,
             n_worst: int = 4, metrics: Sequence[str] = DEFAULT_METRICS,
             ulira: Callable[[], dict[str, Any]] | None = None,
             overwrite: bool = False) -> dict[str, Any]:
    """Evaluate unlearned models against oracles and write a report: every metric of
    ``metrics`` (KLoM per split beside the noise floor, accuracy, the 2023 competition
    score, a loss-threshold attack, U-LiRA) into report.json and report.md, the per-point
    KLoM into klom.npy and the worst points' histograms into histograms.png.

    Args:
        oracles: oracle fleet: models retrained without the forget set.
        unlearned: unlearned models: a fleet directory, a .npy of logits [N, points, C]
            or margins [N, points], or a .npz with margins and correct (train points,
            then validation).
        out: output directory.
        floor: a second, independent oracle fleet (or .npy) for the noise floor.
        forget: forget set index file (default: the oracle fleet's manifest).
        method: method name for the report.
        models: use the first N models of every side (default: all; N must match).
        n_worst: points per split drawn in histograms.png (largest KLoM).
        metrics: the metrics to compute (dmm.evals.metrics).
        ulira: runs U-LiRA of the method (see dmm.evals.ulira_harness.ulira_job).
        overwrite: replace an existing output (only once the new one is complete).
    """
    from dmm.artifacts import atomic_dir, write_json
    from dmm.fleet import load_fleet

    t0 = time.perf_counter()
    if out.exists() and not overwrite:
        raise DmmError(f"output {out} already exists (pass --overwrite to replace it)")
    if n_worst < 1:
        raise DmmError(f"--n_worst must be positive, got {n_worst}")
    try:
        metrics = check_metrics(metrics)
    except ValueError as e:
        raise DmmError(str(e)) from None
    if not oracles.is_dir():
        raise DmmError(f"--oracles {oracles} must be an oracle fleet directory")
    ofleet = load_fleet(oracles)
    identity = {k: ofleet.manifest[k] for k in ("task", "fingerprint")}
    labels = np.asarray(ofleet.labels)
    n_train, n_points, n_classes = ofleet.n_train, labels.shape[0], ofleet.logits.shape[2]
    forget_idx, forget_origin = resolve_forget(ofleet.manifest, ofleet.masks, forget,
                                               f"oracle fleet {oracles}")
    sides = {"oracle": _outputs(np.asarray(ofleet.logits, dtype=np.float32), labels)}
    sources = {"oracle": str(oracles), "unlearned": str(unlearned)}
    sides["unlearned"], ufleet = load_outputs(unlearned, "unlearned", labels, n_classes,
                                              identity)
    if floor is not None:
        if floor.resolve() == oracles.resolve():
            raise DmmError("the noise floor needs a second, independent oracle fleet")
        sides["oracle_2"], ffleet = load_outputs(floor, "oracle_2", labels, n_classes, identity)
        if ffleet is not None:
            resolve_forget(ffleet.manifest, ffleet.masks, forget, f"noise-floor fleet {floor}")
        sources["oracle_2"] = str(floor)
    sides = _same_n(sides, models)
    splits = Splits.of(forget_idx, n_train, n_points)
    name = method or (ufleet.manifest.get("kind", "unlearned") if ufleet else Path(unlearned).stem)
    case = Case(sides["oracle"], sides["unlearned"], splits, sides.get("oracle_2"), ulira)
    try:
        blocks = evaluate_case(case, metrics)
        values = klom(case.oracle.margins, case.unlearned.margins)
    except ValueError as e:
        raise DmmError(str(e)) from None
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "method": name,
        "n_points": n_points,
        "models": {
            "oracle": {"n": len(case.oracle),
                       "description": "retrained from scratch without the forget set"},
            "unlearned": {"n": len(case.unlearned),
                          "description": f"{name} applied to independently trained originals"},
            **({"oracle_2": {"n": len(case.floor), "description": "second, independent "
                             "oracle fleet (noise floor)"}} if case.floor is not None else {}),
        },
        "metrics": blocks,
        "task": identity,
        "forget_set": {"source": forget_origin, "size": int(forget_idx.size)},
        "inputs": sources,
        "files": {"klom.npy": f"per-point KLoM, {DIRECTION}, train points then validation",
                  "histograms.png": f"the {n_worst} worst points of each split"},
    }

    from .plots import plot_margin_histograms

    points, titles = _worst_points(values, splits, n_worst, n_train)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        np.save(tmp / "klom.npy", values)
        plot_margin_histograms(case.oracle.margins, case.unlearned.margins,
                               tmp / "histograms.png", points=points, titles=titles,
                               labels=("oracle", name),
                               suptitle=f"{name} vs oracle: worst points per split, "
                                        f"KLoM = {DIRECTION}")
        report["seconds"] = time.perf_counter() - t0
        (tmp / "report.md").write_text(klom_table_markdown(report))
        write_json(tmp / "report.json", report)
    return report
