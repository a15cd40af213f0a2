"""Model registry: ``build_model(spec, input_shape, num_classes)`` looks a model up by its ``arch`` name.

Every model takes any per-sample input shape the datasets give: images (C, H, W) and vectors (L,).
Adding a model is one decorated function here, its options its keyword parameters after the input shape
and the number of classes (checked, names and annotated types, before any job runs); ``stackable`` says
whether several seeds of it can train as one stack of batched matrix products
(``warmstart.engine.trainees.StackedModels``: Flatten, Linear, Tanh and ReLU layers in an ``nn.Sequential``,
no buffers). Architectures that need a module class of their own keep it in ``warmstart.components.nets``;
torch is imported inside the builders, since planning reads this registry and must not pay torch's
import. The models the user already has (``arch: torchvision``, ``arch: python``)
are entries of this registry too, in ``warmstart.components.external_models`` (registered by the package's
``__init__``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from warmstart.core.errors import SpecError
from warmstart.core.registry import Registry, check_options
from warmstart.core.spec import ModelSpec

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class ModelEntry:
    build: Callable[..., nn.Module]  # (input_shape, num_classes, **options) -> the model
    stackable: bool
    choices: Mapping[str, tuple] = field(default_factory=dict)  # option -> its allowed values
    # third-party modules its models import, which a local run's job server imports once for all its
    # jobs (warmstart.jobs.job_server.start) instead of each job again
    libraries: tuple[str, ...] = ()

    def check(self, options: Mapping[str, Any], key: str) -> None:
        check_options(self.build, options, key, skip=2, choices=self.choices)


MODELS: Registry[ModelEntry] = Registry("model")


def register_model(name: str, stackable: bool = False, choices: Mapping[str, tuple] | None = None,
                   libraries: tuple[str, ...] = ()):
    def decorate(fn):
        MODELS.add(name, ModelEntry(fn, stackable, dict(choices or {}), tuple(libraries)))
        return fn
    return decorate


def build_model(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    entry = MODELS.check(spec.arch, spec.options, "model.options", "model.arch")
    return entry.build(tuple(input_shape), num_classes, **spec.options)


def head_parameter_names(model: nn.Module) -> list[str]:
    """Parameter names of the model's last linear layer (its head, the classifier)."""
    from torch import nn

    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        raise SpecError(f"model: {type(model).__name__} has no linear layer to call its head")
    return [f"{last}.{p}" for p, _ in model.get_submodule(last).named_parameters()]


ACTIVATIONS = {"tanh": "Tanh", "relu": "ReLU"}  # option value -> torch.nn class


@register_model("mlp", stackable=True, choices={"activation": tuple(ACTIVATIONS)})
def mlp(input_shape, num_classes, hidden: int = 100, depth: int = 3, activation: str = "tanh") -> nn.Module:
    """``depth`` linear layers with ``hidden`` units between them. The paper says tanh; the authors'
    public code uses ReLU, hence ``activation``."""
    from torch import nn

    if activation not in ACTIVATIONS:
        raise SpecError(f"model.options.activation: must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if depth < 1:
        raise SpecError(f"model.options.depth: must be >= 1, got {depth!r}")
    widths = [math.prod(input_shape)] + [hidden] * (depth - 1) + [num_classes]
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(w_in, w_out))
        if i < depth - 1:
            layers.append(getattr(nn, ACTIVATIONS[activation])())
    return nn.Sequential(*layers)


@register_model("logreg", stackable=True)
def logreg(input_shape, num_classes) -> nn.Module:
    """Multinomial logistic regression: the MLP without hidden layers."""
    return mlp(input_shape, num_classes, depth=1)


@register_model("resnet18")
def resnet18(input_shape, num_classes, width: int = 64) -> nn.Module:
    from warmstart.components.nets import ResNet18

    if width < 1:
        raise SpecError(f"model.options.width: must be >= 1, got {width!r}")
    return ResNet18(input_shape, num_classes, width=width)


@register_model("vgg16")
def vgg16(input_shape, num_classes, width: int = 64) -> nn.Module:
    """VGG-16 in its CIFAR form with BatchNorm and one linear classifier (``warmstart.components.nets.VGG16``)."""
    from warmstart.components.nets import VGG16

    if width < 1:
        raise SpecError(f"model.options.width: must be >= 1, got {width!r}")
    return VGG16(input_shape, num_classes, width=width)


@register_model("vit")
def vit(input_shape, num_classes, patch: int = 4, dim: int = 192, depth: int = 6, heads: int = 3,
        mlp_ratio: float = 4.0) -> nn.Module:
    """A small vision transformer (``warmstart.components.nets.ViT``); the defaults, 4x4 patches, width 192, 6 blocks
    of 3 heads, are a CIFAR-sized ViT of 2.7 M parameters."""
    from warmstart.components.nets import ViT

    for name, value in (("patch", patch), ("dim", dim), ("depth", depth), ("heads", heads)):
        if value < 1:
            raise SpecError(f"model.options.{name}: must be >= 1, got {value!r}")
    if mlp_ratio <= 0:
        raise SpecError(f"model.options.mlp_ratio: must be > 0, got {mlp_ratio!r}")
    return ViT(input_shape, num_classes, patch=patch, dim=dim, depth=depth, heads=heads, mlp_ratio=mlp_ratio)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

