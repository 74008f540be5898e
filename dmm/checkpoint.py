"""Model checkpoints: safetensors weights plus JSON metadata (no pickled code is executed).

The metadata records the task and training-set fingerprint, the architecture, the model's
random key, which training indices it has forgotten, and the history of what was done to it.
:func:`import_checkpoint` makes one from the weights of a model trained elsewhere.
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from dmm.artifacts import atomic_path, check_compatible, to_jsonable
from dmm.config import one_line
from dmm.ensemble import Ensemble
from dmm.errors import DmmError
from dmm.tasks import Task

CHECKPOINT_FORMAT = "dmm.checkpoint/1"


def save_checkpoint(path: str | Path, task: Task, state: dict[str, torch.Tensor], **meta) -> None:
    """Save one model's weights with the task identity and ``meta``, atomically."""
    meta = {"format": CHECKPOINT_FORMAT, **task.identity(), "forgotten": [], "history": [], **meta}
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"dmm": json.dumps(to_jsonable(meta))})


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(weights, metadata) of a checkpoint, without checking the task."""
    path = Path(path)
    if not path.is_file():
        raise DmmError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("dmm")
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as e:
        raise DmmError(f"{path} is not a dmm checkpoint ({' '.join(str(e).split())})") from None
    if raw is None:
        raise DmmError(f"{path} is not a dmm checkpoint (no dmm metadata)")
    meta = json.loads(raw)
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise DmmError(f"{path} has unsupported format {meta.get('format')!r}")
    return state, meta


def load_checkpoint(path: str | Path, task: Task) -> tuple[Ensemble, dict]:
    """Load a checkpoint as a one-model :class:`Ensemble`, refusing one of another task,
    training set or architecture."""
    state, meta = read_checkpoint(path)
    check_compatible(meta, task.name, task.fingerprint, f"checkpoint {path}")
    if meta.get("model") != task.identity()["model"]:
        raise DmmError(f"checkpoint {path} is a {meta.get('model')} model, "
                       f"task {task.name!r} uses {task.identity()['model']}")
    model = task.build_model()
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise DmmError(f"checkpoint {path} does not fit task {task.name!r}'s model: "
                       f"{' '.join(str(e).split())[:200]}") from None
    return Ensemble([model]), meta


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file, or from any other file as written by
    ``torch.save``, read with ``weights_only=True``: a pickle holding code is refused, and
    nothing pickled is executed."""
    path = Path(path)
    if not path.is_file():
        raise DmmError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            state: object = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise DmmError(f"{path} is not a safetensors file ({one_line(e)})") from None
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch's notes on pickle protocols
                state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            message = str(e)
            if "Weights only load failed" not in message:
                raise DmmError(f"{path} is not a torch.save file ({one_line(e)})") from None
            named = re.search(r"GLOBAL ([\w.]+)", message)
            if named:
                raise DmmError(f"{path} holds code or objects ({named.group(1)}), not only "
                               "tensors: refused, nothing in it was run (save "
                               "model.state_dict(), or use safetensors)") from None
            reason = re.search(r"Unsupported [^\n]*", message)
            raise DmmError(f"{path} is not a torch.save file of tensors (torch's weights-only "
                           f"loader stopped: {reason.group(0) if reason else 'refused'}); "
                           "nothing in it was run") from None
        except Exception as e:  # noqa: BLE001  (torch raises many types for bad files)
            raise DmmError(f"{path} is not a torch.save file ({one_line(e)})") from None
    if not isinstance(state, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise DmmError(f"{path} must hold a state dict (names to tensors), not a "
                       f"{type(state).__name__}: save model.state_dict()")
    return dict(state)


def _names(keys: list[str], most: int = 4) -> str:
    return ", ".join(keys[:most]) + (f" and {len(keys) - most} more" if len(keys) > most else "")


def fitted_state(state: dict[str, torch.Tensor], task: Task, source: str
                 ) -> dict[str, torch.Tensor]:
    """``state`` checked against a fresh model of ``task`` (the same names, shapes, finite
    values) and cast to its dtypes; each mismatch is a one-line :class:`DmmError`."""
    expected = task.build_model(0).state_dict()
    model = f"the model of task {task.name!r} ({task.spec.model.resolved()[0]})"
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        hint = ""
        for prefix in sorted({k.split(".", 1)[0] + "." for k in unexpected if "." in k}):
            if {k[len(prefix):] for k in unexpected if k.startswith(prefix)} >= set(missing):
                hint = f" (its names carry the prefix {prefix!r}: save the inner model's " \
                       "state_dict())"
        raise DmmError(f"{source} lacks {len(missing)} of the {len(expected)} tensors of "
                       f"{model}: {_names(missing)}{hint}")
    if unexpected:
        raise DmmError(f"{source} has {len(unexpected)} tensors that {model} does not: "
                       f"{_names(unexpected)}")
    wrong = [k for k in expected if state[k].shape != expected[k].shape]
    if wrong:
        k, c = wrong[0], task.data.n_classes
        got, want = list(state[k].shape), list(expected[k].shape)
        classes = {g for g, w in zip(got, want, strict=False) if w == c and g != c}
        hint = (f" (weights for {classes.pop()} classes? the task has {c})"
                if len(got) == len(want) and classes else "")
        more = f" ({len(wrong)} tensors do not fit)" if len(wrong) > 1 else ""
        raise DmmError(f"{source}: {k} has shape {got}, {model} needs {want}{hint}{more}")
    out = {k: state[k].to(v.dtype) for k, v in expected.items()}
    bad = [k for k, v in out.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise DmmError(f"{source}: NaN or infinite values in {_names(bad)}")
    return out


def import_checkpoint(task: Task, weights: Path, out: Path, overwrite: bool = False) -> dict:
    """Import a model trained elsewhere: read its weights without running pickled code,
    check that they fit the task's model (names and shapes), and write a dmm checkpoint
    with an empty deletion history, which dmm unlearn accepts. Returns its metadata.

    Args:
        task: the task whose model the weights are for (its model, data and recipe).
        weights: a state dict: a .safetensors file, or a file written by torch.save
            (.pt, .pth, .bin), read with weights_only=True.
        out: checkpoint to write, e.g. runs/mine/model.ckpt.
        overwrite: replace an existing checkpoint (only once the new one is complete).
    """
    weights, out = Path(weights), Path(out)
    if out.resolve() == weights.resolve():
        raise DmmError("the output path must differ from the weights file")
    if out.is_dir():
        raise DmmError(f"output {out} is a directory, not a checkpoint file")
    if out.exists() and not overwrite:
        raise DmmError(f"output {out} already exists (pass --overwrite to replace it)")
    from dmm.evals.accuracy import accuracy

    state = fitted_state(read_weights(weights), task, str(weights))
    model = task.build_model(0)
    model.load_state_dict(state)
    logits, n = Ensemble([model]).predict(task.data.x_all)[0], task.data.n_train
    meta = {"imported_from": str(weights),
            "accuracy": {"train": accuracy(logits[:n], task.data.y_train),
                         "val": accuracy(logits[n:], task.data.y_val)}}
    save_checkpoint(out, task, model.state_dict(), **meta)
    return meta
