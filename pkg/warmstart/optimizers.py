"""Optimiser registry: ``build_optimizer(params, spec)`` looks an optimiser up by its ``name``.

Adding one is one decorated function here. ``elementwise`` says whether each element's update depends
only on that element's gradient and state, so that one optimiser over S seeds' stacked tensors is S
independent optimisers (stacking needs this); ``momentum`` whether it takes the spec's momentum. Every
optimiser's options are the fields of ``OptimizerSpec`` (checked, names and types, before any job). torch is
imported inside the builders: planning reads this registry and must not pay torch's import.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .errors import SpecError
from .registry import Registry, check_options
from .spec import OptimizerSpec

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Optimizer:
    build: Callable[[Any, OptimizerSpec], torch.optim.Optimizer]
    elementwise: bool
    momentum: bool

    def check(self, options: Mapping[str, Any] | OptimizerSpec, key: str) -> None:
        """``options``: the fields of an ``OptimizerSpec`` but its name (as the config gives them), or the
        spec itself."""
        if isinstance(options, OptimizerSpec):
            options = {k: v for k, v in dataclasses.asdict(options).items() if k != "name"}
        check_options(OptimizerSpec, options, key, skip=1)
        if options.get("momentum") and not self.momentum:
            raise SpecError(f"{key}.momentum: this optimiser takes no momentum")


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
