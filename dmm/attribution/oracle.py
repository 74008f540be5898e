"""The oracle backend: logits of models really retrained without the forget set.

Used as ground truth and by Oracle Matching. It answers from oracle fleets: fleets of
``oracle`` kind (``dmm fleet --kind oracle --forget F``, every model trained on all but
F) or ``subset`` fleets (each model on its own mask, e.g. U-LiRA shadows' halves minus
their forget sets). A request whose ``forget`` row leaves out L is answered by a model of
these fleets trained on exactly the training set minus L (for a model trained on a subset
T that forgets F, ask with L = everything outside T minus F); the k-th request for one
mask gets the next unused model trained on it, so K originals get K distinct,
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
            if f.manifest.get("kind") not in ("oracle", "subset"):
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
        self._models: dict[bytes, list[tuple[int, int]]] = {}  # training mask -> models
        for i, f in enumerate(fleets):
            for j, mask in enumerate(np.asarray(f.masks, dtype=bool)):
                self._models.setdefault(mask.tobytes(), []).append((i, j))

    def predict(self, original_logits: ArrayLike, forget: Any,
                points: ArrayLike | None = None) -> torch.Tensor:
        """Logits of real oracles for each row's forget set (``original_logits`` only sets
        K and the points; their values are not used)."""
        z, masks, idx, single = self._prepare(original_logits, forget, points)
        want = ~masks.numpy()
        used: dict[bytes, int] = {}
        out = torch.empty_like(z)
        for k, mask in enumerate(want):
            key = mask.tobytes()
            models = self._models.get(key)
            if models is None:
                raise DmmError(f"no oracle fleet for the forget set of model {k} "
                               f"({int((~mask).sum())} examples left out)")
            if used.get(key, 0) >= len(models):
                i = models[0][0]
                raise DmmError(f"oracle fleet {self.fleets[i].path} has {len(models)} models "
                               "for this forget set, fewer than requested")
            i, j = models[used.get(key, 0)]
            out[k] = torch.from_numpy(np.array(self.fleets[i].logits[j], dtype=np.float32))[idx]
            used[key] = used.get(key, 0) + 1
        return out[0] if single else out
