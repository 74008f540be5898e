"""Typed YAML configs: plain dataclasses validated by jsonargparse.

YAML is read with the YAML 1.2 float syntax (``1e-3`` is a float, not a string, as
YAML 1.1 would have it), the same for config files and for values given on the
command line (``--set lr=1e-3``).

The shipped configs (``tasks/``, ``methods/``, ``bench/``) are package data of
``dmm.configs``: pyproject.toml maps the repository's top-level ``configs/`` folder onto
that package, so a wheel holds them in ``site-packages/dmm/configs/`` and an editable
install finds the repository's folder. :data:`CONFIG_DIR` is located by
``importlib.resources``, never as a path beside the source tree; :func:`config_path`
turns a shipped config's name, or a YAML path, into its file. Objects named by import
path (a task's ``class_path``) are imported by :func:`import_object`.
"""

from __future__ import annotations

import importlib
import re
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from jsonargparse import ArgumentParser

from dmm.errors import DmmError

T = TypeVar("T")

CONFIG_KINDS = {"tasks": "task", "methods": "method", "bench": "bench config"}


def _config_dir() -> Path:
    """The directory of the installed ``dmm.configs`` package data."""
    root = resources.files("dmm.configs")
    if not isinstance(root, Path):  # a zip import: the YAML readers need real files
        raise ImportError(f"dmm.configs must be installed as files, not {root!r}")
    return root


CONFIG_DIR = _config_dir()


def config_names(kind: str) -> list[str]:
    """Names of the shipped configs of a kind (``tasks``, ``methods``, ``bench``); files
    whose name starts with ``_`` are shared settings that others inherit, not configs."""
    return sorted(p.stem for p in (CONFIG_DIR / kind).glob("*.yaml")
                  if not p.name.startswith("_"))


def config_path(kind: str, name: str | Path) -> Path:
    """The file of a config given by name (a shipped ``configs/<kind>/<name>.yaml``) or as
    a ``.yaml``/``.yml`` path (returned as given; a missing file is refused when read)."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        return path
    shipped = CONFIG_DIR / kind / f"{name}.yaml"
    if str(name).startswith("_") or path.name != str(name) or not shipped.is_file():
        raise DmmError(f"unknown {CONFIG_KINDS[kind]} {str(name)!r} "
                       f"(known: {', '.join(config_names(kind))}; or give a YAML path)")
    return shipped


def import_object(path: str, what: str) -> Any:
    """The object a dotted import path names (``package.module.Name``), imported; a path
    that does not import is a one-line :class:`DmmError` naming ``what`` it was for."""
    module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise DmmError(f"{what} {path!r} must be an import path, module.Name")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001  (whatever the user's module raises on import)
        hint = " (is it installed or on PYTHONPATH?)" if isinstance(e, ImportError) else ""
        raise DmmError(f"{what} {path!r}: cannot import {module_name}: "
                       f"{one_line(e)}{hint}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise DmmError(f"{what} {path!r}: module {module_name} has no {attr!r}") from None


def one_line(e: BaseException) -> str:
    """An exception as one line: its type and message, whitespace collapsed."""
    return f"{type(e).__name__}: {' '.join(str(e).split())}"[:300]


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
