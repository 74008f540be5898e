"""Method hyperparameters from YAML: ``configs/methods/<name>.yaml``.

Format (both sections optional)::

    defaults:        # hyperparameters of the method's dataclass; the rest keep theirs
      lr: 1.0e-3
    grid:            # name -> list of values; the grid is their cartesian product
      lr: [1.0e-5, 1.0e-3, 1.0e-2]
      epochs: [1, 3, 5, 7, 10]

Every key must be a hyperparameter of the registered method, and every value must have
the type its dataclass field declares, so typos fail loudly as a DmmError.
"""

from __future__ import annotations

import itertools
import types
from dataclasses import fields
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from dmm.config import CONFIG_DIR, load_yaml
from dmm.errors import DmmError
from dmm.unlearning.base import METHODS, Method, get_method

METHOD_DIR = CONFIG_DIR / "methods"
SECTIONS = ("defaults", "grid")


def _method_class(name: str) -> type[Method]:
    import dmm.baselines  # noqa: F401  (registers the baselines)

    if name not in METHODS:
        raise DmmError(f"unknown method {name!r} (known: {', '.join(sorted(METHODS))})")
    return METHODS[name]


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` as type ``hint`` (bool, int, float, str, list[...] or a union of those)."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        for h in args:
            if h is type(None) and value is None:
                return None
        for h in args:
            if h is not type(None):
                try:
                    return _coerce(value, h, where)
                except DmmError:
                    continue
    elif origin in (list, tuple) and isinstance(value, (list, tuple)):
        inner = args[0] if args else Any
        return origin(_coerce(v, inner, where) for v in value)
    elif hint is Any:
        return value
    elif hint is bool and isinstance(value, bool):
        return value
    elif hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif hint is float and not isinstance(value, bool):
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str and isinstance(value, str):
        return value
    name = getattr(hint, "__name__", str(hint))
    raise DmmError(f"{where}: expected {name}, got {value!r}")


def _check(cls: type[Method], values: dict[str, Any], source: str) -> dict[str, Any]:
    """Validate hyperparameter names and types against ``cls``; return parsed values."""
    known = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise DmmError(f"{source}: method {cls.name!r} has no hyperparameter(s) "
                       f"{', '.join(unknown)} (known: {', '.join(known) or 'none'})")
    hints = get_type_hints(cls)
    return {k: _coerce(v, hints[k], f"{source}: {k}") for k, v in values.items()}


def method_config(name: str, path: str | Path | None = None
                  ) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """``(defaults, grid)`` of a method from ``configs/methods/<name>.yaml`` (or ``path``)."""
    cls = _method_class(name)
    path = Path(path) if path is not None else METHOD_DIR / f"{name}.yaml"
    obj = load_yaml(path)
    extra = sorted(set(obj) - set(SECTIONS))
    if extra:
        raise DmmError(f"{path}: unknown section(s) {', '.join(extra)} "
                       f"(allowed: {', '.join(SECTIONS)})")
    defaults = obj.get("defaults") or {}
    grid = obj.get("grid") or {}
    for section, value in (("defaults", defaults), ("grid", grid)):
        if not isinstance(value, dict):
            raise DmmError(f"{path}: {section} must be a mapping")
    defaults = _check(cls, defaults, f"{path} defaults")
    parsed: dict[str, list[Any]] = {}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise DmmError(f"{path}: grid entry {key!r} must be a non-empty list")
        parsed[key] = [_check(cls, {key: v}, f"{path} grid")[key] for v in values]
    return defaults, parsed


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of a grid, in key order (the last key varies fastest);
    an empty grid is one point, ``{}``."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True))
            for combo in itertools.product(*(grid[k] for k in keys))]


def checked_hparams(name: str, values: dict[str, Any], source: str = "hyperparameters"
                    ) -> dict[str, Any]:
    """``values`` checked against method ``name``'s hyperparameters and parsed to their
    declared types (a DmmError names any unknown key or ill-typed value)."""
    return _check(_method_class(name), values, source)


def configured_method(name: str, **overrides: Any) -> Method:
    """The method with its config's defaults, updated by ``overrides`` (checked)."""
    defaults, _ = method_config(name)
    return get_method(name, **{**defaults, **checked_hparams(name, overrides)})
