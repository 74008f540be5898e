"""Every unlearning method by name: importing this module registers DMM's family
(:mod:`dmm.unlearning.matching`) and the baselines (:mod:`dmm.baselines`)."""

from __future__ import annotations

import dmm.baselines  # noqa: F401  (registers the baselines)
import dmm.unlearning.matching  # noqa: F401  (registers dmm, dm-direct, om)
from dmm.errors import DmmError
from dmm.unlearning.base import METHODS, Method


def method_class(name: str) -> type[Method]:
    """The registered method called ``name`` (a DmmError lists the known ones)."""
    if name not in METHODS:
        raise DmmError(f"unknown method {name!r} (known: {', '.join(sorted(METHODS))})")
    return METHODS[name]


def method_names() -> list[str]:
    return sorted(METHODS)
