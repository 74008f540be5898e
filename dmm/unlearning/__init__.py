"""Unlearning algorithms on one interface: Datamodel Matching and its variants
(:mod:`~dmm.unlearning.matching`), the baselines (:mod:`dmm.baselines`), the shared
fine-tuning machinery (:mod:`~dmm.unlearning.finetune`), method configs
(:mod:`~dmm.unlearning.configs`) and the API (:mod:`~dmm.unlearning.api`).

Names are imported lazily from their modules.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Method": "base", "Finetune": "base", "Problem": "base", "Result": "base",
    "Inputs": "base", "METHODS": "base",
    "method_class": "registry", "method_names": "registry",
    "configured_method": "configs", "method_config": "configs", "grid_points": "configs",
    "unlearn": "api", "unlearn_checkpoint": "api",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
    if name == "METHODS":
        importlib.import_module(f"{__name__}.registry")  # every method registered
    return getattr(module, name)


def __dir__() -> list[str]:
    return __all__
