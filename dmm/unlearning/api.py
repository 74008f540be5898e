"""Unlearning in a few lines: one model or a fleet, and checkpoints with deletion history."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from dmm.artifacts import write_json
from dmm.checkpoint import load_checkpoint, save_checkpoint
from dmm.ensemble import Ensemble
from dmm.errors import DmmError
from dmm.evals.accuracy import accuracy_by_split
from dmm.evals.splits import Splits
from dmm.forget_sets import validate_indices
from dmm.tasks import Task
from dmm.unlearning.base import Inputs, Problem, Result
from dmm.unlearning.configs import configured_method
from dmm.unlearning.registry import method_class


def unlearn(
    models: Ensemble,
    task: Task,
    forget: Sequence[int] | np.ndarray,
    method: str = "dmm",
    predictor: Any = None,
    oracle: Any = None,
    keys: Sequence[int] | None = None,
    forgotten: Sequence[int] = (),
    device: str = "auto",
    **hparams: Any,
) -> Result:
    """Unlearn ``forget`` (training indices) from every model of ``models``.

    Args:
        models: the original model(s) as an :class:`Ensemble` (one model: K = 1).
        task: their task.
        forget: indices to delete.
        method: a registered method (``dmm``, ``dm-direct``, ``om``, or a baseline).
        predictor: attribution backend for ``dmm`` / ``dm-direct``
            (:func:`dmm.attribution.load`).
        oracle: oracle backend for ``om`` (:class:`dmm.attribution.OraclePredictor`).
        keys: per-model random keys (default 0..K-1).
        forgotten: indices the models have already forgotten (earlier requests); they count
            as neither trained on nor forgotten now.
        hparams: overrides of the method's defaults from ``configs/methods/<method>.yaml``.
    """
    n = task.data.n_train
    forget = validate_indices(np.asarray(forget), n)
    done = np.zeros(n, dtype=bool)
    if len(forgotten):
        done[validate_indices(np.asarray(forgotten), n, "forgotten indices")] = True
    again = done[forget]
    if again.all():
        raise DmmError("every requested index has already been forgotten by this model")
    if again.any():
        warnings.warn(f"{int(again.sum())} requested indices were already forgotten", stacklevel=2)
    k = len(models)
    mask = np.zeros((k, n), dtype=bool)
    mask[:, forget[~again]] = True
    problem = Problem(task, models, mask, np.broadcast_to(~done, (k, n)).copy(),
                      list(range(k)) if keys is None else list(keys), device,
                      Inputs(predictor=predictor, oracle=oracle))
    return configured_method(method, **hparams)(problem)


def split_accuracy(logits: torch.Tensor, task: Task, forget: np.ndarray) -> dict[str, float]:
    """Accuracy of one model's logits on all points, per split (forget / retain / val)."""
    splits = Splits.of(forget, task.data.n_train, task.data.n_train + task.data.n_val)
    return {k: v["mean"] for k, v in accuracy_by_split(logits, task.data.y_all, splits).items()}


QUALITY_MEANING = ("distance between the unlearned model's margins and the backend's predicted "
                   "retrained margins, in units of the predicted seed spread (the std of "
                   "retrained models' margins): below about 1, the unlearned model is within "
                   "seed noise of the prediction; well above, it has not reached it")


def quality_estimate(predictor: Any, before: torch.Tensor, after: torch.Tensor, task: Task,
                     forget: np.ndarray, seed: int = 0, sample: int = 200
                     ) -> dict[str, Any]:
    """How far one unlearned model's outputs are from the predicted retrained outputs, on
    the forget set and a random sample of retain and validation points, in units of the
    predicted seed spread; needs a predictor that knows its seed spread."""
    from dmm.evals import margins

    spread = getattr(predictor, "seed_spread", None)
    sd = spread(forget) if spread is not None else None
    if sd is None:
        return {"available": False,
                "note": "the attribution backend records no seed spread (the group backend "
                        "does)"}
    labels = task.data.y_all.numpy()
    splits = Splits.of(forget, task.data.n_train, len(labels))
    rng = np.random.default_rng([seed, 7])
    points = {"forget": splits.forget,
              **{k: np.sort(rng.choice(splits[k], min(sample, len(splits[k])), replace=False))
                 for k in ("retain", "validation")}}
    idx = np.concatenate(list(points.values()))
    predicted = margins(predictor.predict(before[None], forget, idx)[0].numpy(), labels[idx])
    got = margins(after.numpy()[idx], labels[idx])
    z = np.abs(got - predicted) / np.maximum(sd[idx], 1e-6)
    out, start = {"available": True, "meaning": QUALITY_MEANING}, 0
    for name, p in points.items():
        part = z[start:start + len(p)]
        start += len(p)
        out[name] = {"median": float(np.median(part)), "p90": float(np.percentile(part, 90)),
                     "points": int(len(p))}
    return out


