"""Datasets of the tasks. Every dataset yields ``(x, y, index)`` so that any example can
be addressed by its training index; all points are ``train`` first, then ``validation``.

A task's data is a shipped source (digits, cifar10, a tensors file) or your own loader
named by import path (``data: {class_path: mypackage.data.load, init_args: {...}}``); a
tensors file and a loader's arrays pass the same checks (:func:`validated`)."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from dmm.artifacts import fingerprint
from dmm.config import import_object, one_line
from dmm.errors import DmmError


@dataclass
class DataSpec:
    """Where a task's data comes from: a shipped ``source`` or your own ``class_path``.

    Args:
        source: ``digits`` (default; embedded in scikit-learn), ``cifar10`` (torchvision's
            on-disk format in a local directory) or ``tensors`` (a .npz or .pt file of
            your own).
        val_fraction: share of digits held out for validation (stratified).
        split_seed: seed of the digits train/validation split (fixed: part of the task).
        class_path: import path of your own loader, a function returning ``(x_train,
            y_train, x_val, y_val)`` (arrays or tensors) or a mapping with those keys.
        init_args: keyword arguments of ``class_path``.
    """

    source: Literal["digits", "cifar10", "tensors"] | None = None
    val_fraction: float = 0.2
    split_seed: int = 0
    class_path: str | None = None
    init_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.class_path is not None and self.source is not None:
            raise DmmError("data: give either source or class_path, not both")
        if self.class_path is None and self.init_args:
            raise DmmError("data init_args need a class_path")


@dataclass
class TaskData:
    """Train and validation tensors of one task (inputs already normalised)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    n_classes: int

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    @property
    def n_val(self) -> int:
        return len(self.y_val)

    @property
    def x_all(self) -> torch.Tensor:
        """All points, train first then validation (the order of fleet logits)."""
        return torch.cat([self.x_train, self.x_val])

    @property
    def y_all(self) -> torch.Tensor:
        return torch.cat([self.y_train, self.y_val])

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def fingerprint(self) -> str:
        """Hash of the training set (inputs and labels)."""
        return fingerprint(self.x_train, self.y_train)

    def train_dataset(self) -> IndexedDataset:
        return IndexedDataset(self.x_train, self.y_train)

    def val_dataset(self) -> IndexedDataset:
        return IndexedDataset(self.x_val, self.y_val)


class IndexedDataset(Dataset):
    """A dataset of ``(x, y, index)`` triples."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.x[i], self.y[i], i


def load_data(spec: DataSpec, path: str | Path | None = None) -> TaskData:
    """Load the data a spec describes; ``path`` is the local file or directory if it needs one."""
    if spec.class_path is not None:
        if path is not None:
            raise DmmError(f"task data from class_path {spec.class_path!r} takes no --data "
                           "(give its arguments in init_args)")
        return load_callable(spec.class_path, spec.init_args)
    source = spec.source or "digits"
    if source == "digits":
        return load_digits(spec.val_fraction, spec.split_seed)
    if path is None:
        hint = "a directory holding cifar-10-batches-py" if source == "cifar10" else (
            "a .npz or .pt file with x_train, y_train, x_val, y_val"
        )
        raise DmmError(f"task data source {source!r} needs --data ({hint})")
    if source == "cifar10":
        return load_cifar10(path)
    return load_tensors(path)


def load_digits(val_fraction: float = 0.2, split_seed: int = 0) -> TaskData:
    """scikit-learn's 8x8 digits as [N, 1, 8, 8] floats in [0, 1], stratified split."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    if not 0 < val_fraction < 1:
        raise DmmError(f"val_fraction must be in (0, 1), got {val_fraction}")
    d = sk_digits()
    x = d.images.astype(np.float32)[:, None] / 16.0
    y = d.target.astype(np.int64)
    idx_train, idx_val = train_test_split(
        np.arange(len(y)), test_size=val_fraction, random_state=split_seed, stratify=y
    )
    idx_train.sort()
    idx_val.sort()
    t = torch.from_numpy
    return TaskData(t(x[idx_train]), t(y[idx_train]), t(x[idx_val]), t(y[idx_val]), 10)


CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CIFAR_TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_TEST_FILE = "test_batch"


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batch files and refuses anything but plain data (no code runs)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # how protocol-2 pickles store bytes
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = _CifarUnpickler(f, encoding="bytes").load()
        data = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, ValueError, EOFError, TypeError) as e:
        raise DmmError(f"{path} is not a CIFAR-10 batch file ({e})") from None
    if len(data) != len(labels):
        raise DmmError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data, labels


