"""Typed, validated descriptions of training runs and online streams, and the identity derived from them.

A run's identity is a short hash of its canonical JSON form. The workflow puts that hash in the run's
output directory, so results are content-addressed: two experiments that need the same run share one
directory (and train it once), an edited condition gets a new directory, and changing it back finds the
old one again. Anything that changes the numbers a run produces belongs in the identity; anything that
does not (device, thread count, logging, the probes that only measure, which checkpoints are kept) is
part of the spec but not of its hash, so it never invalidates results.

This module is plain Python: it knows the structure of a spec, not the registries that give its names a
meaning (those are checked where the names are used, and by the planner before any job runs).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import SpecError


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise SpecError(f"{key}: {message}")


def _coerce_floats(obj: Any, key: str, *names: str) -> None:
    """Type-check numeric fields and store them as floats, so that lr=1 and lr=1.0 are one spec with one
    hash (JSON writes them differently) and a string fails with the key named, not a bare TypeError."""
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"{key + '.' if key else ''}{name}: must be a number, got {value!r}")
        object.__setattr__(obj, name, float(value))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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
    """``name`` is an entry of ``warmstart.optimizers.OPTIMIZERS``."""

    name: str
    lr: float
    weight_decay: float = 0.0
    momentum: float = 0.0  # SGD only; the paper's and the authors' SGD has no momentum

    def __post_init__(self) -> None:
        _coerce_floats(self, "optimizer", "lr", "weight_decay", "momentum")

    def validate(self, key: str = "optimizer") -> None:
        _check(self.lr > 0 and math.isfinite(self.lr), f"{key}.lr", f"must be a positive number, got {self.lr!r}")
        _check(self.weight_decay >= 0, f"{key}.weight_decay", f"must be >= 0, got {self.weight_decay!r}")
        _check(0 <= self.momentum < 1, f"{key}.momentum", f"must be in [0, 1), got {self.momentum!r}")


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
        _coerce_floats(self, "stop", "threshold")

    def validate(self, key: str = "stop") -> None:
        _check(self.rule in ("converged", "epochs"), f"{key}.rule", f"must be 'converged' or 'epochs', got {self.rule!r}")
        _check(0 < self.threshold <= 1, f"{key}.threshold", f"must be in (0, 1], got {self.threshold!r}")
        _check(_is_int(self.max_epochs) and self.max_epochs >= 1, f"{key}.max_epochs",
               f"must be a positive integer, got {self.max_epochs!r}")
        _check(self.restart_every is None or (_is_int(self.restart_every) and self.restart_every >= 1),
               f"{key}.restart_every", f"must be a positive integer or null, got {self.restart_every!r}")

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
    """How the weights are initialised: ``strategy`` names an entry of ``warmstart.init.STRATEGIES``,
    ``options`` are its keyword arguments (e.g. shrink-perturb's ``shrink`` and ``perturb``)."""

    strategy: str = "random"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TermSpec(_WithOptions):
    """A loss term added to the cross-entropy: ``name`` is an entry of ``warmstart.terms.TERMS``, ``options``
    its keyword arguments (its coefficient among them). Part of a run's identity."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InterventionSpec(_WithOptions):
    """What may rewrite weights and optimiser state while a run trains (units reset every so many steps):
    ``name`` is an entry of ``warmstart.interventions.INTERVENTIONS``, ``options`` its keyword arguments
    (``every`` among them). Part of a run's identity."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProbeSpec(_WithOptions):
    """A per-epoch measurement: ``name`` is an entry of ``warmstart.probes.PROBES``. It only measures (it
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
        _check(self.precision in ("fp32", "bf16"), f"{key}.precision", f"must be 'fp32' or 'bf16', got {self.precision!r}")
        _check(isinstance(self.channels_last, bool), f"{key}.channels_last", "must be true or false")
        _check(isinstance(self.compile, bool), f"{key}.compile", "must be true or false")


def _named(cls, items, key: str) -> tuple:
    out = tuple(x if isinstance(x, cls) else cls(**x) for x in items)
    names = [x.name for x in out]
    _check(len(set(names)) == len(names), key, f"each may appear once, got {names}")
    return out


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines a training run's results, and what it must measure and keep.

    ``train_fraction`` selects the first ``round(train_fraction * len(pool))`` samples of the seeded,
    shuffled training pool, so a 50% run's data are a subset of the 100% run's data with the same seed.
    ``seed`` seeds the split, the initialisation and the batch order. A child run starts from its
    ``parent``'s final weights, or from the parent's checkpoint after ``parent_epoch`` epochs.

    ``terms`` are added to the loss; ``interventions`` reset units while it trains.

    Not part of the identity: ``probes`` (per-epoch measurements), ``checkpoints`` (epochs after which
    the weights are kept, for children that start there) and ``keep_optimizer`` (keep the final optimiser
    state, for children that continue it).
    """

    dataset: DatasetSpec
    model: ModelSpec
    optimizer: OptimizerSpec
    batch_size: int
    stop: StopSpec
    seed: int
    train_fraction: float = 1.0
    validation_fraction: float = 1 / 3
    init: InitSpec = field(default_factory=InitSpec)
    parent: "RunSpec | None" = None
    engine: EngineSpec = field(default_factory=EngineSpec)
    terms: tuple[TermSpec, ...] = ()
    parent_epoch: int | None = None
    probes: tuple[ProbeSpec, ...] = ()
    checkpoints: tuple[int, ...] = ()
    keep_optimizer: bool = False
    interventions: tuple[InterventionSpec, ...] = ()

    def __post_init__(self) -> None:
        _coerce_floats(self, "", "train_fraction", "validation_fraction")
        object.__setattr__(self, "terms", _named(TermSpec, self.terms, "terms"))
        object.__setattr__(self, "interventions", _named(InterventionSpec, self.interventions, "interventions"))
        object.__setattr__(self, "probes", _named(ProbeSpec, self.probes, "probes"))
        object.__setattr__(self, "checkpoints", tuple(sorted(set(self.checkpoints))))
        self.validate()

    # -- validation ---------------------------------------------------------------------------------
    def validate(self) -> None:
        self.optimizer.validate()
        self.stop.validate()
        self.engine.validate()
        _check(_is_int(self.batch_size) and self.batch_size >= 1, "batch_size",
               f"must be a positive integer, got {self.batch_size!r}")
        _check(_is_int(self.seed) and self.seed >= 0, "seed", f"must be a non-negative integer, got {self.seed!r}")
        _check(0 < self.train_fraction <= 1, "train_fraction", f"must be in (0, 1], got {self.train_fraction!r}")
        _check(0 < self.validation_fraction < 1, "validation_fraction",
               f"must be in (0, 1), got {self.validation_fraction!r}")
        for e in self.checkpoints:
            _check(_is_int(e) and 1 <= e <= self.stop.max_epochs, "checkpoints",
                   f"epochs must be integers in [1, max_epochs={self.stop.max_epochs}], got {e!r}")
        if self.parent is not None:
            _check(self.parent.seed == self.seed, "parent.seed", "a parent run must share the child's seed (and so its split)")
        _check(self.parent_epoch is None or (self.parent is not None and _is_int(self.parent_epoch)
                                             and self.parent_epoch in self.parent.checkpoints),
               "parent_epoch", "must be one of the parent's checkpoints")

    # -- identity -----------------------------------------------------------------------------------
    def canonical(self) -> dict[str, Any]:
        """The JSON-able form that defines identity. The parent enters by its own id (a Merkle chain).
        Fields added after the first runs were made enter only when they differ from their default,
        so those runs keep their ids. A new top-level dict each call (callers add and remove keys)."""
        return dict(self._identity)

    # Cached: a spec is immutable, and planning a large config asks for it tens of thousands of times
    @functools.cached_property
    def _identity(self) -> dict[str, Any]:
        identity = {
            "dataset": dataclasses.asdict(self.dataset),
            "model": dataclasses.asdict(self.model),
            "optimizer": dataclasses.asdict(self.optimizer),
            "batch_size": self.batch_size,
            "stop": self.stop.canonical(),
            "seed": self.seed,
            "train_fraction": self.train_fraction,
            "validation_fraction": self.validation_fraction,
            "init": dataclasses.asdict(self.init),
            "parent": None if self.parent is None else self.parent.run_id,
        }
        if self.engine.precision != "fp32":
            identity["precision"] = self.engine.precision
        if self.terms:
            identity["terms"] = [dataclasses.asdict(t) for t in self.terms]
        if self.interventions:
            identity["interventions"] = [dataclasses.asdict(i) for i in self.interventions]
        if self.parent_epoch is not None:
            identity["parent_epoch"] = self.parent_epoch
        return identity

    # Cached: a spec is immutable, and a plan asks for the ids of its runs (and their parents') often
    @functools.cached_property
    def run_id(self) -> str:
        return short_hash(self.canonical(), 12)

    @functools.cached_property
    def name(self) -> str:
        """Directory name: readable at a glance, unique through the hash."""
        return f"{self.condition_label}_s{self.seed}_{self.run_id}"

    @property
    def condition_label(self) -> str:
        """The readable part of the name, without seed and hash: ``<dataset>_<model>_<opt>_<init>_f<frac>``."""
        frac = f"{self.train_fraction:g}".replace(".", "p")
        return f"{self.dataset.name}_{self.model.arch}_{self.optimizer.name}_{self.init.strategy}_f{frac}"

    def seedless(self) -> dict[str, Any]:
        """The identity with the seed left out, the parent's (recursively) likewise: runs that differ
        only in their seed share it (they are one condition)."""
        d = self.canonical()
        d.pop("seed")
        d["parent"] = None if self.parent is None else self.parent.seedless()
        return d

    # -- (de)serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Full form, parent spec included, so a run directory's spec.json alone can rebuild the run."""
        out = self.canonical()
        out["parent"] = None if self.parent is None else self.parent.to_dict()
        out["stop"] = dataclasses.asdict(self.stop)
        out.pop("precision", None)
        out["engine"] = dataclasses.asdict(self.engine)
        out["run_id"] = self.run_id
        if self.probes:
            out["probes"] = [dataclasses.asdict(p) for p in self.probes]
        if self.checkpoints:
            out["checkpoints"] = list(self.checkpoints)
        if self.keep_optimizer:
            out["keep_optimizer"] = True
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunSpec":
        spec = cls(
            dataset=DatasetSpec(**d["dataset"]),
            model=ModelSpec(**d["model"]),
            optimizer=OptimizerSpec(**d["optimizer"]),
            batch_size=d["batch_size"],
            stop=StopSpec(**d["stop"]),
            seed=d["seed"],
            train_fraction=d["train_fraction"],
            validation_fraction=d["validation_fraction"],
            init=InitSpec(**d["init"]),
            parent=None if d.get("parent") is None else cls.from_dict(d["parent"]),
            engine=EngineSpec(**d.get("engine", {})),
            terms=tuple(d.get("terms", ())),
            interventions=tuple(d.get("interventions", ())),
            parent_epoch=d.get("parent_epoch"),
            probes=tuple(d.get("probes", ())),
            checkpoints=tuple(d.get("checkpoints", ())),
            keep_optimizer=d.get("keep_optimizer", False),
        )
        if "run_id" in d and d["run_id"] != spec.run_id:
            raise SpecError(f"run_id: stored {d['run_id']!r} does not match the spec's hash {spec.run_id!r}")
        return spec

    @classmethod
    def from_json(cls, text: str) -> "RunSpec":
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> "RunSpec":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class StreamSpec:
    """One online stream: dataset x model x policy x init strategy x seed.

    ``round`` holds the per-round training settings (dataset, model, optimiser, batch size, stop rule,
    seed, validation fraction, loss terms, probes) as a RunSpec template; its own data fraction, init and
    parent are unused. ``policy`` names an entry of ``warmstart.policies.POLICIES``; ``init`` is applied
    to the previous round's weights at the start of every round after the first (a strategy that needs
    no parent, like ``random``, starts each round afresh).
    """

    round: RunSpec
    policy: str = "random"
    init: InitSpec = field(default_factory=lambda: InitSpec("warm"))
    round_size: int = 100
    max_samples: int | None = None  # None: until the pool is exhausted

    def __post_init__(self) -> None:
        _check(_is_int(self.round_size) and self.round_size >= 1, "round_size",
               f"must be a positive integer, got {self.round_size!r}")
        _check(self.max_samples is None or (_is_int(self.max_samples) and self.max_samples >= 1), "max_samples",
               f"must be a positive integer or null, got {self.max_samples!r}")

    @property
    def seed(self) -> int:
        return self.round.seed

    def canonical(self) -> dict[str, Any]:
        template = self.round.canonical()
        for unused in ("train_fraction", "init", "parent"):
            template.pop(unused)
        return {"round": template, "policy": self.policy, "init": dataclasses.asdict(self.init),
                "round_size": self.round_size, "max_samples": self.max_samples}

    @functools.cached_property
    def stream_id(self) -> str:
        return short_hash(self.canonical(), 12)

    @functools.cached_property
    def name(self) -> str:
        r = self.round
        return (f"{r.dataset.name}_{r.model.arch}_{r.optimizer.name}_{self.policy}_{self.init.strategy}"
                f"_r{self.round_size}_s{r.seed}_{self.stream_id}")

    def to_dict(self) -> dict[str, Any]:
        return {"round": self.round.to_dict(), "policy": self.policy, "init": dataclasses.asdict(self.init),
                "round_size": self.round_size, "max_samples": self.max_samples, "stream_id": self.stream_id}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "StreamSpec":
        spec = cls(round=RunSpec.from_dict(d["round"]), policy=d["policy"], init=InitSpec(**d["init"]),
                   round_size=d["round_size"], max_samples=d["max_samples"])
        if "stream_id" in d and d["stream_id"] != spec.stream_id:
            raise SpecError(f"stream_id: stored {d['stream_id']!r} does not match the spec's hash {spec.stream_id!r}")
        return spec


def canonical_json(obj: Any) -> str:
    # repr-exact floats and sorted keys: the same value always gives the same bytes
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def short_hash(obj: Any, length: int = 12) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]
