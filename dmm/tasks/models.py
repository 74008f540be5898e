"""Model architectures of the tasks: a small MLP and CNN for digits, ResNet-9 for CIFAR-10."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn


@dataclass
class ModelSpec:
    """Which architecture a task trains.

    Args:
        arch: ``mlp``, ``cnn`` (two conv layers, for small images) or ``resnet9``.
        hidden: hidden layer widths of the MLP.
        width: channel width of the CNN's first layer (doubled in the second).
    """

    arch: Literal["mlp", "cnn", "resnet9"] = "mlp"
    hidden: list[int] = field(default_factory=lambda: [128])
    width: int = 16


def build_model(spec: ModelSpec, in_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """Instantiate ``spec`` for inputs of shape ``in_shape`` (without the batch dimension)."""
    if spec.arch == "mlp":
        return mlp(in_shape, spec.hidden, n_classes)
    if spec.arch == "cnn":
        return cnn(in_shape, spec.width, n_classes)
    if spec.arch == "resnet9":
        return ResNet9(in_shape[0], n_classes)
    raise ValueError(f"unknown architecture {spec.arch!r}")


def mlp(in_shape: tuple[int, ...], hidden: list[int], n_classes: int) -> nn.Sequential:
    d = 1
    for s in in_shape:
        d *= s
    layers: list[nn.Module] = [nn.Flatten()]
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    layers.append(nn.Linear(d, n_classes))
    return nn.Sequential(*layers)


def cnn(in_shape: tuple[int, ...], width: int, n_classes: int) -> nn.Sequential:
    c, h, w = in_shape
    return nn.Sequential(
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

    def __init__(self, in_channels: int = 3, n_classes: int = 10, scale: float = 0.125):
        super().__init__()
        self.scale = scale
        self.net = nn.Sequential(
            _conv_bn(in_channels, 64),
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
