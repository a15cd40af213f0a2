"""Interventions: what may rewrite weights and optimiser state while a run trains (ReDo, continual
backprop, self-normalised resets).

Loss terms act through the gradient and probes only measure; an intervention runs after the optimiser
step, every ``every`` steps, and may reset *units*: the output channels of a linear or convolutional layer
(a hidden neuron, a conv filter, a transformer block's MLP unit). It sees, per seed of the run (S rows, as
everywhere in the engine), each unit layer's activation statistics over the batches since its last call,
gathered by the engine only while a run has interventions:

* ``mean_abs`` [S, U]: the mean |activation| of each unit (a conv unit over batch and positions);
* ``silent`` [S, U]: whether the unit never fired (|activation| > 0) on those batches;

and its own ``state`` (ages, utilities, thresholds, counters: ``[S, ...]`` tensors and plain numbers),
which the engine keeps with the run's resumable state and slices with the rows when seeds finish. To reset
units it calls ``ctx.reset(layer, mask)``, the one definition of a reset (``UnitResetter``): the units'
incoming weights, bias and norm parameters get a fresh draw of their layer's initialisation (its
``reset_parameters``, under a seed derived from the run's seed, the intervention and the call, so a draw is
the same alone, in a stack and after a resume), their outgoing weights become zero, and exactly those
entries of the optimiser's per-parameter state (momentum, Adam's moments) are zeroed; Adam's step count
is per tensor and stays. The output layer has no unit layer (its units are the classes), so it is never
reset.

An intervention is part of a run's identity (``RunSpec.interventions``); its time is training time (it
runs inside the training loop) and it reads no extra samples. Options are the keyword parameters of the
registered function (``every`` among them), checked before any job runs. An intervention that cannot work
per seed of a stack says ``stackable=False``. Which layers have units is the model's to say
(``unit_layers``): an ``nn.Sequential`` chain of linear/conv layers with element-wise layers between, or a
module's own ``unit_layers()`` (the residual net: each block's inner convolution; the ViT: each block's MLP;
shortcut convolutions and attention projections are not unit layers).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .errors import SpecError
from .registry import Registry, check_options

if TYPE_CHECKING:
    import torch
    from torch import nn


# -- which layers have units ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class UnitLayer:
    """One layer of units. ``producer``: the linear/conv module whose output channels are the units;
    ``norm``: a normalisation module right after it (its per-channel weight, bias and running statistics
    belong to the units), or None; ``activation``: the module whose output the statistics are taken from
    (the units after their non-linearity); ``consumer``: the next linear/conv module, whose input
    channels (``span`` consecutive columns per unit, where a flatten lies between) are the units'
    outgoing weights; ``channels_first``: the unit axis of one sample's activation is its first (conv:
    [C, H, W]) rather than its last (linear, tokens: [..., U])."""

    producer: str
    activation: str
    consumer: str
    norm: str | None = None
    span: int = 1
    channels_first: bool = False


_ELEMENTWISE = ("ReLU", "Tanh", "GELU", "SiLU", "LeakyReLU", "ELU", "Sigmoid", "Dropout", "Identity")
_CHANNEL_PRESERVING = ("MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d", "AdaptiveAvgPool1d",
                       "AdaptiveAvgPool2d", "Flatten")
_NORMS = ("BatchNorm1d", "BatchNorm2d", "LayerNorm", "GroupNorm")


def unit_layers(model: nn.Module) -> list[UnitLayer]:
    """The model's unit layers: its own ``unit_layers()``, or those of a ``nn.Sequential`` chain (each
    linear/conv layer followed, through a norm, an activation and pooling or a flatten, by another)."""
    from torch import nn

    own = getattr(model, "unit_layers", None)
    if callable(own):
        return list(own())
    if not isinstance(model, nn.Sequential):
        raise SpecError(f"interventions: model {type(model).__name__} declares no unit layers (an nn.Sequential "
                        "chain or a unit_layers() method); interventions cannot run on it")
    return sequential_unit_layers(model)


def sequential_unit_layers(model: nn.Module, prefix: str = "") -> list[UnitLayer]:
    """Unit layers of a chain of modules (nested nn.Sequential flattened, in order)."""
    from torch import nn

    chain: list[tuple[str, nn.Module]] = []

    def walk(module: nn.Module, name: str) -> None:
        if isinstance(module, nn.Sequential):
            for child_name, child in module.named_children():
                walk(child, f"{name}.{child_name}" if name else child_name)
        else:
            chain.append((name, module))
    walk(model, prefix)
    out: list[UnitLayer] = []
    weighted = (nn.Linear, nn.Conv1d, nn.Conv2d)
    for i, (name, module) in enumerate(chain):
        if not isinstance(module, weighted):
            continue
        norm = activation = None
        for later_name, later in chain[i + 1:]:
            kind = type(later).__name__
            if isinstance(later, weighted):
                if activation is not None:
                    units = module.out_features if isinstance(module, nn.Linear) else module.out_channels
                    fan_in = later.in_features if isinstance(later, nn.Linear) else later.in_channels
                    if fan_in % units:
                        break
                    out.append(UnitLayer(name, activation, later_name, norm, fan_in // units,
                                         channels_first=not isinstance(module, nn.Linear)))
                break
            if kind in _NORMS and norm is None and activation is None:
                norm = later_name
            elif kind in _ELEMENTWISE[:6] and activation is None:
                activation = later_name
            elif kind not in _ELEMENTWISE and kind not in _CHANNEL_PRESERVING:
                break
    return out


# -- what an intervention sees ------------------------------------------------------------------------------

@dataclass
class LayerStats:
    """One unit layer's activation statistics since the intervention's last call, per seed."""

    layer: UnitLayer
    mean_abs: torch.Tensor  # [S, U]
    silent: torch.Tensor  # [S, U] bool: never |activation| > 0
    outgoing_weights: Callable[[], torch.Tensor]  # computed when asked (not every intervention needs them)

    @property
    def outgoing(self) -> torch.Tensor:
        """[S, U]: the sum of |outgoing weight| per unit (its span of the consumer's columns)."""
        return self.outgoing_weights()


@dataclass
class InterventionCall:
    """What an intervention's function receives: the statistics per unit layer, its own state, the step
    count (optimiser steps of the run so far), the batch size, and ``reset(layer_index, mask [S, U])``."""

    layers: list[LayerStats]
    state: dict[str, Any]
    step: int
    batch_size: int
    reset: Callable[[int, torch.Tensor], int]


@dataclass(frozen=True)
class Intervention:
    name: str
    run: Callable[..., None]  # (call: InterventionCall, **options)
    stackable: bool
    choices: Mapping[str, tuple] = field(default_factory=dict)

    def check(self, options: Mapping[str, Any], key: str) -> None:
        check_options(self.run, options, key, choices=self.choices)
        every = options.get("every", 1)
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise SpecError(f"{key}.every: must be a positive integer (optimiser steps), got {every!r}")


INTERVENTIONS: Registry[Intervention] = Registry("intervention")


def register_intervention(name: str, *, stackable: bool = True, choices: Mapping[str, tuple] | None = None):
    """Register ``fn(call: InterventionCall, *, every: int = ..., **options)``: run after every ``every``-th
    optimiser step of a run."""
    def decorate(fn):
        INTERVENTIONS.add(name, Intervention(name, fn, stackable, dict(choices or {})))
        return fn
    return decorate


# -- the interventions --------------------------------------------------------------------------------------

@register_intervention("redo")
def redo(call: InterventionCall, tau: float = 0.1, every: int = 1000) -> None:
    """ReDo (Sokar et al. 2023): a unit's score is its mean |activation| divided by the mean score of its
    layer; units scoring <= ``tau`` are dormant and reset (``tau`` 0: exactly silent units)."""
    for k, stats in enumerate(call.layers):
        layer_mean = stats.mean_abs.mean(1, keepdim=True)
        score = stats.mean_abs / layer_mean.clamp_min(1e-12)
        dormant = stats.silent if tau == 0 else score <= tau
        call.reset(k, dormant)


@register_intervention("cbp")
def continual_backprop(call: InterventionCall, replacement_rate: float = 1e-4, maturity: int = 1000,
                       decay: float = 0.99, every: int = 1) -> None:
    """Continual backprop (Dohare et al. 2024): each unit's utility is a running mean (``decay``, bias-
    corrected by the unit's age) of its mean |activation| times the sum of its |outgoing weights|. Units
    older than ``maturity`` steps are eligible; every step a fraction ``replacement_rate`` of the eligible
    units is due (the fraction accumulates until at least one unit is), and the due number of eligible
    units with the lowest utility are reset, their age and utility set to zero."""
    import torch

    for k, stats in enumerate(call.layers):
        age = call.state.setdefault(f"age{k}", torch.zeros_like(stats.mean_abs))
        utility = call.state.setdefault(f"utility{k}", torch.zeros_like(stats.mean_abs))
        due = call.state.setdefault(f"due{k}", torch.zeros_like(stats.mean_abs[:, 0]))
        age += every
        utility.mul_(decay).add_((1 - decay) * stats.mean_abs * stats.outgoing)
        corrected = utility / (1 - decay ** age)
        eligible = age > maturity
        due += replacement_rate * eligible.sum(1)
        count = due.floor()
        if not bool(count.any()):  # most steps: no unit due yet, nothing to rank
            continue
        mask = torch.zeros_like(eligible)
        for s in range(mask.shape[0]):
            n = int(count[s])
            if n >= 1:
                scores = torch.where(eligible[s], corrected[s], torch.full_like(corrected[s], math.inf))
                mask[s, torch.argsort(scores, stable=True)[:n]] = True
        mask &= eligible
        due -= count
        call.reset(k, mask)
        age[mask] = 0
        utility[mask] = 0


@register_intervention("snr")
def self_normalised_resets(call: InterventionCall, percentile: float = 0.99, threshold_every: int = 1000,
                           growth: float = 2.0, max_age: int = 100_000, every: int = 1) -> None:
    """Self-normalised resets (Farias and Jozefiak 2024): each unit's age is the number of samples since it
    last fired; each firing records the interval since the previous one in the unit's histogram (bins of
    powers of two, in samples). A unit whose age reaches its threshold is reset and its age set to zero.
    Every ``threshold_every`` steps each threshold moves to the ``percentile`` of its histogram (the bin's
    upper edge) if that is lower, else grows by ``growth``; thresholds stay in [batch size, ``max_age``],
    starting at ``max_age``."""
    import torch

    batch = call.batch_size * every  # samples since the last call
    bins = max(1, math.ceil(math.log2(max_age)) + 1)
    for k, stats in enumerate(call.layers):
        age = call.state.setdefault(f"age{k}", torch.zeros_like(stats.mean_abs))
        threshold = call.state.setdefault(f"threshold{k}", torch.full_like(stats.mean_abs, float(max_age)))
        hist = call.state.setdefault(f"hist{k}", torch.zeros(*stats.mean_abs.shape, bins,
                                                             device=stats.mean_abs.device))
        fired = ~stats.silent
        interval = (age + batch).clamp(1, 2 ** (bins - 1))
        index = interval.log2().floor().long().clamp(0, bins - 1)
        hist.scatter_add_(2, index.unsqueeze(2), fired.unsqueeze(2).to(hist.dtype))
        age.copy_(torch.where(fired, torch.zeros_like(age), age + batch))
        if call.step % threshold_every == 0:
            counts = hist.cumsum(2)
            total = counts[..., -1:]
            reached = counts >= percentile * total
            first = torch.where(reached.any(2), reached.float().argmax(2), torch.full_like(age, bins - 1).long())
            edge = (2.0 ** (first + 1)).to(age.dtype)
            edge = torch.where(total[..., 0] > 0, edge, torch.full_like(edge, math.inf))
            threshold.copy_(torch.where(edge < threshold, edge, threshold * growth).clamp(call.batch_size, max_age))
        due = age >= threshold
        call.reset(k, due)
        age[due] = 0
