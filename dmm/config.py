"""Typed YAML configs: plain dataclasses validated by jsonargparse.

YAML is read with the YAML 1.2 float syntax (``1e-3`` is a float, not a string, as
YAML 1.1 would have it), the same for config files and for values given on the
command line (``--set lr=1e-3``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from jsonargparse import ArgumentParser

from dmm.errors import DmmError

T = TypeVar("T")

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` and ``2E5`` as floats (YAML 1.2)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """A YAML value (a config file's text, or one ``KEY=VALUE`` value)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506  (a SafeLoader)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing or malformed file is a :class:`DmmError`."""
    path = Path(path)
    if not path.is_file():
        raise DmmError(f"config {path} does not exist")
    try:
        obj = parse_yaml(path.read_text())
    except yaml.YAMLError as e:
        raise DmmError(f"malformed YAML in {path}: {' '.join(str(e).split())}") from None
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise DmmError(f"{path} must hold a YAML mapping, not {type(obj).__name__}")
    return obj


def _readable(message: str) -> str:
    """jsonargparse's message, one line, without its parser-internal prefixes."""
    text = " ".join(message.split())
    text = re.sub(r"Parser key \"value\": (Problem with given class_path '[^']*': )?", "", text)
    text = re.sub(r"Expected a <class '(\w+)'>", r"expected \1", text)
    return text.replace('Parser key "', 'key "')


def parse_dataclass(cls: type[T], obj: dict[str, Any], source: str) -> T:
    """Validate ``obj`` against dataclass ``cls`` (types, unknown keys) and instantiate it."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--value", type=cls)
    try:
        return parser.instantiate(parser.parse_object({"value": obj})).value
    except Exception as e:  # jsonargparse raises several types for bad values
        raise DmmError(f"invalid config {source}: {_readable(str(e))}") from None


def load_dataclass(cls: type[T], path: str | Path) -> T:
    """Load a YAML file into dataclass ``cls``."""
    return parse_dataclass(cls, load_yaml(path), str(path))
