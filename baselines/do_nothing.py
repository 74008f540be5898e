"""Do-nothing: the original models, unchanged (the reference point every method must beat)."""

from __future__ import annotations

from dataclasses import dataclass

from dmm.ensemble import Ensemble
from dmm.unlearning.base import Method, Problem


@dataclass
class DoNothing(Method):
    """Return the originals as they are."""

    name = "do-nothing"

    def run(self, problem: Problem, ensemble: Ensemble) -> float:
        return 0.0
