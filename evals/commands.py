"""``dmm eval``: the evaluation suite on fleet stores or saved arrays, as a JSON report.

Inputs: an oracle fleet (retrained without the forget set; it fixes the task, the
training-set fingerprint, the labels and, through its manifest, the forget set), the
unlearned models (a fleet store, or a ``.npy`` of logits [N, points, C] or margins
[N, points], train points first, then validation) and optionally a second, independent
oracle fleet for the noise floor. Splits: forget F, retain (train minus F), validation.

Every input is checked before anything is computed; the output directory (report.json,
report.md, klom.npy, histograms.png) is written atomically, so an error leaves nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dmm.artifacts import write_json
from dmm.errors import DmmError

from .accuracy import accuracy_by_split
from .klom import DIRECTION, MAIN_SPLITS, klom
from .margins import margins
from .membership import competition_score, loss_threshold_attack
from .report import klom_report, klom_table_markdown

if TYPE_CHECKING:
    from dmm.cli import Parser

_CHUNK = 16384  # points per margin computation (bounds float64 temporaries)


@dataclass
class Side:
    """One group of models: margins [N, points], logits [N, points, C] when known."""

    role: str
    source: str
    margins: np.ndarray
    logits: np.ndarray | None
    manifest: dict | None = None
    masks: np.ndarray | None = None

    def first(self, n: int) -> Side:
        logits = None if self.logits is None else self.logits[:n]
        masks = None if self.masks is None else self.masks[:n]
        return Side(self.role, self.source, self.margins[:n], logits, self.manifest, masks)


def _fleet_margins(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    out = np.empty(logits.shape[:2], dtype=np.float64)
    for s in range(0, logits.shape[1], _CHUNK):
        out[:, s:s + _CHUNK] = margins(logits[:, s:s + _CHUNK], labels[s:s + _CHUNK])
    return out


def load_side(path: Path, role: str, labels: np.ndarray, n_classes: int,
              identity: dict | None = None) -> Side:
    """Open a fleet store (checked against ``identity``) or a ``.npy`` of logits or margins."""
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
        logits = np.asarray(fleet.logits, dtype=np.float32)
        return Side(role, str(path), _fleet_margins(logits, labels), logits, fleet.manifest,
                    np.asarray(fleet.masks, dtype=bool))
    if path.suffix != ".npy":
        raise DmmError(f"{role} input {path} must be a fleet directory or a .npy file")
    if not path.is_file():
        raise DmmError(f"{role} input {path} does not exist")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DmmError(f"cannot read {role} array {path}: {e}") from None
    if arr.dtype.kind != "f":
        raise DmmError(f"{role} array {path} must hold floats, got dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[1:] == (n_points, n_classes):
        logits = arr.astype(np.float32, copy=False)
        side_margins = _fleet_margins(logits, labels)
    elif arr.ndim == 2 and arr.shape[1] == n_points:
        logits, side_margins = None, arr.astype(np.float64, copy=False)
    else:
        raise DmmError(f"{role} array {path} has shape {arr.shape}; expected logits "
                       f"[N, {n_points}, {n_classes}] or margins [N, {n_points}] "
                       "(train points, then validation)")
    if not np.isfinite(side_margins).all():
        raise DmmError(f"{role} array {path} holds NaN or infinite values")
    return Side(role, str(path), side_margins, logits)


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


def eval_splits(forget: np.ndarray, n_train: int, n_points: int) -> dict[str, np.ndarray]:
    """forget, retain (train minus forget) and validation point indices."""
    retain = np.setdiff1d(np.arange(n_train), forget)
    return {"forget": forget, "retain": retain, "validation": np.arange(n_train, n_points)}


def _same_n(sides: list[Side], models: int | None) -> list[Side]:
    counts = {s.role: s.margins.shape[0] for s in sides}
    if models is not None:
        short = {r: n for r, n in counts.items() if n < models}
        if models < 1 or short:
            raise DmmError(f"--models {models}: need that many models on every side, have "
                           + ", ".join(f"{n} {r}" for r, n in counts.items()))
        return [s.first(models) for s in sides]
    if len(set(counts.values())) > 1:
        raise DmmError("KLoM compares the same number of models per side, got "
                       + ", ".join(f"{n} {r}" for r, n in counts.items())
                       + f" (pass --models {min(counts.values())} to use the first of each)")
    return sides


def _accuracy_metric(oracle: Side, unlearned: Side, floor: Side | None, labels: np.ndarray,
                     splits: dict[str, np.ndarray]) -> dict[str, Any]:
    def acc(side: Side | None) -> dict | None:
        if side is None or side.logits is None:
            return None
        return accuracy_by_split(side.logits, labels, splits)

    ref, comp = acc(oracle), acc(unlearned)
    diff = None if comp is None else {
        k: None if comp[k]["mean"] is None else comp[k]["mean"] - ref[k]["mean"] for k in ref}
    return {
        "metric": "top-1 accuracy per split (mean and std over models)",
        "reference_models": "oracle",
        "compared_models": "unlearned",
        "direction": "closer to the oracles' accuracy is better",
        "oracle": ref,
        "unlearned": comp,
        "unlearned_minus_oracle": diff,
        "oracle_2": acc(floor),
        "note": None if comp is not None else "unlearned models given as margins: no accuracy",
    }


def _split_accuracy(side: Side, labels: np.ndarray, idx: np.ndarray) -> np.ndarray:
    assert side.logits is not None
    return (side.logits[:, idx].argmax(-1) == labels[idx]).mean(1)


def _competition_metric(oracle: Side, unlearned: Side, labels: np.ndarray,
                        splits: dict[str, np.ndarray]) -> dict[str, Any]:
    head = {"metric": "NeurIPS 2023 unlearning competition score",
            "reference_models": "oracle", "compared_models": "unlearned",
            "direction": "higher is better (1: unlearned and oracle margins indistinguishable "
                         "on every forget point, accuracies kept)"}
    if unlearned.logits is None:
        return {**head, "score": None, "note": "needs unlearned logits for the accuracy ratios"}
    if oracle.margins.shape[0] < 3:
        return {**head, "score": None, "note": "needs at least 3 models per side"}
    f, r, v = splits["forget"], splits["retain"], splits["validation"]
    result = competition_score(
        unlearned.margins[:, f], oracle.margins[:, f],
        retain_acc_unlearned=_split_accuracy(unlearned, labels, r),
        retain_acc_retrained=_split_accuracy(oracle, labels, r),
        test_acc_unlearned=_split_accuracy(unlearned, labels, v),
        test_acc_retrained=_split_accuracy(oracle, labels, v))
    return {**head, **result}


def _loss_attack_summary(side: Side, splits: dict[str, np.ndarray]) -> dict[str, Any]:
    # Cross-entropy from the margin: loss = -log sigmoid(margin) = log(1 + exp(-margin)).
    losses = np.logaddexp(0.0, -side.margins)
    runs = [loss_threshold_attack(row[splits["forget"]], row[splits["validation"]])
            for row in losses]
    auc = np.array([r["auc"] for r in runs])
    acc = np.array([r["accuracy_best_threshold"] for r in runs])
    return {"auc_mean": float(auc.mean()), "auc_std": float(auc.std()),
            "accuracy_best_threshold_mean": float(acc.mean()), "n_models": len(runs)}


def _loss_attack_metric(oracle: Side, unlearned: Side,
                        splits: dict[str, np.ndarray]) -> dict[str, Any]:
    return {
        "metric": "population loss-threshold attack, one attack per model",
        "attack": "member iff loss <= threshold; forget points (positives) vs validation points",
        "reference_models": "oracle",
        "compared_models": "unlearned",
        "direction": "AUC closer to the oracles' is better; above it, forget points still "
                     "look like training members (0.5: no signal at all)",
        "oracle": _loss_attack_summary(oracle, splits),
        "unlearned": _loss_attack_summary(unlearned, splits),
    }


def _worst_points(values: np.ndarray, splits: dict[str, np.ndarray], n_worst: int,
                  n_train: int) -> tuple[list[int], list[str]]:
    points, titles = [], []
    for name in MAIN_SPLITS:
        idx = splits[name]
        for i in idx[np.argsort(-values[idx], kind="stable")[:n_worst]]:
            points.append(int(i))
            where = f"train {i}" if i < n_train else f"validation {i - n_train}"
            titles.append(f"{name}: {where}")
    return points, titles


def evaluate(oracles: Path, unlearned: Path, out: Path, *, floor: Path | None = None,
             forget: Path | None = None, method: str | None = None, models: int | None = None,
             n_worst: int = 4, overwrite: bool = False) -> dict[str, Any]:
    """Compute the report and write ``out`` (see the module docstring); returns the report."""
    from dmm.artifacts import atomic_dir
    from dmm.fleet import load_fleet

    t0 = time.perf_counter()
    if out.exists() and not overwrite:
        raise DmmError(f"output {out} already exists (pass --overwrite to replace it)")
    if n_worst < 1:
        raise DmmError(f"--n_worst must be positive, got {n_worst}")
    if not oracles.is_dir():
        raise DmmError(f"--oracles {oracles} must be an oracle fleet directory")
    ofleet = load_fleet(oracles)
    identity = {k: ofleet.manifest[k] for k in ("task", "fingerprint")}
    labels = np.asarray(ofleet.labels)
    n_train, n_points, n_classes = ofleet.n_train, labels.shape[0], ofleet.logits.shape[2]
    forget_idx, forget_origin = resolve_forget(ofleet.manifest, ofleet.masks, forget,
                                               f"oracle fleet {oracles}")
    logits = np.asarray(ofleet.logits, dtype=np.float32)
    oracle = Side("oracle", str(oracles), _fleet_margins(logits, labels), logits, ofleet.manifest,
                  np.asarray(ofleet.masks, dtype=bool))
    comp = load_side(unlearned, "unlearned", labels, n_classes, identity)
    second = None
    if floor is not None:
        if floor.resolve() == oracles.resolve():
            raise DmmError("the noise floor needs a second, independent oracle fleet")
        second = load_side(floor, "oracle_2", labels, n_classes, identity)
        if second.manifest is not None:
            resolve_forget(second.manifest, second.masks, forget, f"noise-floor fleet {floor}")
    sides = _same_n([s for s in (oracle, comp, second) if s is not None], models)
    oracle, comp = sides[0], sides[1]
    second = sides[2] if second is not None else None
    splits = eval_splits(forget_idx, n_train, n_points)
    name = method or (comp.manifest.get("kind", "unlearned") if comp.manifest else
                      Path(comp.source).stem)

    try:
        metrics = {
            "accuracy": _accuracy_metric(oracle, comp, second, labels, splits),
            "competition_score": _competition_metric(oracle, comp, labels, splits),
            "loss_threshold_attack": _loss_attack_metric(oracle, comp, splits),
        }
        report = klom_report(oracle.margins, comp.margins, splits,
                             noise_floor_margins=None if second is None else second.margins,
                             method=name, extra_metrics=metrics)
        values = klom(oracle.margins, comp.margins)
    except ValueError as e:
        raise DmmError(str(e)) from None
    report["task"] = identity
    report["forget_set"] = {"source": forget_origin, "size": int(forget_idx.size)}
    report["inputs"] = {s.role: s.source for s in sides}
    report["files"] = {"klom.npy": f"per-point KLoM, {DIRECTION}, train points then validation",
                       "histograms.png": f"the {n_worst} worst points of each split"}

    from .plots import plot_margin_histograms

    points, titles = _worst_points(values, splits, n_worst, n_train)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        np.save(tmp / "klom.npy", values)
        plot_margin_histograms(oracle.margins, comp.margins, tmp / "histograms.png",
                               points=points, titles=titles, labels=("oracle", name),
                               suptitle=f"{name} vs oracle: worst points per split, "
                                        f"KLoM = {DIRECTION}")
        report["seconds"] = time.perf_counter() - t0
        (tmp / "report.md").write_text(klom_table_markdown(report))
        write_json(tmp / "report.json", report)
    return report


# ---------------------------------------------------------------- CLI
def eval_parser() -> Parser:
    from dmm.cli import Parser

    p = Parser(description="Evaluate unlearned models against oracles: KLoM per split "
               f"({DIRECTION}; p95, p99, mean) beside the noise floor, accuracy per split, "
               "the 2023 competition score and a loss-threshold attack. Writes report.json, "
               "report.md, klom.npy and histograms.png of the worst points to --out.")
    p.add_argument("--oracles", type=Path, required=True,
                   help="oracle fleet: models retrained without the forget set")
    p.add_argument("--unlearned", type=Path, required=True,
                   help="unlearned models: a fleet directory, or a .npy of logits "
                   "[N, points, C] or margins [N, points] (train points, then validation)")
    p.add_argument("--floor", type=Path, default=None,
                   help="a second, independent oracle fleet (or .npy) for the noise floor")
    p.add_argument("--forget", type=Path, default=None,
                   help="forget set index file (default: the oracle fleet's manifest)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--method", type=str, default=None, help="method name for the report")
    p.add_argument("--models", type=int, default=None,
                   help="use the first N models of every side (default: all; N must match)")
    p.add_argument("--n_worst", type=int, default=4,
                   help="points per split drawn in histograms.png (largest KLoM)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output (only once the new one is complete)")
    return p


def run_eval(args) -> None:  # noqa: ANN001
    report = evaluate(args.oracles, args.unlearned, args.out, floor=args.floor,
                      forget=args.forget, method=args.method, models=args.models,
                      n_worst=args.n_worst, overwrite=args.overwrite)
    print(klom_table_markdown(report), end="")
    m = report["metrics"]
    acc = m["accuracy"]
    if acc["unlearned"] is not None:
        print("accuracy (oracle -> unlearned): " + ", ".join(
            f"{k} {acc['oracle'][k]['mean']:.3f} -> {acc['unlearned'][k]['mean']:.3f}"
            for k in MAIN_SPLITS))
    score = m["competition_score"]["score"]
    lt = m["loss_threshold_attack"]
    print(f"competition score {'-' if score is None else f'{score:.3f}'}; loss-threshold AUC "
          f"oracle {lt['oracle']['auc_mean']:.3f}, unlearned {lt['unlearned']['auc_mean']:.3f}")
    print(f"wrote {args.out} in {report['seconds']:.1f} s")
