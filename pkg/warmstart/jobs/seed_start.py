"""A seed's start: its model built under its seed, its init strategy applied, and what its terms and probes
read from the start (their setups' state, the anchors ``start`` and ``origin``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from warmstart.components.datasets import DeviceData
from warmstart.components.inits import InitContext, InitCost, initialise
from warmstart.components.models import build_model
from warmstart.components.splits import Split
from warmstart.components.terms import TERMS
from warmstart.core.seeds import derived_seed
from warmstart.core.spec import RunSpec
from warmstart.engine.loop import TrainData, TrainResult, fit
from warmstart.engine.precision import resolve_engine
from warmstart.engine.trainees import SingleModel


def build_seeded(spec: RunSpec, seed: int, input_shape, num_classes: int, device) -> nn.Module:
    """The model of ``spec`` initialised under ``seed``; the global random state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(spec.model, input_shape, num_classes).to(device)


@dataclass
class SeedStart:
    """One seed's model as its training begins, and what its terms and probes need from the start."""

    model: nn.Module
    ctx: InitContext
    anchors: dict[str, dict[str, torch.Tensor]]
    term_states: list[dict[str, torch.Tensor]]


def start_seed(spec: RunSpec, data: DeviceData, split: Split, parent_state: dict | None, *,
               parent_optimizer_state: dict | None = None, origin: nn.Module | None = None,
               init_seed: int | None = None, train_idx: torch.Tensor | None = None,
               parent_idx: torch.Tensor | None = None, apply_strategy: bool = True, device=None) -> SeedStart:
    """Build ``spec``'s model under its seed (or ``init_seed``) and apply its init strategy (unless
    ``apply_strategy`` is off: an online stream's first round starts from the fresh model); then run its
    terms' setups and snapshot the anchors its terms and probes read. ``origin`` is the lineage's first
    initialisation (default: the fresh model as built, before the strategy: for a batch run also its
    parent's initialisation); the context and the anchors hold a copy of its parameters.
    ``train_idx`` and ``parent_idx`` default to the split's prefixes for the run's and its parent's
    training fractions."""
    device = device if device is not None else data.x_train.device
    seed = spec.seed if init_seed is None else init_seed
    fresh = build_seeded(spec, seed, data.input_shape, data.num_classes, device)
    # A copy taken before the strategy runs: strategies load the parent into ``fresh`` in place, so the
    # lineage's first initialisation must not be read through it afterwards.
    origin_params = parameter_snapshot(fresh if origin is None else origin)
    train_idx = split.train_indices(spec.train_fraction).to(device) if train_idx is None else train_idx
    if parent_idx is None and spec.parent is not None and spec.parent.dataset == spec.dataset:
        parent_idx = split.train_indices(spec.parent.train_fraction).to(device)
    ctx = InitContext(
        fresh=fresh, seed=seed, parent_state=parent_state, parent_optimizer_state=parent_optimizer_state,
        x_train=data.x_train[train_idx], y_train=data.y_train[train_idx],
        x_parent=None if parent_idx is None else data.x_train[parent_idx],
        y_parent=None if parent_idx is None else data.y_train[parent_idx],
        new_model=lambda tag: build_seeded(spec, derived_seed(seed, tag), data.input_shape, data.num_classes, device),
        origin=origin_params, cost=InitCost())
    ctx.train = strategy_trainer(spec, data, train_idx, split, ctx.cost, seed)
    model = initialise(spec.init.strategy, spec.init.options, ctx) if apply_strategy else fresh
    if origin is None and spec.parent is None:
        origin_params = parameter_snapshot(model)  # a lineage that begins here begins at this run's start
    term_states = []
    for t in spec.terms:
        setup = TERMS[t.name].setup
        term_states.append({} if setup is None else setup(ctx, model, **t.options))
    anchors = {}
    if spec.terms or spec.probes:
        anchors = {"start": parameter_snapshot(model), "origin": origin_params}
    return SeedStart(model, ctx, anchors, term_states)


def parameter_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's parameters as detached copies: later in-place updates of the model do not reach them."""
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def strategy_trainer(spec: RunSpec, data: DeviceData, train_idx: torch.Tensor, split: Split, cost: InitCost,
                     seed: int):
    """``ctx.train``: train a model (its trainable parameters) on the run's data with the run's optimiser,
    batch size and stop rule, as a strategy's own first stage; its time and samples count as init cost."""
    def train_model(model: nn.Module, log: Callable[[str], None] | None = None) -> TrainResult:
        resolved = resolve_engine(spec.engine, data.x_train.device, model)
        device = data.x_train.device
        td = TrainData(data.x_train, data.y_train, train_idx.unsqueeze(0), split.validation.to(device).unsqueeze(0))
        result = fit(SingleModel(model, resolved), spec.optimizer, td, [derived_seed(seed, "init-train")],
                     batch_size=spec.batch_size, stop=spec.stop, resolved=resolved, log=log)[0]
        cost.time_s += result.train_time_s
        cost.samples += int(result.final["samples_seen"])
        return result
    return train_model
