"""The parts of a run's spec: which dataset, model, optimiser, stop rule, init strategy, loss terms,
interventions, probes and engine settings; each a frozen, validated dataclass (``core.spec`` assembles them
into a run or a stream, and derives the identity).

This module is plain Python: it knows the structure of a spec, not the registries that give its names a
meaning (those are checked where the names are used, and by the planner before any job runs). The stop
rule's and the engine's fields are checked by rules (``core.field_rules``) that the config's JSON schema
is written from, so the two cannot disagree.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from warmstart.core.errors import SpecError
from warmstart.core.field_rules import Boolean, Fraction, OneOf, PositiveInt, check_fields, require
from warmstart.core.identity import short_hash

def coerce_floats(obj: Any, key: str, *names: str) -> None:
    """Type-check numeric fields and store them as floats, so that lr=1 and lr=1.0 are one spec with one
    hash (JSON writes them differently) and a string fails with the key named, not a bare TypeError."""
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"{key + '.' if key else ''}{name}: must be a number, got {value!r}")
        object.__setattr__(obj, name, float(value))



def _freeze_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    # Sorted keys make the canonical JSON (and so the hash) independent of the config's key order.
    return {k: options[k] for k in sorted(options)} if options else {}


class _WithOptions:
    """For the specs that name a registry entry and its ``options``: the options in sorted key order."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", _freeze_options(self.options))


