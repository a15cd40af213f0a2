"""The engine's side of interventions (``warmstart.interventions``): gathering the unit layers' activation
statistics during training, resetting units in the weights and the optimiser state, and the
interventions' state across steps, finished seeds and resumes. Written over the seed-stacked interface of
``warmstart.train`` (S rows), so one definition serves single runs, stacks and online rounds.
"""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from .init import derived_seed
from .interventions import INTERVENTIONS, InterventionCall, LayerStats, UnitLayer, unit_layers


class UnitStats:
    """Per unit layer, running sums over the batches since the last ``take``: |activation| summed over
    samples and positions, the count they were summed over, and whether each unit ever fired."""

    def __init__(self, layers: Sequence[UnitLayer]):
        self.layers = list(layers)
        self.by_activation = {layer.activation: k for k, layer in enumerate(layers)}
        self.clear()

    def clear(self) -> None:
        self.abs_sum: list[torch.Tensor | None] = [None] * len(self.layers)
        self.fired: list[torch.Tensor | None] = [None] * len(self.layers)
        self.count = [0] * len(self.layers)

    def add(self, activation: str, h: torch.Tensor, stacked: bool) -> None:
        """``h``: the activation module's output, [S, B, ...] (stacked) or [B, ...] (one model)."""
        k = self.by_activation[activation]
        h = h.detach()
        if not stacked:
            h = h.unsqueeze(0)
        if self.layers[k].channels_first and h.dim() > 3:
            h = h.movedim(2, -1)
        h = h.reshape(h.shape[0], -1, h.shape[-1]).abs()
        total, fired = h.sum(1), (h > 0).any(1)
        if self.abs_sum[k] is None:
            self.abs_sum[k], self.fired[k] = total, fired
        else:
            self.abs_sum[k] = self.abs_sum[k] + total
            self.fired[k] = self.fired[k] | fired
        self.count[k] += h.shape[1]

    def keep(self, index: torch.Tensor) -> None:
        self.abs_sum = [None if t is None else t[index] for t in self.abs_sum]
        self.fired = [None if t is None else t[index] for t in self.fired]


@dataclass
class BoundIntervention:
    """A configured intervention of one run (or stack): its options, calls so far and ``[S, ...]`` state."""

    name: str
    options: dict[str, Any]
    calls: int = 0
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def every(self) -> int:
        return int(self.options.get("every", 1))

    def keep(self, index: torch.Tensor) -> None:
        self.state = {k: v[index] if torch.is_tensor(v) and v.dim() > 0 else v for k, v in self.state.items()}


class UnitResetter:
    """The one definition of resetting units of a trainee (``SingleModel`` or ``StackedModels``), per row."""

    def __init__(self, trainee, layers: Sequence[UnitLayer]):
        self.trainee = trainee
        self.layers = list(layers)

    def outgoing(self, k: int) -> torch.Tensor:
        """Sum of |outgoing weight| per unit, [S, U]."""
        layer = self.layers[k]
        w = self.trainee.param_rows(f"{layer.consumer}.weight").detach()
        s, units = w.shape[0], w.shape[2] // layer.span
        return w.abs().reshape(s, w.shape[1], units, layer.span, -1).sum((1, 3, 4))

    @torch.no_grad()
    def reset(self, k: int, mask: torch.Tensor, opt, seeds: Sequence[int], tag: str) -> int:
        """Reset the units ``mask`` [S, U] of layer ``k``; row r's fresh weights are drawn under
        ``derived_seed(seeds[r], tag)``. Returns how many units were reset."""
        layer = self.layers[k]
        n = int(mask.sum())
        if n == 0:
            return 0
        incoming = [f"{layer.producer}.{p}" for p in ("weight", "bias")]
        norm = [] if layer.norm is None else [f"{layer.norm}.{p}" for p in ("weight", "bias")]
        for row in range(mask.shape[0]):
            units = mask[row].nonzero().flatten()
            if len(units) == 0:
                continue
            fresh = self._fresh(row, layer, derived_seed(seeds[row], f"{tag}:{layer.producer}"))
            for name in incoming:
                if name in self.trainee.trainable_names():
                    self.trainee.param_rows(name)[row, units] = fresh[name.rsplit(".", 1)[1]][units].to(
                        self.trainee.param_rows(name).dtype)
                    self._zero_state(opt, name, row, (units,))
            for name in norm:
                if name in self.trainee.trainable_names():
                    value = 1.0 if name.endswith("weight") else 0.0
                    self.trainee.param_rows(name)[row, units] = value
                    self._zero_state(opt, name, row, (units,))
            if layer.norm is not None:
                for buffer, value in (("running_mean", 0.0), ("running_var", 1.0)):
                    rows = self.trainee.buffer_rows(f"{layer.norm}.{buffer}")
                    if rows is not None:
                        rows[row, units] = value
            columns = (units.unsqueeze(1) * layer.span + torch.arange(layer.span, device=units.device)).flatten()
            out = f"{layer.consumer}.weight"
            self.trainee.param_rows(out)[row][:, columns] = 0
            self._zero_state(opt, out, row, (slice(None), columns))
        return n

    def _fresh(self, row: int, layer: UnitLayer, seed: int) -> dict[str, torch.Tensor]:
        """A new draw of the producer layer's own initialisation (its ``reset_parameters``)."""
        module = self.trainee.module_of(row).get_submodule(layer.producer)
        fresh = copy.deepcopy(module)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh.reset_parameters()
        return {n: p.detach() for n, p in fresh.named_parameters()}

    def _zero_state(self, opt, name: str, row: int, index: tuple) -> None:
        """Zero the entries ``index`` of row ``row`` in every per-parameter state tensor the optimiser
        holds for ``name`` (momentum, Adam's moments); scalar state (the step count) stays."""
        leaf = self.trainee.leaf(name)
        state = getattr(opt, "state", {}).get(leaf)
        if not state:
            return
        for value in state.values():
            if torch.is_tensor(value) and value.shape == leaf.shape:
                rows = value if self.trainee.stacked else value.unsqueeze(0)
                rows[row][index] = 0


