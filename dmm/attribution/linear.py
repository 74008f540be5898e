"""Linear attributions: per-class-logit weights beta [n_train, points, classes].

Regression datamodels and (rescaled) TRAK scores are both stored as a
:class:`LinearAttribution`: the outputs of a model trained on subset S' are modelled as

    f(x; A(S')) ~ b(x) + sum_i (1[i in S'] - mean_i) beta_i(x)          (DESIGN.md section 3)

and DM-Direct predicts the retrained logits as h(x) = f(x; theta0) - s * sum_{i in F} beta_i(x).

beta is kept either as a factorisation ``beta = basis @ coef`` (basis [n_train, r], coef
[r, points, classes], r = min(models, n_train): ridge) or as the matrix itself (``basis``
None, coef [n_train, points, classes], usually a read-only memmap: lasso, TRAK). Neither
form is expanded to [n_train, points, classes] to predict: a forget set needs
``forget @ basis`` (K x r) times the coef columns of the requested points, or, without a
basis, only the coef rows of the forgotten examples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dmm.attribution.predictor import ArrayLike, Predictor, as_tensor, point_indices
from dmm.errors import DmmError

ROW_CHUNK = 256  # coef rows read at once when beta has no factorisation


@dataclass
class LinearAttribution(Predictor):
    """beta (factorised or not), the intercept b, the mask centre and the DM-Direct scale s.

    Args:
        intercept: [points, classes] b(x): the mean output of the fitting fleet.
        mask_mean: [n_train] centre of the inclusion masks (about alpha = 1/2).
        coef: [r, points, classes] with ``basis``, else [n_train, points, classes].
        basis: [n_train, r] or None.
        scale: DM-Direct scale s (see :mod:`dmm.attribution.calibration`).
        info: what produced it (backend, solver, regularisation, LDS, ...), for manifests.
    """

    intercept: np.ndarray
    mask_mean: np.ndarray
    coef: np.ndarray
    basis: np.ndarray | None = None
    scale: float = 1.0
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.n_points, self.n_classes = self.intercept.shape
        self.n_train = len(self.mask_mean)
        rows = self.n_train if self.basis is None else self.basis.shape[1]
        if self.coef.shape != (rows, self.n_points, self.n_classes):
            raise DmmError(f"coef must be [{rows}, {self.n_points}, {self.n_classes}], got "
                           f"{list(self.coef.shape)}")
        if self.basis is not None and self.basis.shape[0] != self.n_train:
            raise DmmError(f"basis must have {self.n_train} rows, got {self.basis.shape[0]}")

    @property
    def rank(self) -> int:
        """Rows of ``coef``: the factorisation's rank, or n_train."""
        return self.coef.shape[0]

    def _coef(self, rows: Any, points: torch.Tensor) -> torch.Tensor:
        """coef[rows][:, points] as a float32 tensor (reads only those rows of a memmap)."""
        block = np.array(self.coef[rows], dtype=np.float32)  # a copy: memmaps are read-only
        return torch.from_numpy(block)[:, points]

    def apply(self, weights: ArrayLike, points: ArrayLike | None = None) -> torch.Tensor:
        """sum_i weights[k, i] * beta_i(x) for each row k: [K, n_train] -> [K, P, C]."""
        idx = point_indices(points, self.n_points)
        w = as_tensor(weights)
        if w.ndim != 2 or w.shape[1] != self.n_train:
            raise DmmError(f"weights must be [K, {self.n_train}], got {list(w.shape)}")
        out = torch.zeros(len(w), len(idx), self.n_classes)
        if self.basis is not None:
            wb = w.double() @ torch.from_numpy(np.asarray(self.basis)).double()  # [K, r]
            for start in range(0, self.rank, ROW_CHUNK * 4):
                rows = slice(start, min(start + ROW_CHUNK * 4, self.rank))
                c = self._coef(rows, idx)
                out += torch.einsum("kr,rpc->kpc", wb[:, rows].float(), c)
            return out
        used = torch.nonzero(w.abs().sum(0) > 0).flatten().numpy()
        for start in range(0, len(used), ROW_CHUNK):
            rows = used[start : start + ROW_CHUNK]
            out += torch.einsum("kr,rpc->kpc", w[:, rows], self._coef(rows, idx))
        return out

    def rows(self, indices: ArrayLike, points: ArrayLike | None = None) -> torch.Tensor:
        """beta_i(x) for the given training examples: [len(indices), P, C]."""
        idx = np.asarray(as_tensor(indices, torch.int64)).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_train):
            raise DmmError(f"training indices must lie in [0, {self.n_train})")
        if self.basis is None:
            return self._coef(idx, point_indices(points, self.n_points))
        onehot = torch.zeros(len(idx), self.n_train)
        onehot[torch.arange(len(idx)), torch.from_numpy(idx)] = 1.0
        return self.apply(onehot, points)

    def forget_effect(self, forget: ArrayLike, points: ArrayLike | None = None) -> torch.Tensor:
        """sum_{i in F_k} beta_i(x), unscaled: [K, n_train] bool -> [K, P, C]."""
        return self.apply(as_tensor(forget), points)

    def predict(self, original_logits: ArrayLike, forget: Any,
                points: ArrayLike | None = None) -> torch.Tensor:
        """DM-Direct: h(x) = f(x; theta0) - s * sum_{i in F} beta_i(x)."""
        z, masks, idx, single = self._prepare(original_logits, forget, points)
        h = z - self.scale * self.forget_effect(masks.float(), idx)
        return h[0] if single else h

    def predict_subset(self, masks: ArrayLike, points: ArrayLike | None = None) -> torch.Tensor:
        """The datamodel's prediction for models trained on subsets ``masks`` [K, n_train]:
        b(x) + sum_i (mask_i - mean_i) beta_i(x), [K, P, C]."""
        idx = point_indices(points, self.n_points)
        centred = as_tensor(masks) - torch.from_numpy(np.asarray(self.mask_mean)).float()
        return self.apply(centred, idx) + torch.from_numpy(np.asarray(self.intercept))[idx]

    def dense(self, points: ArrayLike | None = None) -> torch.Tensor:
        """The full beta [n_train, P, C] (for small problems and tests)."""
        return self.rows(np.arange(self.n_train), points)

    def rescaled(self, factor: float) -> LinearAttribution:
        """The same attribution with beta multiplied by ``factor`` (coef is copied)."""
        return LinearAttribution(self.intercept, self.mask_mean,
                                 np.asarray(self.coef, dtype=np.float32) * np.float32(factor),
                                 self.basis, self.scale, dict(self.info))