@dataclass(frozen=True)
class DatasetSpec(_WithOptions):
    """Which dataset, with the options that change its contents (e.g. mnist1d's size and seed)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    @functools.cached_property
    def key(self) -> str:
        """File-system name of the prepared tensor file: readable name plus a hash of the options."""
        return f"{self.name}-{short_hash(self.options, 8)}"


@dataclass(frozen=True)
class ModelSpec(_WithOptions):
    arch: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OptimizerSpec:
    """``name`` is an entry of ``warmstart.components.optimizers.OPTIMIZERS``; ``options`` that optimiser's own
    settings beyond the common fields (e.g. Muon's ``adjust_lr``), the keyword-only parameters of its
    builder. In a config all of them are written flat (``muon: {name: muon, lr: 0.01, adjust_lr:
    original}``): ``from_settings`` sorts them."""

    name: str
    lr: float
    weight_decay: float = 0.0
    momentum: float = 0.0  # SGD only; the paper's and the authors' SGD has no momentum
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        coerce_floats(self, "optimizer", "lr", "weight_decay", "momentum")
        object.__setattr__(self, "options", _freeze_options(self.options))

    @classmethod
    def from_settings(cls, name: str, settings: Mapping[str, Any]) -> "OptimizerSpec":
        """A spec from a config's flat settings: the common fields as fields, the rest as ``options``."""
        common = {f.name for f in dataclasses.fields(cls)} - {"name", "options"}
        return cls(name, **{k: v for k, v in settings.items() if k in common},
                   options={k: v for k, v in settings.items() if k not in common})

    def settings(self) -> dict[str, Any]:
        """The flat settings (as a config writes them; no name): the common fields and the options."""
        return {"lr": self.lr, "weight_decay": self.weight_decay, "momentum": self.momentum, **self.options}

    def canonical(self) -> dict[str, Any]:
        """Its part of a run's identity: options enter only when given, so runs made before they existed
        keep their ids."""
        d = dataclasses.asdict(self)
        if not self.options:
            del d["options"]
        return d

    def validate(self, key: str = "optimizer") -> None:
        require(self.lr > 0 and math.isfinite(self.lr), f"{key}.lr", f"must be a positive number, got {self.lr!r}")
        require(self.weight_decay >= 0, f"{key}.weight_decay", f"must be >= 0, got {self.weight_decay!r}")
        require(0 <= self.momentum < 1, f"{key}.momentum", f"must be in [0, 1), got {self.momentum!r}")


# What the stop rule's and the engine's fields may hold: the config's schema is written from these too
STOP_RULES = {"rule": OneOf(("converged", "epochs")), "threshold": Fraction(), "max_epochs": PositiveInt(),
              "restart_every": PositiveInt(nullable=True)}
ENGINE_RULES = {"precision": OneOf(("fp32", "bf16")), "channels_last": Boolean(), "compile": Boolean()}


@dataclass(frozen=True)
class StopSpec:
    """When training ends.

    ``converged``: stop as soon as the epoch's running training accuracy reaches ``threshold`` (the paper's
    "trained to convergence", 0.99), or after ``max_epochs`` whichever comes first.
    ``epochs``: train exactly ``max_epochs`` epochs (Figure 1 uses 350 + 350).

    The training accuracy the ``converged`` rule compares is the running accuracy of the epoch in train
    mode. ``restart_every``: None (the default) counts every batch of the epoch; k counts only the batches
    since the counts last restarted, which they do every k batches (at batches 0, k, 2k, ...), as the
    authors' code does with k = 10. The reported ``train_acc`` is the whole epoch's either way.
    """

    rule: str = "converged"
    threshold: float = 0.99
    max_epochs: int = 300
    restart_every: int | None = None

    def __post_init__(self) -> None:
        coerce_floats(self, "stop", "threshold")

    def validate(self, key: str = "stop") -> None:
        check_fields(self, STOP_RULES, key)

    def reached(self, train_acc: float) -> bool:
        """Whether an epoch with this training accuracy ends training under the ``converged`` rule."""
        return self.rule == "converged" and train_acc >= self.threshold

    @property
    def cap_reason(self) -> str:
        """``stopped_by`` of a run that never reached the threshold: it ran out of epochs."""
        return "epochs" if self.rule == "epochs" else "max_epochs"

    def canonical(self) -> dict[str, Any]:
        # A fixed-epoch run ignores the threshold; leaving it out of the identity means editing the
        # threshold does not needlessly re-train fixed-epoch runs.
        if self.rule == "epochs":
            return {"rule": "epochs", "max_epochs": self.max_epochs}
        d = dataclasses.asdict(self)
        if self.restart_every is None:  # added later: runs made before it keep their ids
            del d["restart_every"]
        return d


@dataclass(frozen=True)
class InitSpec(_WithOptions):
    """How the weights are initialised: ``strategy`` names an entry of ``warmstart.components.inits.STRATEGIES``,
    ``options`` are its keyword arguments (e.g. shrink-perturb's ``shrink`` and ``perturb``)."""

    strategy: str = "random"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TermSpec(_WithOptions):
    """A loss term added to the cross-entropy: ``name`` is an entry of ``warmstart.components.terms.TERMS``, ``options``
    its keyword arguments (its coefficient among them). Part of a run's identity."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InterventionSpec(_WithOptions):
    """What may rewrite weights and optimiser state while a run trains (units reset every so many steps):
    ``name`` is an entry of ``warmstart.components.interventions.INTERVENTIONS``, ``options`` its keyword arguments
    (``every`` among them). Part of a run's identity."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProbeSpec(_WithOptions):
    """A per-epoch measurement: ``name`` is an entry of ``warmstart.components.probes.PROBES``. It only measures (it
    changes no weight, optimiser state or random stream), so it is not part of a run's identity."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineSpec:
    """How the engine executes a run.

    ``precision`` changes the numbers, so it is part of the run's identity (fp32, the paper's, is the
    implicit default: runs made before the option existed keep their ids). ``channels_last`` and
    ``compile`` change speed, not results (up to float rounding), so they are recorded in spec.json and
    metrics.json but left out of the hash: toggling them does not re-train anything.
    """

    precision: str = "fp32"  # fp32 | bf16 (autocast on CUDA; see train.resolve_engine for CPU)
    channels_last: bool = True  # convolutional models only (CUDA and CPU)
    compile: bool = False  # torch.compile the model; pays only for long runs (see benchmarks/)

    def validate(self, key: str = "engine") -> None:
        check_fields(self, ENGINE_RULES, key)