class Interventions:
    """A run's interventions as the training loop drives them: statistics recorded while the trainee's
    forward runs in training, each intervention called after every ``every``-th optimiser step."""

    def __init__(self, bound: Sequence[BoundIntervention], trainee, seeds: Sequence[int]):
        self.bound = list(bound)
        self.trainee = trainee
        self.seeds = list(seeds)  # per row of the trainee
        self.layers = unit_layers(trainee.models()[0])
        self.stats = [UnitStats(self.layers) for _ in self.bound]
        self.resetter = UnitResetter(trainee, self.layers)
        self.steps = 0
        self.resets = [0] * len(self.seeds)  # units reset per row, for metrics.json
        trainee.set_recorder(self.record, {layer.activation for layer in self.layers})

    def record(self, activation: str, h: torch.Tensor) -> None:
        for stats in self.stats:
            stats.add(activation, h, self.trainee.stacked)

    def after_step(self, opt, batch_size: int) -> None:
        self.steps += 1
        for b, stats in zip(self.bound, self.stats):
            if self.steps % b.every:
                continue
            tag = f"{b.name}:{b.calls}"
            layers = [LayerStats(layer, stats.abs_sum[k] / max(stats.count[k], 1), ~stats.fired[k],
                                 functools.partial(self.resetter.outgoing, k))
                      for k, layer in enumerate(self.layers)]

            def reset(k: int, mask: torch.Tensor, tag=tag) -> int:
                if not bool(mask.any()):  # most calls reset nothing: one check, no per-row work
                    return 0
                for row, n in enumerate(mask.sum(1).tolist()):
                    self.resets[row] += n
                return self.resetter.reset(k, mask, opt, self.seeds, tag)
            INTERVENTIONS[b.name].run(InterventionCall(layers, b.state, self.steps, batch_size, reset), **b.options)
            b.calls += 1
            stats.clear()

    def keep(self, rows: list[int], index: torch.Tensor) -> None:
        self.seeds = [self.seeds[r] for r in rows]
        self.resets = [self.resets[r] for r in rows]
        for b, stats in zip(self.bound, self.stats):
            b.keep(index)
            stats.keep(index)

    def resume_state(self) -> dict:
        return {"steps": self.steps, "seeds": self.seeds, "resets": self.resets,
                "bound": [{"calls": b.calls, "state": b.state} for b in self.bound],
                "stats": [{"abs_sum": s.abs_sum, "fired": s.fired, "count": s.count} for s in self.stats]}

    def load_resume_state(self, saved: dict) -> None:
        self.steps, self.seeds, self.resets = saved["steps"], list(saved["seeds"]), list(saved["resets"])
        for b, state in zip(self.bound, saved["bound"]):
            b.calls, b.state = state["calls"], state["state"]
        for s, state in zip(self.stats, saved["stats"]):
            s.abs_sum, s.fired, s.count = list(state["abs_sum"]), list(state["fired"]), list(state["count"])


def hook_activations(model: nn.Module, names: set[str], record) -> list:
    """Forward hooks on the named modules of ``model`` that pass their output to ``record(name, output)``
    while the model is in training mode. Returns the hook handles."""
    handles = []
    for name in names:
        def hook(module, inputs, output, name=name):
            if module.training:
                record(name, output)
        handles.append(model.get_submodule(name).register_forward_hook(hook))
    return handles
