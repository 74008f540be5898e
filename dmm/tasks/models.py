"""The model of a task, named by import path (the jsonargparse / LightningCLI convention)::

    model:
      class_path: mypackage.nets.SmallNet   # an nn.Module class, or a function returning one
      init_args: {width: 64}                # its keyword arguments

The constructor is called with ``init_args`` and, for each of these two that it declares
as a parameter, the task's ``in_shape`` (one input's shape without the batch dimension,
a tuple of ints) and ``n_classes``. For a batch ``[B, *in_shape]`` it must return logits
``[B, n_classes]``. Models without buffers train as one vectorised fleet (batched matrix
products and grouped convolutions for plain feed-forward ``Sequential`` nets, else
``torch.func.vmap``); models with buffers (BatchNorm) train through a loop.

The shipped architectures are classes of this kind: :class:`MLP` (``hidden``),
:class:`CNN` (``width``) and :class:`ResNet9`. The shipped tasks name them in the short
form ``arch: mlp`` (with ``hidden`` / ``width``), which is also what their artifacts
record as the model's identity.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from dmm.config import import_object, one_line
from dmm.errors import DmmError

SHIPPED = {"mlp": "dmm.tasks.models.MLP", "cnn": "dmm.tasks.models.CNN",
           "resnet9": "dmm.tasks.models.ResNet9"}
GIVEN_BY_TASK = ("in_shape", "n_classes")
DEFAULT_HIDDEN, DEFAULT_WIDTH = [128], 16


@dataclass
class ModelSpec:
    """Which model a task trains: a shipped ``arch`` or your own ``class_path``.

    Args:
        arch: a shipped architecture: ``mlp`` (default), ``cnn`` (two conv layers, for
            small images) or ``resnet9``.
        hidden: hidden layer widths of the MLP (default [128]).
        width: channel width of the CNN's first layer, doubled in the second (default 16).
        class_path: import path of your own model (an nn.Module class or a function
            returning one), instead of ``arch``.
        init_args: keyword arguments of ``class_path``.
    """

    arch: Literal["mlp", "cnn", "resnet9"] | None = None
    hidden: list[int] | None = None
    width: int | None = None
    class_path: str | None = None
    init_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.class_path is not None:
            given = [k for k in ("arch", "hidden", "width") if getattr(self, k) is not None]
            if given:
                raise DmmError(f"model: give either class_path (with init_args) or arch "
                               f"(with hidden, width), not both ({', '.join(given)} given)")
            clash = sorted(set(self.init_args) & set(GIVEN_BY_TASK))
            if clash:
                raise DmmError(f"model init_args must not set {', '.join(clash)}: the "
                               "task gives them to the constructor")
        elif self.init_args:
            raise DmmError("model init_args need a class_path")

    def resolved(self) -> tuple[str, dict[str, Any]]:
        """``(class_path, init_args)``: a shipped ``arch`` is a class of this module."""
        if self.class_path is not None:
            return self.class_path, dict(self.init_args)
        arch = self.arch or "mlp"
        args = {"mlp": {"hidden": list(self.hidden if self.hidden is not None
                                       else DEFAULT_HIDDEN)},
                "cnn": {"width": self.width if self.width is not None else DEFAULT_WIDTH},
                "resnet9": {}}[arch]
        return SHIPPED[arch], args

    def identity(self) -> dict[str, Any]:
        """What artifacts record as the model: ``{class_path, init_args}``, or for a
        shipped architecture (by ``arch`` or by its class path) the ``{arch, hidden,
        width}`` that artifacts have always held, so both spellings are the same model."""
        path, args = self.resolved()
        arch = {v: k for k, v in SHIPPED.items()}.get(path)
        if arch is None or not set(args) <= {"mlp": {"hidden"}, "cnn": {"width"}}.get(arch, set()):
            return {"class_path": path, "init_args": args}
        return {"arch": arch, "hidden": list(args.get("hidden", DEFAULT_HIDDEN)),
                "width": args.get("width", DEFAULT_WIDTH)}


def build_model(spec: ModelSpec, in_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """Instantiate ``spec`` for inputs of shape ``in_shape`` (without the batch dimension)."""
    path, init_args = spec.resolved()
    factory = import_object(path, "model class_path")
    if inspect.isclass(factory) and not issubclass(factory, nn.Module):
        raise DmmError(f"model class_path {path!r} is not an nn.Module")
    if not callable(factory):
        raise DmmError(f"model class_path {path!r} is not a class or function")
    try:
        declared = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        declared = {}
    given = {"in_shape": tuple(in_shape), "n_classes": n_classes}
    kwargs = {**{k: v for k, v in given.items() if k in declared}, **init_args}
    try:
        model = factory(**kwargs)
    except Exception as e:  # noqa: BLE001  (whatever the user's constructor raises)
        raise DmmError(f"model {path}({', '.join(kwargs)}) failed: {one_line(e)}") from None
    if not isinstance(model, nn.Module):
        raise DmmError(f"model class_path {path!r} returned a {type(model).__name__}, "
                       "not an nn.Module")
    return model


class MLP(nn.Sequential):
    """Flatten, then ``Linear + ReLU`` per hidden width, then a linear layer to the classes."""

    def __init__(self, in_shape: tuple[int, ...], n_classes: int,
                 hidden: Sequence[int] = (128,)):
        d = math.prod(in_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        layers.append(nn.Linear(d, n_classes))
        super().__init__(*layers)


class CNN(nn.Sequential):
    """Two 3x3 conv layers (``width``, ``2 * width`` channels), a 2x2 max-pool, a linear
    layer; for small images [C, H, W]."""

    def __init__(self, in_shape: tuple[int, ...], n_classes: int, width: int = 16):
        c, h, w = in_shape
        super().__init__(
            nn.Conv2d(c, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * (h // 2) * (w // 2), n_classes),
        )


def _conv_bn(c_in: int, c_out: int, pool: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class _Residual(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(_conv_bn(c, c), _conv_bn(c, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNet9(nn.Module):
    """The ResNet-9 of the fast CIFAR-10 training recipes (DAWNBench), with BatchNorm."""

    def __init__(self, in_shape: tuple[int, ...] = (3, 32, 32), n_classes: int = 10,
                 scale: float = 0.125):
        super().__init__()
        self.scale = scale
        self.net = nn.Sequential(
            _conv_bn(in_shape[0], 64),
            _conv_bn(64, 128, pool=True),
            _Residual(128),
            _conv_bn(128, 256, pool=True),
            _conv_bn(256, 512, pool=True),
            _Residual(512),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
            nn.Linear(512, n_classes, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * self.scale
