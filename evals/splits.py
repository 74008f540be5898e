"""The evaluation splits of one forget set (DESIGN.md section 5): forget, retain, validation.

Points are indices into *all* points of a task, training points first, then validation
points (the order of fleet logits). :class:`Splits` is a read-only mapping
``{"forget": ..., "retain": ..., "validation": ...}``, so it goes wherever a mapping of
split names to indices is accepted.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np


@dataclass(frozen=True)
class Splits(Mapping):
    """Forget set F, retain set (training points not in F) and validation points."""

    forget: np.ndarray
    retain: np.ndarray
    validation: np.ndarray

    NAMES: ClassVar[tuple[str, ...]] = ("forget", "retain", "validation")

    @classmethod
    def of(cls, forget: Any, n_train: int, n_points: int) -> Splits:
        """The splits of forget set ``forget`` (training indices) for a task with
        ``n_train`` training points among ``n_points`` points."""
        is_forget = np.zeros(n_train, dtype=bool)
        is_forget[np.asarray(forget, dtype=np.int64)] = True
        return cls(np.flatnonzero(is_forget), np.flatnonzero(~is_forget),
                   np.arange(n_train, n_points))

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.NAMES:
            raise KeyError(name)
        return getattr(self, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.NAMES)

    def __len__(self) -> int:
        return len(self.NAMES)
