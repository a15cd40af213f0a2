"""Model registry: ``build_model(spec, input_shape, num_classes)`` looks a model up by its ``arch`` name.

Every model takes any per-sample input shape the datasets give: images (C, H, W) and vectors (L,).
Adding a model is one decorated function here; ``stackable`` says whether several seeds of it can train
as one stack of batched matrix products (``warmstart.train.StackedModels``: Flatten, Linear, Tanh and
ReLU layers in an ``nn.Sequential``, no buffers).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .errors import SpecError
from .registry import Registry
from .spec import ModelSpec


@dataclass(frozen=True)
class ModelEntry:
    build: Callable[..., nn.Module]
    stackable: bool


MODELS: Registry[ModelEntry] = Registry("model")


def register_model(name: str, stackable: bool = False):
    def decorate(fn):
        MODELS.add(name, ModelEntry(fn, stackable))
        return fn
    return decorate


def build_model(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    entry = MODELS.lookup(spec.arch, "model.arch")
    try:
        return entry.build(tuple(input_shape), num_classes, **spec.options)
    except TypeError as e:  # an unknown option reaches the builder as an unexpected keyword
        raise SpecError(f"model.options: {spec.arch}: {e}") from None


def head_parameter_names(model: nn.Module) -> list[str]:
    """Parameter names of the model's last linear layer (its head, the classifier)."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        raise SpecError(f"model: {type(model).__name__} has no linear layer to call its head")
    return [f"{last}.{p}" for p, _ in model.get_submodule(last).named_parameters()]


_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


@register_model("mlp", stackable=True)
def mlp(input_shape, num_classes, hidden: int = 100, depth: int = 3, activation: str = "tanh") -> nn.Module:
    """``depth`` linear layers with ``hidden`` units between them. The paper says tanh; the authors'
    public code uses ReLU, hence ``activation``."""
    if activation not in _ACTIVATIONS:
        raise SpecError(f"model.options.activation: must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    if depth < 1:
        raise SpecError(f"model.options.depth: must be >= 1, got {depth!r}")
    widths = [math.prod(input_shape)] + [hidden] * (depth - 1) + [num_classes]
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(w_in, w_out))
        if i < depth - 1:
            layers.append(_ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


@register_model("logreg", stackable=True)
def logreg(input_shape, num_classes) -> nn.Module:
    """Multinomial logistic regression: the MLP without hidden layers."""
    return mlp(input_shape, num_classes, depth=1)


class _BasicBlock(nn.Module):
    def __init__(self, conv, norm, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = conv(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(c_out)
        self.conv2 = conv(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = norm(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(conv(c_in, c_out, 1, stride=stride, bias=False), norm(c_out))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 in its CIFAR form: 3x3 stride-1 stem, no max-pool, BasicBlocks [2, 2, 2, 2].

    Width 64 gives the usual 64/128/256/512 channels (11.17 M parameters at 3x32x32, 10 classes); the
    authors' public code used width 16. Vectors (L,) are treated as one-channel 1-D signals, so the same
    architecture runs with 1-D convolutions on mnist1d.
    """

    def __init__(self, input_shape, num_classes: int, width: int = 64):
        super().__init__()
        if len(input_shape) == 1:
            input_shape = (1, *input_shape)
        if len(input_shape) not in (2, 3):
            raise SpecError(f"model: resnet18 needs (L,), (C, L) or (C, H, W) inputs, got {input_shape}")
        conv, norm = (nn.Conv1d, nn.BatchNorm1d) if len(input_shape) == 2 else (nn.Conv2d, nn.BatchNorm2d)
        self.input_shape = tuple(input_shape)
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.stem = nn.Sequential(conv(input_shape[0], width, 3, stride=1, padding=1, bias=False), norm(width), nn.ReLU())
        blocks, c_in = [], width
        for i, c_out in enumerate(widths):
            for j in range(2):
                blocks.append(_BasicBlock(conv, norm, c_in, c_out, stride=2 if (i > 0 and j == 0) else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        # Adaptive pooling equals the authors' 4x4 average pool on 32x32 inputs and also fits 28x28 and 1-D.
        self.pool = nn.AdaptiveAvgPool1d(1) if conv is nn.Conv1d else nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x):
        x = x.reshape(x.shape[0], *self.input_shape)
        x = self.pool(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


@register_model("resnet18")
def resnet18(input_shape, num_classes, width: int = 64) -> nn.Module:
    if width < 1:
        raise SpecError(f"model.options.width: must be >= 1, got {width!r}")
    return ResNet18(input_shape, num_classes, width=width)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
