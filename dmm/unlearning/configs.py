"""Method hyperparameters from YAML: ``configs/methods/<name>.yaml``.

Format (every section optional)::

    inherit: _reference-sgd   # another file of configs/methods whose defaults (and grid,
                              # if this file has none) come first
    defaults:                 # hyperparameters of the method's dataclass
      lr: 1.0e-3
    grid:                     # name -> list of values; the grid is their cartesian product
      lr: [1.0e-5, 1.0e-3, 1.0e-2]
      epochs: [1, 3, 5, 7, 10]

Every key must be a hyperparameter of the registered method and every value must have
its declared type (checked by jsonargparse against the method's dataclass), so typos fail
loudly as a DmmError.
"""

from __future__ import annotations

import itertools
from dataclasses import fields
from pathlib import Path
from typing import Any

from dmm.config import CONFIG_DIR, load_yaml, parse_dataclass
from dmm.errors import DmmError
from dmm.unlearning.base import Method
from dmm.unlearning.registry import method_class

METHOD_DIR = CONFIG_DIR / "methods"
SECTIONS = ("inherit", "defaults", "grid")


def checked_hparams(name: str, values: dict[str, Any], source: str = "hyperparameters"
                    ) -> dict[str, Any]:
    """``values`` checked against method ``name``'s hyperparameters and parsed to their
    declared types (a DmmError names any unknown key or ill-typed value)."""
    cls = method_class(name)
    known = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise DmmError(f"{source}: method {name!r} has no hyperparameter(s) "
                       f"{', '.join(unknown)} (known: {', '.join(known) or 'none'})")
    method = parse_dataclass(cls, values, source)
    return {k: getattr(method, k) for k in values}


def _read(name: str, path: Path, seen: tuple[Path, ...] = ()) -> tuple[dict, dict]:
    """Raw ``(defaults, grid)`` of a method file, its ``inherit`` chain applied."""
    if path in seen:
        raise DmmError(f"{path}: inherit loops back to itself")
    obj = load_yaml(path)
    extra = sorted(set(obj) - set(SECTIONS))
    if extra:
        raise DmmError(f"{path}: unknown section(s) {', '.join(extra)} "
                       f"(allowed: {', '.join(SECTIONS)})")
    defaults, grid = obj.get("defaults") or {}, obj.get("grid")
    for section, value in (("defaults", defaults), ("grid", grid or {})):
        if not isinstance(value, dict):
            raise DmmError(f"{path}: {section} must be a mapping")
    if obj.get("inherit"):
        base_defaults, base_grid = _read(name, path.with_name(f"{obj['inherit']}.yaml"),
                                         (*seen, path))
        defaults = {**base_defaults, **defaults}
        grid = base_grid if grid is None else grid
    return defaults, grid or {}


def _path(name: str, path: str | Path | None) -> Path:
    method_class(name)
    return Path(path) if path is not None else METHOD_DIR / f"{name}.yaml"


def method_defaults(name: str, path: str | Path | None = None) -> dict[str, Any]:
    """The checked defaults of a method from ``configs/methods/<name>.yaml`` (or ``path``)."""
    path = _path(name, path)
    return checked_hparams(name, _read(name, path)[0], f"{path} defaults")


def method_config(name: str, path: str | Path | None = None
                  ) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """``(defaults, grid)`` of a method from ``configs/methods/<name>.yaml`` (or ``path``)."""
    path = _path(name, path)
    defaults, grid = _read(name, path)
    defaults = checked_hparams(name, defaults, f"{path} defaults")
    parsed: dict[str, list[Any]] = {}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise DmmError(f"{path}: grid entry {key!r} must be a non-empty list")
        parsed[key] = [checked_hparams(name, {key: v}, f"{path} grid")[key] for v in values]
    return defaults, parsed


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of a grid, in key order (the last key varies fastest);
    an empty grid is one point, ``{}``."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True))
            for combo in itertools.product(*(grid[k] for k in keys))]


def configured_method(name: str, **overrides: Any) -> Method:
    """The method with its config's defaults, updated by ``overrides`` (checked)."""
    defaults = method_defaults(name)
    return method_class(name)(**{**defaults, **checked_hparams(name, overrides)})
