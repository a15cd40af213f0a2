"""Typed, validated descriptions of training runs and online streams, and the identity derived from them.

A run's identity is a short hash of its canonical JSON form. The workflow puts that hash in the run's
output directory, so results are content-addressed: two experiments that need the same run share one
directory (and train it once), an edited condition gets a new directory, and changing it back finds the
old one again. Anything that changes the numbers a run produces belongs in the identity; anything that
does not (device, thread count, logging, the probes that only measure, which checkpoints are kept) is
part of the spec but not of its hash, so it never invalidates results.

A spec's parts (dataset, model, optimiser, stop rule, ...) are defined in ``core.spec_parts`` and
imported from here; the hashing and the methods' revisions in ``core.identity``.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from warmstart.core.errors import SpecError
from warmstart.core.identity import revised, revision, short_hash, unrevised
from warmstart.core.spec_parts import (DatasetSpec, EngineSpec, InitSpec, InterventionSpec, ModelSpec, OptimizerSpec,
                                       ProbeSpec, StopSpec, TermSpec, coerce_floats)
from warmstart.core.field_rules import is_int, require

__all__ = ["DatasetSpec", "EngineSpec", "InitSpec", "InterventionSpec", "ModelSpec", "OptimizerSpec", "ProbeSpec",
           "RunSpec", "SpecError", "StopSpec", "StreamSpec", "TermSpec", "short_hash"]


def _named(cls, items, key: str) -> tuple:
    out = tuple(x if isinstance(x, cls) else cls(**x) for x in items)
    names = [x.name for x in out]
    require(len(set(names)) == len(names), key, f"each may appear once, got {names}")
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
        coerce_floats(self, "", "train_fraction", "validation_fraction")
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
        require(is_int(self.batch_size) and self.batch_size >= 1, "batch_size",
               f"must be a positive integer, got {self.batch_size!r}")
        require(is_int(self.seed) and self.seed >= 0, "seed", f"must be a non-negative integer, got {self.seed!r}")
        require(0 < self.train_fraction <= 1, "train_fraction", f"must be in (0, 1], got {self.train_fraction!r}")
        require(0 < self.validation_fraction < 1, "validation_fraction",
               f"must be in (0, 1), got {self.validation_fraction!r}")
        for e in self.checkpoints:
            require(is_int(e) and 1 <= e <= self.stop.max_epochs, "checkpoints",
                   f"epochs must be integers in [1, max_epochs={self.stop.max_epochs}], got {e!r}")
        if self.parent is not None:
            require(self.parent.seed == self.seed, "parent.seed", "a parent run must share the child's seed (and so its split)")
        require(self.parent_epoch is None or (self.parent is not None and is_int(self.parent_epoch)
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
            "optimizer": revised(self.optimizer.canonical(), revision("optimizer", self.optimizer.name)),
            "batch_size": self.batch_size,
            "stop": self.stop.canonical(),
            "seed": self.seed,
            "train_fraction": self.train_fraction,
            "validation_fraction": self.validation_fraction,
            "init": revised(dataclasses.asdict(self.init), revision("init", self.init.strategy)),
            "parent": None if self.parent is None else self.parent.run_id,
        }
        if self.engine.precision != "fp32":
            identity["precision"] = self.engine.precision
        if self.terms:
            identity["terms"] = [revised(dataclasses.asdict(t), revision("term", t.name))
                                 for t in self.terms]
        if self.interventions:
            identity["interventions"] = [revised(dataclasses.asdict(i), revision("intervention", i.name))
                                         for i in self.interventions]
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
            optimizer=OptimizerSpec(**unrevised(d["optimizer"])),
            batch_size=d["batch_size"],
            stop=StopSpec(**d["stop"]),
            seed=d["seed"],
            train_fraction=d["train_fraction"],
            validation_fraction=d["validation_fraction"],
            init=InitSpec(**unrevised(d["init"])),
            parent=None if d.get("parent") is None else cls.from_dict(d["parent"]),
            engine=EngineSpec(**d.get("engine", {})),
            terms=tuple(map(unrevised, d.get("terms", ()))),
            interventions=tuple(map(unrevised, d.get("interventions", ()))),
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
    parent are unused. ``policy`` names an entry of ``warmstart.components.policies.POLICIES``; ``init`` is applied
    to the previous round's weights at the start of every round after the first (a strategy that needs
    no parent, like ``random``, starts each round afresh).
    """

    round: RunSpec
    policy: str = "random"
    init: InitSpec = field(default_factory=lambda: InitSpec("warm"))
    round_size: int = 100
    max_samples: int | None = None  # None: until the pool is exhausted

    def __post_init__(self) -> None:
        require(is_int(self.round_size) and self.round_size >= 1, "round_size",
               f"must be a positive integer, got {self.round_size!r}")
        require(self.max_samples is None or (is_int(self.max_samples) and self.max_samples >= 1), "max_samples",
               f"must be a positive integer or null, got {self.max_samples!r}")

    @property
    def seed(self) -> int:
        return self.round.seed

    def canonical(self) -> dict[str, Any]:
        template = self.round.canonical()
        for unused in ("train_fraction", "init", "parent"):
            template.pop(unused)
        init = revised(dataclasses.asdict(self.init), revision("init", self.init.strategy))
        return {"round": template, "policy": self.policy, "init": init,
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
        spec = cls(round=RunSpec.from_dict(d["round"]), policy=d["policy"], init=InitSpec(**unrevised(d["init"])),
                   round_size=d["round_size"], max_samples=d["max_samples"])
        if "stream_id" in d and d["stream_id"] != spec.stream_id:
            raise SpecError(f"stream_id: stored {d['stream_id']!r} does not match the spec's hash {spec.stream_id!r}")
        return spec
