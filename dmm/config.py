"""Typed YAML configs: plain dataclasses validated by jsonargparse."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from jsonargparse import ArgumentParser

from dmm.errors import DmmError

T = TypeVar("T")

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing or malformed file is a :class:`DmmError`."""
    path = Path(path)
    if not path.is_file():
        raise DmmError(f"config {path} does not exist")
    try:
        obj = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise DmmError(f"malformed YAML in {path}: {' '.join(str(e).split())}") from None
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise DmmError(f"{path} must hold a YAML mapping, not {type(obj).__name__}")
    return obj


def parse_dataclass(cls: type[T], obj: dict[str, Any], source: str) -> T:
    """Validate ``obj`` against dataclass ``cls`` (types, unknown keys) and instantiate it."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--value", type=cls)
    try:
        return parser.instantiate(parser.parse_object({"value": obj})).value
    except Exception as e:  # jsonargparse raises several types for bad values
        raise DmmError(f"invalid config {source}: {' '.join(str(e).split())}") from None


def load_dataclass(cls: type[T], path: str | Path) -> T:
    """Load a YAML file into dataclass ``cls``."""
    return parse_dataclass(cls, load_yaml(path), str(path))
