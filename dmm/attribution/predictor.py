"""The one interface of the attribution backends: predict the logits of retrained models.

Every backend (regression datamodels, TRAK, real oracles) answers the same question:
given the original model(s)' logits and a forget set F, what would the logits of a
model retrained without F be? Points are indices into *all* points of a task, training
points first, then validation points (the order of fleet logits).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch

from dmm.errors import DmmError
from dmm.forget_sets import validate_indices

ArrayLike = np.ndarray | torch.Tensor


def as_tensor(x: Any, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A CPU tensor of ``dtype`` from a tensor, numpy array (memmaps included) or list."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", dtype)
    arr = np.asarray(x)
    if not arr.flags.writeable:  # memmaps: torch wants writable memory
        arr = arr.copy()
    return torch.as_tensor(arr, dtype=dtype)


def forget_masks(forget: Any, k: int, n_train: int) -> torch.Tensor:
    """Normalise a forget specification to a [k, n_train] bool tensor.

    Accepted: a [k, n_train] or [n_train] bool mask, one index array (the same set for
    every model), or a sequence of ``k`` index arrays (one set per model).
    """
    if isinstance(forget, list | tuple) and len(forget) > 0 and np.ndim(forget[0]) > 0:
        if len(forget) != k:
            raise DmmError(f"got {len(forget)} forget sets for {k} models")
        return torch.stack([forget_masks(f, 1, n_train)[0] for f in forget])
    arr = forget.detach().cpu().numpy() if isinstance(forget, torch.Tensor) else np.asarray(forget)
    if arr.dtype == bool:
        if arr.shape == (n_train,):
            arr = np.broadcast_to(arr, (k, n_train))
        if arr.shape != (k, n_train):
            raise DmmError(f"forget mask must be [{k}, {n_train}] or [{n_train}], got "
                           f"{list(arr.shape)}")
        if not arr.any(axis=1).all():
            raise DmmError("a forget set is empty")
        return torch.from_numpy(np.ascontiguousarray(arr))
    idx = validate_indices(arr.reshape(-1), n_train)
    mask = torch.zeros(k, n_train, dtype=torch.bool)
    mask[:, torch.from_numpy(idx)] = True
    return mask


def point_indices(points: Any, n_points: int) -> torch.Tensor:
    """Indices into all points (``None``: all of them), validated, as a long tensor."""
    if points is None:
        return torch.arange(n_points)
    idx = as_tensor(points, torch.float64).reshape(-1)
    if idx.numel() == 0:
        raise DmmError("no points to predict")
    if not torch.equal(idx, idx.round()) or idx.min() < 0 or idx.max() >= n_points:
        raise DmmError(f"points must be integer indices in [0, {n_points})")
    return idx.long()


def select_logits(original_logits: Any, points: torch.Tensor, n_points: int) -> torch.Tensor:
    """Original logits at ``points`` as [K, P, C]; they may be given at all points or
    already at ``points`` (one model: [P, C])."""
    z = as_tensor(original_logits)
    if z.ndim == 2:
        z = z[None]
    if z.ndim != 3:
        raise DmmError(f"original logits must be [models, points, classes], got {list(z.shape)}")
    if z.shape[1] == len(points):
        return z
    if z.shape[1] == n_points:
        return z[:, points]
    raise DmmError(f"original logits cover {z.shape[1]} points; expected {len(points)} "
                   f"(the requested points) or {n_points} (all points)")


class Predictor(ABC):
    """Predicts the logits of a model retrained without a forget set.

    Subclasses set ``n_train``, ``n_points`` and ``n_classes`` and implement
    :meth:`predict`.
    """

    n_train: int
    n_points: int
    n_classes: int

    @abstractmethod
    def predict(self, original_logits: ArrayLike, forget: Any,
                points: ArrayLike | None = None) -> torch.Tensor:
        """Predicted retrained logits.

        Args:
            original_logits: [K, P, C] logits of K original models ([P, C] for one), at
                ``points`` or at all points.
            forget: [K, n_train] or [n_train] bool mask, or index array(s) (see
                :func:`forget_masks`).
            points: indices into all points (train first, then validation); default all.

        Returns:
            [K, P, C] float32 tensor on the CPU ([P, C] when one model was given as 2-D).
        """

    def _prepare(self, original_logits: ArrayLike, forget: Any, points: ArrayLike | None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
        idx = point_indices(points, self.n_points)
        single = as_tensor(original_logits).ndim == 2
        z = select_logits(original_logits, idx, self.n_points)
        if z.shape[-1] != self.n_classes:
            raise DmmError(f"logits have {z.shape[-1]} classes, the predictor {self.n_classes}")
        masks = forget_masks(forget, len(z), self.n_train)
        return z, masks, idx, single
