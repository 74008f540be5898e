"""Model checkpoints: safetensors weights plus JSON metadata (no pickled code is executed).

The metadata records the task and training-set fingerprint, the architecture, the model's
random key, which training indices it has forgotten, and the history of what was done to it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from dmm.artifacts import atomic_path, check_compatible, to_jsonable
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
