"""The oracle backend: logits of models really retrained without the forget set.

Used as ground truth and by Oracle Matching. It answers from oracle fleets
(``dmm fleet --kind oracle --forget F``), one fleet per forget set; the k-th request
for a forget set gets the next unused model of its fleet, so K originals get K distinct,
independent oracles.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from dmm.attribution.predictor import ArrayLike, Predictor
from dmm.errors import DmmError
from dmm.fleet import Fleet


class OraclePredictor(Predictor):
    """Predicts retrained logits by looking them up in oracle fleets."""

    def __init__(self, fleets: Fleet | Sequence[Fleet]):
        fleets = [fleets] if isinstance(fleets, Fleet) else list(fleets)
        if not fleets:
            raise DmmError("the oracle backend needs at least one oracle fleet")
        for f in fleets:
            if f.manifest.get("kind") != "oracle":
                raise DmmError(f"fleet {f.path} is a {f.manifest.get('kind')!r} fleet, "
                               "not an oracle fleet")
        first = fleets[0]
        self.n_train = first.n_train
        self.n_points, self.n_classes = first.logits.shape[1:]
        for f in fleets[1:]:
            if (f.manifest.get("fingerprint") != first.manifest.get("fingerprint")
                    or f.logits.shape[1:] != first.logits.shape[1:]):
                raise DmmError(f"oracle fleets {first.path} and {f.path} belong to different "
                               "tasks or training sets")
        self.fleets = fleets
        self._keys = [_mask_key(f.forget, self.n_train) for f in fleets]

    def predict(self, original_logits: ArrayLike, forget: Any,
                points: ArrayLike | None = None) -> torch.Tensor:
        """Logits of real oracles for each row's forget set (``original_logits`` only sets
        K and the points; their values are not used)."""
        z, masks, idx, single = self._prepare(original_logits, forget, points)
        used = [0] * len(self.fleets)
        out = torch.empty_like(z)
        for k, mask in enumerate(masks.numpy()):
            key = mask.tobytes()
            if key not in self._keys:
                raise DmmError(f"no oracle fleet for the forget set of model {k} "
                               f"({int(mask.sum())} examples)")
            j = self._keys.index(key)
            if used[j] >= len(self.fleets[j]):
                raise DmmError(f"oracle fleet {self.fleets[j].path} has {len(self.fleets[j])} "
                               "models, fewer than requested")
            rows = np.asarray(self.fleets[j].logits[used[j]], dtype=np.float32)
            out[k] = torch.from_numpy(rows)[idx]
            used[j] += 1
        return out[0] if single else out


def _mask_key(forget: np.ndarray | None, n_train: int) -> bytes:
    mask = np.zeros(n_train, dtype=bool)
    if forget is not None:
        mask[forget] = True
    return mask.tobytes()
