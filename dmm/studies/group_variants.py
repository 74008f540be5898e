"""The group-removal predictors that were tried and not kept (scripts/group_attribution.py
measures them beside the chosen :class:`dmm.attribution.group.GroupAttribution`).

* :class:`Amplified`: ridge datamodels whose removed examples are re-weighted by the
  exact leave-group-out of a linear model, written with the datamodels themselves:
  removing j lowers i's margin by E_ij = s D_ij (D the margin datamodel matrix); with a
  residual scale c (every residual c in margin units), the residual of the removed
  examples solves r = c 1 + M r, M_ij = E_ij / (c + E_jj), and example i's weight is
  w_i = r_i / (c + E_ii) (1 for an isolated example; above 1 inside a coherent group).
* :class:`SubstituteScaled`: ridge datamodels whose removed example i gets the scale
  s0 (1 + k phi_i), phi_i the share of its substitutes inside F (as the group backend's).
* :class:`DensityOnly`: the group backend's density path at every training point (not
  only the forget points), ridge at validation points.

The group backend's own parts are switched off with ``dataclasses.replace`` (``amplify=0``,
``blend=0``, ``spread=(0, 0)``); with the first two off it is the previous default (the
path at the forget points, plain ridge DM-Direct elsewhere).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dmm.attribution.group import GroupAttribution, _margins
from dmm.attribution.linear import LinearAttribution
from dmm.attribution.predictor import ArrayLike, Predictor


class _Weighted(Predictor):
    """Ridge DM-Direct with per-removed-example weights ``weights(F)``."""

    def __init__(self, ridge: LinearAttribution):
        self.ridge = ridge
        self.n_train, self.n_points, self.n_classes = ridge.n_train, ridge.n_points, \
            ridge.n_classes

    def weights(self, forget: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, original_logits: ArrayLike, forget: Any,
                points: ArrayLike | None = None) -> torch.Tensor:
        z, masks, idx, single = self._prepare(original_logits, forget, points)
        w = torch.zeros(masks.shape)
        for k, row in enumerate(masks.numpy()):
            f = np.flatnonzero(row)
            w[k, f] = torch.as_tensor(self.weights(f), dtype=torch.float32)
        h = z - self.ridge.scale * self.ridge.apply(w, idx)
        return h[0] if single else h


class Amplified(_Weighted):
    """Self-consistent leave-group-out weights on the ridge datamodels."""

    def __init__(self, ridge: LinearAttribution, margin_matrix: np.ndarray, c: float = 2.0):
        super().__init__(ridge)
        self.d, self.c = np.asarray(margin_matrix, dtype=np.float64), c

    def weights(self, forget: np.ndarray) -> np.ndarray:
        e = self.ridge.scale * self.d[np.ix_(forget, forget)]  # E[i, j]: j's effect on i
        diag = np.diag(e)
        m = e / (self.c + diag)[None, :]
        r = np.linalg.solve(np.eye(len(forget)) - m, np.full(len(forget), self.c))
        return r / (self.c + diag)


class SubstituteScaled(_Weighted):
    """Per-example scales from the share of substitutes removed."""

    def __init__(self, ridge: LinearAttribution, group: GroupAttribution, s0: float,
                 k: float):
        super().__init__(ridge)
        self.group, self.s0, self.k = group, s0, k

    def weights(self, forget: np.ndarray) -> np.ndarray:
        return self.s0 / self.ridge.scale * (1 + self.k * self.group.phi(forget))


class DensityOnly(Predictor):
    """The density path's margin shift at every training point, ridge at the others."""

    def __init__(self, group: GroupAttribution):
        self.group = group
        self.n_train, self.n_points, self.n_classes = group.n_train, group.n_points, \
            group.n_classes

    def predict(self, original_logits: ArrayLike, forget: Any,
                points: ArrayLike | None = None) -> torch.Tensor:
        g = self.group
        z, masks, idx, single = self._prepare(original_logits, forget, points)
        h = g.ridge.predict(z, masks, idx)
        train = idx < g.n_train
        cols = torch.nonzero(train).flatten()
        y = torch.as_tensor(np.asarray(g.train_labels)[idx[cols].numpy()], dtype=torch.long)
        for k, row in enumerate(masks.numpy()):
            f = np.flatnonzero(row)
            astar = 1.0 - g.kappa * g.phi(f)
            pts = idx[cols].numpy()
            shift = -g.s * (g.beta[np.ix_(pts, f)]
                            + (astar - g.abar)[None, :] * g.gamma[np.ix_(pts, f)]).sum(1)
            target = _margins(z[k:k + 1, cols], y)[0] + torch.as_tensor(shift, dtype=torch.float32)
            hk = h[k:k + 1, cols]
            hk[0, torch.arange(len(cols)), y] += target - _margins(hk, y)[0]
            h[k, cols] = hk[0]
        return h[0] if single else h
