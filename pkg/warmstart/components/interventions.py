"""Interventions: what may rewrite weights and optimiser state while a run trains (ReDo, continual
backprop, self-normalised resets).

Loss terms act through the gradient and probes only measure; an intervention runs after the optimiser
step, every ``every`` steps, and may reset *units*: the output channels of a linear or convolutional layer
(a hidden neuron, a conv filter, a transformer block's MLP unit). It declares what it needs (``Needs``,
a function of its options): which statistics of each unit layer, per seed of the run (S rows, as
everywhere in the engine), over which window, and whether the run's Adam keeps per-entry step counts:

* ``mean_abs`` [S, U]: the mean |activation| of each unit (a conv unit over batch and positions);
* ``mean`` [S, U]: its mean activation;
* ``fired`` [S, U]: whether its pre-activation (the activation module's input) was > 0 somewhere;
* window ``last_batch``: only the batch of the step it is called after (the engine records nothing on
  the other steps), or ``since_last_call``: every batch since its last call.

It also sees the mean |outgoing weight| of each unit and its own ``state`` (ages, utilities, thresholds,
counters: ``[S, ...]`` tensors and plain numbers), which the engine keeps with the run's resumable state
and slices with the rows when seeds finish. To reset units it calls ``ctx.reset(layer, mask, ...)``, the
one definition of a reset (``UnitResetter``): the units' incoming weights get a fresh draw of their
layer's initialisation (its ``reset_parameters``, under a seed derived from the run's seed, the
intervention and the call, so a draw is the same alone, in a stack and after a resume), their bias 0 (or
that draw), their norm's parameters and statistics their initial values, their outgoing weights zero
(the next layer's bias may first get a compensation), and exactly those entries of the optimiser's
per-entry state (momentum, Adam's moments, Adam's per-entry step counts where the run keeps them) are
zeroed. The output layer has no unit layer (its units are the classes), so it is never reset.

The three unit resets built in follow their authors' public code (each function's docstring names the files and
every option where we differ): ReDo (google/dopamine labs/redo), continual backprop
(shibhansh/loss-of-plasticity, with AdamGnT's per-entry step counts) and self-normalised resets
(ajozefiak/SelfNormalizedResets).

The engine runs them as one hook of the training loop (``warmstart.engine.intervention_hook.Interventions``,
``warmstart.engine.hooks``), so their state is resumable and stackable by construction. An intervention
that acts on the weights or the optimiser directly rather than on units (``moment_reset``) reads
``call.params`` and ``call.optimizer`` and says ``Needs(units=False)``, so it runs on any model.

An intervention is part of a run's identity (``RunSpec.interventions``); its time is training time (it
runs inside the training loop) and it reads no extra samples. Options are the keyword parameters of the
registered function (``every`` among them), checked before any job runs. An intervention that cannot work
per seed of a stack says ``stackable=False``. Which layers have units is the model's to say
(``unit_layers``): an ``nn.Sequential`` chain of linear/conv layers with element-wise layers between, or a
module's own ``unit_layers()`` (the residual net: each block's inner convolution; the ViT: each block's MLP;
shortcut convolutions and attention projections are not unit layers).
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from warmstart.core.errors import SpecError
from warmstart.core.registry import Registry, check_options

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

STATISTICS = ("mean_abs", "mean", "fired")
WINDOWS = ("last_batch", "since_last_call")


@dataclass(frozen=True)
class Needs:
    """What the engine gathers for an intervention under given options, and what it asks of the run's
    optimiser. ``stats``: which of ``STATISTICS`` it reads (``mean_abs``: mean |activation| of each unit,
    ``mean``: its mean activation, both over samples and positions; ``fired``: whether the unit's
    pre-activation, the activation module's input, was > 0 for some sample and position); ``window``:
    ``"last_batch"``, only the batch of the step after which it is called (nothing is recorded on the
    other steps), or ``"since_last_call"``, every batch since its last call; ``per_entry_step``: the run's
    Adam keeps its step count per entry (a tensor shaped as the parameter, bias correction elementwise),
    so that a reset restarts the bias correction of exactly the reset entries; ``units``: it works on
    the model's unit layers (``unit_layers``: statistics, resets), so the model must declare them."""

    stats: frozenset = frozenset()
    window: str = "last_batch"
    per_entry_step: bool = False
    units: bool = True  # whether it works on the model's unit layers (False: it needs none, e.g. it acts
    # on the optimiser alone, and runs on any model)


@dataclass
class LayerStats:
    """One unit layer's activation statistics over the intervention's window, per seed (None: not asked
    for in its ``Needs``)."""

    layer: UnitLayer
    mean_abs: torch.Tensor | None  # [S, U]
    mean: torch.Tensor | None  # [S, U]
    fired: torch.Tensor | None  # [S, U] bool: pre-activation > 0 somewhere in the window
    outgoing_weights: Callable[[], torch.Tensor]  # computed when asked (not every intervention needs them)

    @property
    def outgoing(self) -> torch.Tensor:
        """[S, U]: the mean |outgoing weight| of each unit (over the consumer's outputs, the unit's span of
        its columns and its kernel positions)."""
        return self.outgoing_weights()


@dataclass
class InterventionCall:
    """What an intervention's function receives: the statistics per unit layer, its own state, the step
    count (optimiser steps of the run so far), the batch size, the samples its statistics cover,
    ``reset(layer_index, mask [S, U], *, bias, bias_moments, next_bias_shift)`` (``UnitResetter.reset``),
    the weights (``params``: name -> [S, ...] views; writes under ``torch.no_grad()`` reach the model) and
    the run's optimiser (its per-entry state tensors are shaped as its parameters: ``[S, ...]`` in a
    stack, the parameter's own shape for a single model)."""

    layers: list[LayerStats]
    state: dict[str, Any]
    step: int
    batch_size: int
    reset: Callable[..., int]
    samples: int = 0
    params: dict[str, torch.Tensor] = field(default_factory=dict)
    optimizer: Any = None


@dataclass(frozen=True)
class Intervention:
    name: str
    run: Callable[..., None]  # (call: InterventionCall, **options)
    stackable: bool
    choices: Mapping[str, tuple] = field(default_factory=dict)
    needs: Callable[[dict], Needs] = lambda options: Needs()

    def check(self, options: Mapping[str, Any], key: str) -> None:
        check_options(self.run, options, key, choices=self.choices)
        every = options.get("every", 1)
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise SpecError(f"{key}.every: must be a positive integer (optimiser steps), got {every!r}")

    def needs_for(self, options: Mapping[str, Any]) -> Needs:
        """The ``Needs`` under ``options`` completed with the function's defaults."""
        params = list(inspect.signature(self.run).parameters.values())[1:]
        return self.needs({**{p.name: p.default for p in params if p.default is not p.empty}, **options})


INTERVENTIONS: Registry[Intervention] = Registry("intervention")


def register_intervention(name: str, *, stackable: bool = True, choices: Mapping[str, tuple] | None = None,
                          needs: Callable[[dict], Needs] | None = None, revision: int = 1):
    """Register ``fn(call: InterventionCall, *, every: int = ..., **options)``: run after every ``every``-th
    optimiser step of a run. ``needs(options)`` (all options, defaults filled in) says what the engine
    records for it and whether the run's Adam keeps per-entry step counts (``Needs``); ``revision``:
    ``Registry.add``."""
    def decorate(fn):
        INTERVENTIONS.add(name, Intervention(name, fn, stackable, dict(choices or {}),
                                             needs or (lambda options: Needs())), revision)
        return fn
    return decorate


# -- the interventions --------------------------------------------------------------------------------------

RESET_BIAS = ("zero", "init")


@register_intervention("redo", revision=2, choices={"score_on": WINDOWS, "reset_bias": RESET_BIAS,
                                        "bias_moments": ("keep", "zero")},
                       needs=lambda o: Needs(frozenset({"mean_abs"}), o["score_on"]))
def redo(call: InterventionCall, tau: float = 0.1, every: int = 1000, score_on: str = "last_batch",
         reset_bias: str = "zero", bias_moments: str = "keep") -> None:
    """ReDo (Sokar et al. 2023; google/dopamine labs/redo/weight_recyclers.py): a unit's score is its mean
    |activation| divided by (the mean score of its layer + 1e-9); units scoring <= ``tau`` are dormant (tau
    0: exactly silent units) and reset: fresh incoming weights, bias 0 (``reset_bias: init``: a fresh draw),
    outgoing weights 0, the Adam moments of those weights zeroed and the bias's kept (``bias_moments:
    zero`` zeroes them too). ``score_on``: ``last_batch`` scores the batch of the step it is called after
    (nothing is recorded on the other steps); ``since_last_call`` every batch since its last call."""
    for k, stats in enumerate(call.layers):
        score = stats.mean_abs / (stats.mean_abs.mean(1, keepdim=True) + 1e-9)
        call.reset(k, score <= tau, bias=reset_bias, bias_moments=bias_moments)


def _cbp_needs(o: dict) -> Needs:
    stats = {"mean_abs", "mean"} if o["bias_compensation"] == "mean_activation" else {"mean_abs"}
    return Needs(frozenset(stats), "since_last_call", o["adam_step"] == "per_entry")


@register_intervention("cbp", revision=2, choices={"bias_compensation": ("none", "mean_activation"),
                                       "adam_step": ("per_entry", "per_tensor"), "reset_bias": RESET_BIAS},
                       needs=_cbp_needs)
def continual_backprop(call: InterventionCall, replacement_rate: float = 1e-4, maturity: int = 1000,
                       decay: float = 0.99, every: int = 1, bias_compensation: str = "none",
                       adam_step: str = "per_entry", reset_bias: str = "zero") -> None:
    """Continual backprop (Dohare et al. 2024; shibhansh/loss-of-plasticity lop/algos/gnt.py, convGnT.py,
    utils/AdamGnT.py). Per call (every step), per unit: age += ``every``; utility = ``decay`` x utility +
    (1 - decay) x mean |outgoing weight| x mean |activation| (this batch), read bias-corrected, divided by
    1 - decay^age. Units older than ``maturity`` steps are eligible; ``replacement_rate`` x the number of
    eligible units is added to the layer's due count, and its whole part of eligible units with the lowest
    corrected utility are replaced: fresh incoming weights, bias 0 (``reset_bias: init``: a fresh draw),
    outgoing weights 0, utility and age 0, and Adam's moments and (``adam_step: per_entry``, AdamGnT's)
    step counts of exactly those entries zeroed, so their bias correction starts over (``per_tensor``: the
    step count is the tensor's and stays).

    ``bias_compensation``: ``none`` leaves the next layer's bias as it is. That is what the reference does:
    gnt.py adds w_out x mean activation / (1 - decay^age) to the next bias, but after it has zeroed the
    replaced units' running mean activation, so it adds 0 (convGnT.py has no such step).
    ``mean_activation`` adds that term with the mean activation before it is zeroed (a running mean of
    the unit's signed mean activation, ``decay``, bias-corrected; for a convolution or a flattened span the
    unit's outgoing weights summed over its kernel positions and columns), so the replacement does not
    change the next layer's input on average."""
    import torch

    for k, stats in enumerate(call.layers):
        shape = stats.mean_abs.shape
        age = call.state.setdefault(f"age{k}", torch.zeros(shape, device=stats.mean_abs.device))
        power = call.state.setdefault(f"decay_power{k}", torch.ones(shape, device=stats.mean_abs.device))
        utility = call.state.setdefault(f"utility{k}", torch.zeros_like(stats.mean_abs))
        due = call.state.setdefault(f"due{k}", torch.zeros(shape[0], dtype=torch.float64,
                                                           device=stats.mean_abs.device))
        age += every
        power.mul_(decay ** every)  # decay^age, kept by products: the same bits alone and in a stack
        utility.mul_(decay).add_((1 - decay) * (stats.outgoing * stats.mean_abs))
        if bias_compensation == "mean_activation":
            mean = call.state.setdefault(f"mean_activation{k}", torch.zeros_like(stats.mean))
            mean.mul_(decay).add_((1 - decay) * stats.mean)
        correction = 1 - power
        eligible = age > maturity
        due += replacement_rate * eligible.sum(1).double()
        count = due.floor()
        due -= count
        if not bool(count.any()):  # most steps: no unit due yet, nothing to rank
            continue
        corrected = utility / correction
        mask = torch.zeros_like(eligible)
        for s in range(mask.shape[0]):
            n = min(int(count[s]), int(eligible[s].sum()))
            if n >= 1:
                scores = torch.where(eligible[s], corrected[s], torch.full_like(corrected[s], math.inf))
                mask[s, torch.argsort(scores, stable=True)[:n]] = True
        shift = None
        if bias_compensation == "mean_activation":
            shift = call.state[f"mean_activation{k}"] / correction
            call.state[f"mean_activation{k}"][mask] = 0
        call.reset(k, mask, bias=reset_bias, bias_moments="zero", next_bias_shift=shift)
        age[mask] = 0
        power[mask] = 1
        utility[mask] = 0


@register_intervention("snr", revision=2, choices={"reset_bias": RESET_BIAS},
                       needs=lambda o: Needs(frozenset({"fired"}), "since_last_call"))
def self_normalised_resets(call: InterventionCall, percentile: float = 0.99, threshold_every: int = 1000,
                           growth: float = 2.0, max_age: int = 100_000, every: int = 1,
                           reset_bias: str = "zero") -> None:
    """Self-normalised resets (Farias and Jozefiak 2025; ajozefiak/SelfNormalizedResets src/algorithms/
    snr.py, neuron_ages.py). A unit fires in a batch when its pre-activation is > 0 for some sample (and
    position); its age is the number of samples since it last fired. Per call: a unit that fires records
    its age (the exact length of the silence it ends, when > 0 and <= ``max_age``) and its age becomes 0,
    otherwise its age grows by the samples since the last call; then a unit whose age is >= its threshold
    is reset (fresh incoming weights, bias 0 or, ``reset_bias: init``, a fresh draw; outgoing weights 0;
    the Adam moments of those entries zeroed), its age recorded the same way and set to 0. Every
    ``threshold_every`` steps each threshold becomes the ``percentile`` of the recorded silences (the
    smallest recorded length whose share of lengths at or below it is >= percentile; 1 when none was
    recorded) where that is lower, else ``growth`` x itself, then max(batch size, min(., ``max_age``)),
    and the record is cleared. Thresholds (in samples) start at ``max_age``."""
    import torch

    floor = call.state["batch_size"] = max(int(call.state.get("batch_size", 0)), call.batch_size)
    column = int(call.state.get("column", 0))
    update = int(call.state.get("since_update", 0)) + every >= threshold_every
    width = -(-threshold_every // every)  # calls between two threshold updates: at most one silence each
    for k, stats in enumerate(call.layers):
        fired = stats.fired
        age = call.state.setdefault(f"age{k}", torch.zeros(fired.shape, device=fired.device))
        threshold = call.state.setdefault(f"threshold{k}", torch.full(fired.shape, float(max_age),
                                                                      device=fired.device))
        silences = call.state.setdefault(f"silences{k}", torch.zeros(*fired.shape, width, device=fired.device))
        ended = fired & (age > 0) & (age <= max_age)
        silences[:, :, column] = torch.where(ended, age, torch.zeros_like(age))
        age.copy_(torch.where(fired, torch.zeros_like(age), age + call.samples))
        due = age >= threshold
        recorded = due & (age <= max_age)
        silences[:, :, column] = torch.where(recorded, age, silences[:, :, column])
        call.reset(k, due, bias=reset_bias, bias_moments="zero")
        age[due] = 0
        if update:
            n = (silences > 0).sum(2)
            ordered = silences.sort(2).values  # the n recorded lengths last, ascending
            share = torch.arange(1, width + 1, device=fired.device, dtype=torch.float32) / n.unsqueeze(2).float()
            first = (share >= percentile).int().argmax(2)
            picked = ordered.gather(2, (width - n + first).clamp(max=width - 1).unsqueeze(2)).squeeze(2)
            value = torch.where(n > 0, picked, torch.ones_like(picked))
            grown = torch.where(value < threshold, value, growth * threshold)
            threshold.copy_(torch.clamp(grown, max=float(max_age)).clamp(min=float(floor)))
            silences.zero_()
    call.state["column"] = 0 if update else column + 1
    call.state["since_update"] = 0 if update else int(call.state.get("since_update", 0)) + every


MOMENTS = ("exp_avg", "exp_avg_sq", "momentum_buffer")  # Adam's first and second moments; SGD's, Muon's momentum


@register_intervention("moment_reset", needs=lambda o: Needs(units=False))
def moment_reset(call: InterventionCall, every: int = 1000) -> None:
    """Reset the optimiser's moments every ``every`` optimiser steps: Adam's ``exp_avg`` and ``exp_avg_sq``
    and SGD's (or Muon's) momentum buffer are zeroed, for every parameter and every seed row of a stack
    (its rows all take every step, so each is reset at the same steps as alone). Adam's step count stays:
    the bias correction goes on from the step reached, so the first update after a reset is smaller than a
    fresh Adam's."""
    import torch

    with torch.no_grad():
        for state in call.optimizer.state.values():
            for key in MOMENTS:
                if key in state:
                    state[key].zero_()
