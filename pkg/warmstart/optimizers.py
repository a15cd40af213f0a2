"""Optimiser registry: ``build_optimizer(params, spec)`` looks an optimiser up by its ``name``.

Adding one is one decorated function here. ``elementwise`` says whether each element's update depends
only on that element's gradient and state, so that one optimiser over S seeds' stacked tensors is S
independent optimisers (stacking needs this); ``momentum`` whether it takes the spec's momentum. torch is
imported inside the builders: planning reads this registry and must not pay torch's import.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .errors import SpecError
from .registry import Registry
from .spec import OptimizerSpec

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Optimizer:
    build: Callable[[Any, OptimizerSpec], torch.optim.Optimizer]
    elementwise: bool
    momentum: bool

    def check(self, spec: OptimizerSpec, key: str) -> None:
        if spec.momentum and not self.momentum:
            raise SpecError(f"{key}.momentum: {spec.name!r} takes no momentum")


OPTIMIZERS: Registry[Optimizer] = Registry("optimizer")


def register_optimizer(name: str, elementwise: bool, momentum: bool = False):
    def decorate(fn):
        OPTIMIZERS.add(name, Optimizer(fn, elementwise, momentum))
        return fn
    return decorate


@register_optimizer("sgd", elementwise=True, momentum=True)
def _sgd(params, o: OptimizerSpec) -> torch.optim.Optimizer:
    import torch

    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


@register_optimizer("adam", elementwise=True)
def _adam(params, o: OptimizerSpec) -> torch.optim.Optimizer:
    import torch

    return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)


def build_optimizer(params, spec: OptimizerSpec) -> torch.optim.Optimizer:
    """A fresh optimiser per run: the paper resets Adam's state between rounds (its Section 3.5)."""
    from torch import nn

    if isinstance(params, nn.Module):
        params = [p for p in params.parameters() if p.requires_grad]
    return OPTIMIZERS.lookup(spec.name, "optimizer.name").build(params, spec)
