"""The plan: every run and stream the experiments of a config need, each once, keyed by its
content-addressed name, and per experiment the runs it planned with the labels its tables and figures
group by. A run needed by two experiments appears once (and is trained once, with the union of what
they measure: ``merged``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from warmstart.components.models import MODELS
from warmstart.components.splits import split_name
from warmstart.core.errors import ConfigError
from warmstart.core.spec import DatasetSpec, ProbeSpec, RunSpec, StreamSpec
from warmstart.plan.experiment_kinds import EXPERIMENT_KINDS, RUN_TABLES, STREAM_TABLES


@dataclass(frozen=True)
class PlannedRun:
    spec: "RunSpec | StreamSpec"
    labels: dict[str, Any]  # what tables and figures group by; not part of the run's identity


@dataclass
class Plan:
    runs: dict[str, RunSpec] = field(default_factory=dict)  # run name -> spec, every run once
    streams: dict[str, StreamSpec] = field(default_factory=dict)  # stream name -> spec
    experiments: dict[str, list[PlannedRun]] = field(default_factory=dict)
    experiment_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    # experiment -> the probes its report draws from and the phases whose runs they are measured in
    drawn_probes: dict[str, tuple[tuple[ProbeSpec, ...], tuple[int, ...]]] = field(default_factory=dict)

    def add(self, experiment: str, spec: "RunSpec | StreamSpec", **labels: Any):
        """Plan ``spec`` for ``experiment`` with its ``labels`` (and the probes the experiment's report
        draws from, in a run of the phases it draws them for); returns the spec as planned."""
        drawn, phases = self.drawn_probes.get(experiment, ((), ()))
        if isinstance(spec, RunSpec) and labels.get("phase") in phases:
            named = {p.name for p in spec.probes}
            spec = spec.replace(probes=spec.probes + tuple(p for p in drawn if p.name not in named))
        if isinstance(spec, StreamSpec):
            old = self.streams.get(spec.name)
            self.streams[spec.name] = spec if old is None else dataclasses.replace(
                old, round=merged(old.round, spec.round))
        else:
            self.runs[spec.name] = merged(self.runs.get(spec.name), spec)
        self.experiments.setdefault(experiment, []).append(PlannedRun(spec, labels))
        return spec

    def tables(self, experiment: str) -> tuple[str, ...]:
        """The parquet tables ``experiment`` writes: of those its kind declares, the runs' (summary,
        epochs) if it planned runs and the streams' (rounds) if it planned streams."""
        kind = EXPERIMENT_KINDS[self.experiment_config[experiment]["kind"]]
        planned = self.experiments.get(experiment, [])
        has_streams = any(isinstance(p.spec, StreamSpec) for p in planned)
        has_runs = any(not isinstance(p.spec, StreamSpec) for p in planned)
        return tuple(t for t in kind.tables if (t in STREAM_TABLES and has_streams) or (t in RUN_TABLES and has_runs))

    def _trained(self) -> list[RunSpec]:
        """Every RunSpec whose data some job reads: runs, and the round template of each stream."""
        return list(self.runs.values()) + [s.round for s in self.streams.values()]

    @property
    def datasets(self) -> dict[str, DatasetSpec]:
        return {s.dataset.key: s.dataset for s in self._trained()}

    @property
    def splits(self) -> dict[str, tuple[DatasetSpec, int, float]]:
        """Split name -> (dataset, seed, validation fraction), for every split some job needs."""
        return {run_split_name(s): (s.dataset, s.seed, s.validation_fraction) for s in self._trained()}

    @property
    def model_libraries(self) -> tuple[str, ...]:
        """The third-party libraries the planned models import (``ModelEntry.libraries``), for a job server
        to import once."""
        return tuple(sorted({lib for s in self._trained() for lib in MODELS[s.model.arch].libraries}))


def merged(old: RunSpec | None, new: RunSpec) -> RunSpec:
    """One run asked for by several experiments: the union of their probes, kept checkpoints and kept
    optimiser state (none of which changes its results or its identity)."""
    if old is None:
        return new
    probes = {p.name: p for p in old.probes}
    for p in new.probes:
        if p.name in probes and probes[p.name] != p:
            raise ConfigError(f"probes.{p.name}: one run is probed with different options by two experiments")
        probes[p.name] = p
    return old.replace(probes=tuple(probes.values()), checkpoints=tuple(set(old.checkpoints) | set(new.checkpoints)),
                       keep_optimizer=old.keep_optimizer or new.keep_optimizer)


def run_split_name(spec: "RunSpec | StreamSpec") -> str:
    spec = spec.round if isinstance(spec, StreamSpec) else spec
    return split_name(spec.dataset.key, spec.seed, spec.validation_fraction)
