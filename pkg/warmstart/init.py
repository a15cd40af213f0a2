"""Initialisation strategies: how a run's starting weights are made, optionally from a parent run.

Each strategy is one function registered by name. It receives a freshly, seededly initialised model and
the parent's final state dict (or None) and returns the model to train. Later strategies (shrink-perturb,
noise, last-layer-only, ...) are one more function each.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from .spec import SpecError


@dataclass(frozen=True)
class Strategy:
    name: str
    apply: Callable[[nn.Module, "dict[str, torch.Tensor] | None", dict[str, Any]], nn.Module]
    needs_parent: bool


STRATEGIES: dict[str, Strategy] = {}


def register_strategy(name: str, needs_parent: bool):
    def decorate(fn):
        STRATEGIES[name] = Strategy(name, fn, needs_parent)
        return fn
    return decorate


def initialise(strategy: str, fresh_model: nn.Module, parent_state: dict | None, options: dict) -> nn.Module:
    entry = STRATEGIES[strategy]
    if entry.needs_parent and parent_state is None:
        raise SpecError(f"init.strategy: {strategy!r} needs the parent run's weights")
    return entry.apply(fresh_model, parent_state, dict(options))


@register_strategy("random", needs_parent=False)
def random_init(model: nn.Module, parent_state, options) -> nn.Module:
    """A fresh initialisation: the model as built under the run's seed; any parent is ignored."""
    if options:
        raise SpecError(f"init.options: 'random' takes no options, got {sorted(options)}")
    return model


@register_strategy("warm", needs_parent=True)
def warm_start(model: nn.Module, parent_state, options) -> nn.Module:
    """Start from exactly the parent's final weights and buffers (BatchNorm statistics included)."""
    if options:
        raise SpecError(f"init.options: 'warm' takes no options, got {sorted(options)}")
    model.load_state_dict(parent_state, strict=True)
    return model


@register_strategy("transfer", needs_parent=True)
def transfer_start(model: nn.Module, parent_state, options) -> nn.Module:
    """A warm start from a model trained on another task: every tensor whose name and shape match the
    parent's is copied; the rest keep their fresh initialisation. With a different number of classes
    that is the final linear layer (the head); with a different number of input channels, the first
    convolution (the stem). Same-shaped models therefore get exactly a warm start."""
    if options:
        raise SpecError(f"init.options: 'transfer' takes no options, got {sorted(options)}")
    kept = transferred_tensors(model, parent_state)
    if not kept:
        raise SpecError("init.strategy: 'transfer' found no tensor of the parent that fits this model")
    state = model.state_dict()
    state.update({k: parent_state[k] for k in kept})
    model.load_state_dict(state)
    return model


def transferred_tensors(model: nn.Module, parent_state: dict) -> list[str]:
    """Names of the tensors a transfer start takes from the parent (for reports and tests)."""
    state = model.state_dict()
    return [k for k, v in parent_state.items() if k in state and state[k].shape == v.shape]