def unlearn_checkpoint(checkpoint: Path, task: Task, forget: np.ndarray, out: Path,
                       method: str = "dmm", predictor: Any = None, oracle: Any = None,
                       device: Literal["auto", "cpu", "cuda"] = "auto", overwrite: bool = False,
                       **hparams: Any) -> dict[str, Any]:
    """Unlearn a forget set from a checkpoint: write the new checkpoint, which records
    every index it has forgotten (the union of the old one's and this request), so that
    later requests compose, and a report <out>.json (method, hyperparameters, wall time,
    compute as a fraction of one retraining, accuracy before and after on forget, retain
    and validation). Returns the report.

    Args:
        checkpoint: checkpoint to unlearn.
        task: its task.
        forget: training indices to delete.
        out: new checkpoint path.
        method: dmm (default), om, or a baseline: ga, gd, neggrad-plus, scrub,
            random-labels, salun, l1-sparse, ssd, retrain, do-nothing.
        predictor: attribution backend, for dmm (dmm.attribution.load).
        oracle: oracle backend, for om (dmm.attribution.OraclePredictor).
        device: auto (CUDA when present), cpu or cuda.
        overwrite: replace an existing output (only once the new one is complete).
        hparams: overrides of the method's defaults (configs/methods/<method>.yaml).
    """
    checkpoint, out = Path(checkpoint), Path(out)
    report_path = out.with_suffix(".json")
    if out.suffix == ".json":
        raise DmmError(f"output {out} must not end in .json (the report goes to <out>.json)")
    if out.resolve() == checkpoint.resolve() or report_path.resolve() == checkpoint.resolve():
        raise DmmError("the output path must differ from the input checkpoint")
    for p in (out, report_path):
        if p.exists() and not overwrite:
            raise DmmError(f"output {p} already exists (pass --overwrite to replace it)")
    if not method_class(method).produces_model:
        raise DmmError(f"method {method!r} predicts outputs and yields no model to save")
    model, meta = load_checkpoint(checkpoint, task)
    forgotten = meta.get("forgotten", [])
    before = model.predict(task.data.x_all)[0]
    result = unlearn(model, task, forget, method, predictor, oracle, keys=[meta.get("key", 0)],
                     forgotten=forgotten, device=device, **hparams)
    union = sorted(set(map(int, forgotten)) | set(map(int, forget)))
    report = {
        "method": result.method,
        "hyperparameters": result.hparams,
        "checkpoint": str(checkpoint),
        "forget_request": [int(i) for i in forget],
        "forgotten": union,
        "seconds": result.seconds,
        "examples_processed": result.examples,
        "compute_fraction_of_retraining": result.compute_fraction,
        "diverged": bool(result.diverged[0]),
        "accuracy_before": split_accuracy(before, task, np.asarray(union)),
        "accuracy_after": split_accuracy(result.logits[0], task, np.asarray(union)),
        "quality": quality_estimate(predictor, before, result.logits[0], task,
                                    np.asarray(forget), meta.get("key", 0)),
    }
    history = [*meta.get("history", []), {k: report[k] for k in (
        "method", "hyperparameters", "forget_request", "compute_fraction_of_retraining")}]
    keep = {k: v for k, v in meta.items() if k not in {
        "format", "task", "fingerprint", "n_train", "n_val", "n_classes", "model",
        "forgotten", "history"}}
    save_checkpoint(out, task, result.ensemble.model_state(0), **{
        **keep, "forgotten": union, "history": history})
    write_json(report_path, report)
    return report