def load_cifar10(root: str | Path) -> TaskData:
    """CIFAR-10 from torchvision's on-disk format (``root/cifar-10-batches-py/data_batch_1..5``
    and ``test_batch``); the test batch is the validation set. Never downloads."""
    root = Path(root)
    folder = root if (root / CIFAR_TEST_FILE).exists() else root / "cifar-10-batches-py"
    missing = [f for f in [*CIFAR_TRAIN_FILES, CIFAR_TEST_FILE] if not (folder / f).is_file()]
    if not root.is_dir():
        raise DmmError(f"CIFAR-10 data directory {root} does not exist")
    if missing:
        raise DmmError(f"CIFAR-10 files missing under {folder}: {', '.join(missing)}")
    parts = [_read_cifar_batch(folder / f) for f in CIFAR_TRAIN_FILES]
    x_tr = np.concatenate([p[0] for p in parts])
    y_tr = np.concatenate([p[1] for p in parts])
    x_te, y_te = _read_cifar_batch(folder / CIFAR_TEST_FILE)
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)

    def norm(x: np.ndarray) -> torch.Tensor:
        return (torch.from_numpy(x).float() / 255.0 - mean) / std

    return TaskData(norm(x_tr), torch.from_numpy(y_tr), norm(x_te), torch.from_numpy(y_te), 10)


TENSOR_KEYS = ("x_train", "y_train", "x_val", "y_val")


def load_tensors(path: str | Path) -> TaskData:
    """Users' own data: a .npz (numpy) or .pt (torch, loaded with ``weights_only=True``)
    holding ``x_train``, ``y_train``, ``x_val``, ``y_val``; labels are integers 0..C-1."""
    path = Path(path)
    if not path.is_file():
        raise DmmError(f"data file {path} does not exist")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: np.asarray(f[k]) for k in f.files}
        elif path.suffix == ".pt":
            arrays = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise DmmError(f"data file {path} must be .npz or .pt")
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError) as e:
        raise DmmError(f"cannot read {path}: {' '.join(str(e).split())[:200]}") from None
    return validated(arrays, str(path))


def load_callable(class_path: str, init_args: dict[str, Any]) -> TaskData:
    """Users' own loader: ``class_path(**init_args)`` returns ``(x_train, y_train, x_val,
    y_val)`` or a mapping with those keys, arrays or tensors."""
    loader = import_object(class_path, "data class_path")
    if not callable(loader):
        raise DmmError(f"data class_path {class_path!r} is not a function")
    try:
        returned = loader(**init_args)
    except Exception as e:  # noqa: BLE001  (whatever the user's loader raises)
        raise DmmError(f"data {class_path}(...) failed: {one_line(e)}") from None
    if isinstance(returned, tuple | list):
        if len(returned) != len(TENSOR_KEYS):
            raise DmmError(f"data {class_path} returned {len(returned)} values, not 4 "
                           f"({', '.join(TENSOR_KEYS)})")
        returned = dict(zip(TENSOR_KEYS, returned, strict=True))
    return validated(returned, f"data {class_path}")


def _tensor(value: Any, name: str, source: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    try:
        array = np.asarray(value)
        if array.dtype == object:
            raise TypeError("object array")
        return torch.from_numpy(np.ascontiguousarray(array))
    except (TypeError, ValueError):
        raise DmmError(f"{source}: {name} is not a numeric array "
                       f"({type(value).__name__})") from None


def validated(arrays: Any, source: str) -> TaskData:
    """Users' train and validation arrays as a :class:`TaskData`, checked: every key there,
    inputs ``[N, ...]`` of one shape and finite, labels integers 0..C-1 (C = the largest
    label + 1), as many labels as inputs, neither split empty."""
    if not isinstance(arrays, Mapping):
        raise DmmError(f"{source} must hold x_train, y_train, x_val, y_val, not a "
                       f"{type(arrays).__name__}")
    missing = [k for k in TENSOR_KEYS if k not in arrays]
    if missing:
        raise DmmError(f"{source} lacks {', '.join(missing)}")
    x_tr, y_tr, x_va, y_va = (_tensor(arrays[k], k, source) for k in TENSOR_KEYS)
    for x, y, split in ((x_tr, y_tr, "train"), (x_va, y_va, "val")):
        if x.dim() < 2 or len(x) == 0:
            raise DmmError(f"{source}: x_{split} must be a non-empty [N, ...] array, got "
                           f"shape {list(x.shape)}")
        if y.dim() != 1 or len(y) != len(x):
            raise DmmError(f"{source}: y_{split} must hold one label per input ({len(x)}), "
                           f"got shape {list(y.shape)}")
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise DmmError(f"{source}: y_{split} must hold integer labels, not {y.dtype}")
        if x.is_complex() or x.dtype == torch.bool:
            raise DmmError(f"{source}: x_{split} must be real numbers, not {x.dtype}")
        if not torch.isfinite(x.float()).all():
            raise DmmError(f"{source}: x_{split} holds NaN or infinite values")
        if y.min() < 0:
            raise DmmError(f"{source}: labels must be integers 0..C-1, y_{split} has "
                           f"{int(y.min())}")
    if x_tr.shape[1:] != x_va.shape[1:]:
        raise DmmError(f"{source}: train and validation inputs have different shapes "
                       f"({list(x_tr.shape[1:])} and {list(x_va.shape[1:])})")
    n_classes = int(max(y_tr.max(), y_va.max())) + 1
    return TaskData(x_tr.float(), y_tr.long(), x_va.float(), y_va.long(), n_classes)
