"""From config to runs: expand the experiments declared in config.yaml into validated specs.

The config names datasets, models, optimisers, init strategies, loss terms and probes once (``datasets:``,
``models:``, ``optimizers:``, ``inits:``, ``terms:``, ``probes:``), each under a label, and experiments
refer to them by label (``warmstart.labels`` resolves a label into a spec, its options checked against
its registry). Each experiment has a ``kind``, looked up in ``EXPERIMENT_KINDS``; a kind turns
one experiment's settings into planned runs (or streams), each with the labels its tables and figures
need (condition, phase, init, seed). Runs are keyed by their content-addressed name, so a run needed by
two experiments appears once in the plan and is trained once (with the union of what they measure).

``plan_blocks`` then groups the plan's runs into training jobs: the seeds of a stackable condition in
fixed blocks (seeds ``b * size .. b * size + size - 1``), every other run alone. Blocks are a function
of the plan alone, never of what is already on disk.
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .errors import ConfigError, SpecError
from .labels import (_as_config_error, _built, _grid, checked, dataset_spec, init_spec, model_spec, optimizer_spec,
                     probe_spec, term_spec)
from .registry import Registry
from .spec import (DatasetSpec, EngineSpec, InitSpec, InterventionSpec, ModelSpec, OptimizerSpec, ProbeSpec, RunSpec,
                   StopSpec, StreamSpec, TermSpec, short_hash)
from .splits import split_name


@dataclass(frozen=True)
class PlannedRun:
    spec: "RunSpec | StreamSpec"
    labels: dict[str, Any]  # what tables and figures group by; not part of the run's identity


@dataclass(frozen=True)
class Block:
    """Runs trained by one job: the seeds of one stackable condition (``stacked``), or a single run."""

    name: str
    specs: tuple[RunSpec, ...]
    stacked: bool


@dataclass
class Plan:
    runs: dict[str, RunSpec] = field(default_factory=dict)  # run name -> spec, every run once
    streams: dict[str, StreamSpec] = field(default_factory=dict)  # stream name -> spec
    experiments: dict[str, list[PlannedRun]] = field(default_factory=dict)
    experiment_config: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, experiment: str, spec: "RunSpec | StreamSpec", **labels: Any):
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


# -- settings -------------------------------------------------------------------------------------------

def needs_parent(init: InitSpec) -> bool:
    from .init import STRATEGIES

    return STRATEGIES[init.strategy].needs_parent


def _setting(exp: Mapping[str, Any], config: Mapping[str, Any], name: str):
    """An experiment's own value, else the config-wide default under ``defaults:``."""
    if name in exp:
        return exp[name]
    return (config.get("defaults") or {})[name]


def stop_spec(exp, config, key) -> StopSpec:
    stop = {**(config.get("defaults") or {}).get("stop", {}), **(exp.get("stop") or {})}
    return _built(StopSpec, stop, f"{key}.stop")


def engine_spec(exp, config, key) -> EngineSpec:
    return _built(EngineSpec, {**(config.get("engine") or {}), **(exp.get("engine") or {})}, f"{key}.engine")


def _labels_list(exp, name, key, default=None) -> list:
    values = exp.get(name, default)
    if not values:
        raise ConfigError(f"{key}.{name}: must be a non-empty list")
    if len(set(map(str, values))) != len(values):
        raise ConfigError(f"{key}.{name}: has duplicates: {values}")
    return list(values)


# -- experiment kinds ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExperimentKind:
    name: str
    plan: Callable[["Plan", str, Mapping[str, Any], Mapping[str, Any]], None]
    tables: tuple[str, ...]  # the experiment's parquet tables: ("summary", "epochs") or ("rounds",)
    schema: dict  # JSON schema of the kind's own settings (beside the common ones in COMMON_SETTINGS)


EXPERIMENT_KINDS: Registry[ExperimentKind] = Registry("experiment kind")

RUN_TABLES = ("summary", "epochs")
STREAM_TABLES = ("rounds",)

_labels = {"type": "array", "minItems": 1, "uniqueItems": True,
           "items": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"}}
_fraction_open = {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}
# Settings every kind takes (its schema adds its own); registry names are checked by the planner.
COMMON_SETTINGS = {
    "kind": {"type": "string"},
    "report": {"type": "string", "description": "an entry of warmstart.reports.REPORTS"},
    "models": _labels, "optimizers": _labels,
    "seeds": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": "integer", "minimum": 0}},
    "inits": {**_labels, "description": "labels under 'inits:'; default: defaults.inits"},
    "terms": {"type": "array", "uniqueItems": True, "items": _labels["items"],
              "description": "labels under 'terms:', added to the loss of every run of the experiment"},
    "probes": {"type": "array", "uniqueItems": True, "items": _labels["items"],
               "description": "labels under 'probes:', measured after every epoch of every run"},
    "validation_fraction": _fraction_open,
    "batch_size": {"type": "integer", "minimum": 1},
    "stop": {"type": "object", "additionalProperties": False, "properties": {
        "rule": {"enum": ["converged", "epochs"]}, "threshold": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "max_epochs": {"type": "integer", "minimum": 1},
        "restart_every": {"type": ["integer", "null"], "minimum": 1}}},
    "engine": {"type": "object", "additionalProperties": False, "properties": {
        "precision": {"enum": ["fp32", "bf16"]}, "channels_last": {"type": "boolean"}, "compile": {"type": "boolean"}}},
}


def experiment_kind(name: str, *, tables: tuple[str, ...], required: tuple[str, ...] = (),
                    properties: Mapping[str, Any] | None = None):
    """Register ``plan(plan, name, exp, config)`` as experiment kind ``name``, with the JSON schema of
    its own settings (``properties``, ``required``) beside COMMON_SETTINGS."""
    schema = {"type": "object", "additionalProperties": False,
              "required": ["kind", "report", "models", "optimizers", "seeds", *required],
              "properties": {**COMMON_SETTINGS, **(properties or {})}}

    def decorate(fn):
        EXPERIMENT_KINDS.add(name, ExperimentKind(name, fn, tables, schema))
        return fn
    return decorate


@dataclass
class Common:
    """The settings every experiment kind resolves the same way."""

    key: str
    seeds: list[int]
    batch_size: int
    validation_fraction: float
    stop: StopSpec
    models: dict[str, ModelSpec]
    optimizers: dict[str, OptimizerSpec]
    engine: EngineSpec
    inits: dict[str, InitSpec]  # label -> init, in the experiment's order
    terms: tuple[TermSpec, ...]
    probes: tuple[ProbeSpec, ...]

    def run(self, dataset: DatasetSpec, model: str, optimizer_label: str, seed: int, **fields: Any) -> RunSpec:
        """A run of this experiment; ``fields`` override its settings (e.g. a sweep's batch size)."""
        settings = dict(dataset=dataset, model=self.models[model], optimizer=self.optimizers[optimizer_label],
                        batch_size=self.batch_size, stop=self.stop, seed=seed,
                        validation_fraction=self.validation_fraction, engine=self.engine, terms=self.terms,
                        probes=self.probes)
        try:
            return RunSpec(**{**settings, **fields})
        except SpecError as e:
            raise ConfigError(f"{self.key}: {e}") from None

    def stream(self, template: RunSpec, key: str = "", **fields: Any) -> StreamSpec:
        """A stream of this experiment from the round template ``template`` (a ``run``); ``key`` names
        the config section its settings come from, for the error."""
        try:
            return StreamSpec(template, **fields)
        except SpecError as e:
            raise ConfigError(f"{self.key}{key}: {e}") from None

    def labels(self, dataset: str, model: str, optimizer: str, seed: int) -> dict[str, Any]:
        return dict(dataset=dataset, model=model, optimizer=optimizer, lr=self.optimizers[optimizer].lr,
                    batch_size=self.batch_size, seed=seed)

    def init_labels(self, label: str) -> dict[str, Any]:
        """Labels of an init: its config label, and whether it is a baseline (starts from no parent)."""
        return dict(init=label, baseline=not needs_parent(self.inits[label]))

    def parent_of(self, parent: RunSpec, inits=None) -> RunSpec:
        """The parent run as its children's inits (default: the experiment's) need it: keeping the optional
        files (e.g. the final optimiser state) that a child's strategy continues from."""
        from .init import STRATEGIES

        inits = self.inits.values() if inits is None else inits
        wanted = {f for init in inits for f in STRATEGIES[init.strategy].parent_files(init.options)}
        return parent.replace(keep_optimizer=True) if "optimizer" in wanted else parent


def common_settings(name: str, exp: Mapping[str, Any], config: Mapping[str, Any]) -> Common:
    key = f"experiments.{name}"
    seeds = _labels_list(exp, "seeds", key)
    for i, seed in enumerate(seeds):
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(f"{key}.seeds[{i}]: must be a non-negative integer, got {seed!r}")
    models = _labels_list(exp, "models", key)
    optimizers = _labels_list(exp, "optimizers", key)
    inits = _labels_list(exp, "inits", key, default=(config.get("defaults") or {}).get("inits"))
    init_specs = {label: init_spec(label, config, f"{key}.inits[{i}]") for i, label in enumerate(inits)}
    for _, condition, entry in _grid(exp, config, key, "init_grid", "inits"):
        init_specs[condition] = InitSpec(entry["name"], entry["options"])
    return Common(
        key=key, seeds=seeds,
        batch_size=_setting(exp, config, "batch_size"),
        validation_fraction=float(_setting(exp, config, "validation_fraction")),
        stop=stop_spec(exp, config, key),
        models={m: model_spec(m, config, f"{key}.models[{i}]") for i, m in enumerate(models)},
        optimizers={o: optimizer_spec(o, config, f"{key}.optimizers[{i}]") for i, o in enumerate(optimizers)},
        engine=engine_spec(exp, config, key),
        inits=init_specs,
        terms=tuple(term_spec(t, config, f"{key}.terms[{i}]") for i, t in enumerate(exp.get("terms") or ())),
        probes=tuple(probe_spec(p, config, f"{key}.probes[{i}]") for i, p in enumerate(exp.get("probes") or ())),
    )


def _datasets(exp, config, key, field_name="datasets") -> dict[str, DatasetSpec]:
    labels = _labels_list(exp, field_name, key)
    return {d: dataset_spec(d, config, f"{key}.{field_name}[{i}]") for i, d in enumerate(labels)}


_PHASE2 = {"type": "object", "additionalProperties": False, "description": "phase 2's own settings", "properties": {
    "optimizer": {"type": "string", "description": "label under 'optimizers:' (default: the phase-1 one)"},
    "batch_size": {"type": "integer", "minimum": 1},
    "stop": COMMON_SETTINGS["stop"]}}
_GRID = {"type": "object", "additionalProperties": {"type": "object", "minProperties": 1,
                                                    "additionalProperties": {"type": "array", "minItems": 1}}}


def term_conditions(c: Common, exp, config) -> list[tuple[dict[str, Any], tuple[TermSpec, ...]]]:
    """The loss-term conditions of an experiment: (labels, terms) per value of its ``term_grid`` (each
    added to the experiment's ``terms``), or the one condition of its ``terms`` without a grid."""
    grid = _grid(exp, config, c.key, "term_grid", "terms")
    if not grid:
        return [({}, c.terms)]
    return [({"term": label, "condition": condition}, c.terms + (TermSpec(entry["name"], entry["options"]),))
            for label, condition, entry in grid]


@experiment_kind("batch", tables=RUN_TABLES, required=("datasets",), properties={
    "datasets": _labels,
    "phase1_fraction": {**_fraction_open, "description": "phase 1 trains on this fraction of the pool"},
    "phase2": _PHASE2,
    "term_grid": {**_GRID, "description": "label under 'terms:' -> {option: [values]}: one condition per value"},
    "init_grid": {**_GRID, "description": "label under 'inits:' -> {option: [values]}: one init per value"},
    "term_phases": {"type": "array", "items": {"enum": [1, 2]}, "minItems": 1, "uniqueItems": True,
                    "description": "the phases the experiment's terms apply to (default both)"},
})
def plan_batch(plan: Plan, name: str, exp: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """The paper's batch experiment (Table 1, Figure 1, Tables 2-5, Figure 6): train on
    ``phase1_fraction`` of the pool (phase 1, from a fresh initialisation), then on all of it (phase 2)
    with each of the experiment's inits: one that needs a parent starts from the phase-1 run, one that
    does not starts afresh. One phase-1 run per dataset x model x optimiser x seed (x term condition)
    serves every init that starts from it. ``phase2`` gives phase 2 its own optimiser, batch size or stop
    rule (Figure 6 zooms in at lr 1e-5); ``term_grid`` and ``init_grid`` write a grid of conditions once;
    ``term_phases`` says which phases the terms apply to (EWC needs a parent: phase 2 only)."""
    c = common_settings(name, exp, config)
    phase1_fraction = float(_setting(exp, config, "phase1_fraction"))
    if not 0 < phase1_fraction < 1:
        raise ConfigError(f"{c.key}.phase1_fraction: must be in (0, 1), got {phase1_fraction}")
    datasets = _datasets(exp, config, c.key)
    phase2 = dict(exp.get("phase2") or {})
    p2_optimizer = optimizer_spec(phase2["optimizer"], config, f"{c.key}.phase2.optimizer") if "optimizer" in phase2 else None
    p2_stop = _built(StopSpec, {**dataclasses.asdict(c.stop), **phase2["stop"]}, f"{c.key}.phase2.stop") if "stop" in phase2 else None
    term_phases = set(exp.get("term_phases") or (1, 2))
    for (cond_labels, terms), d, m, o, seed in itertools.product(term_conditions(c, exp, config), datasets,
                                                                 c.models, c.optimizers, c.seeds):
        labels = {**c.labels(d, m, o, seed), **cond_labels}
        phase1 = c.parent_of(c.run(datasets[d], m, o, seed, train_fraction=phase1_fraction,
                                   terms=terms if 1 in term_phases else c.terms))
        plan.add(name, phase1, **labels, init=phase1.init.strategy, baseline=True, phase=1)
        p2 = dict(train_fraction=1.0, terms=terms if 2 in term_phases else c.terms,
                  optimizer=p2_optimizer or phase1.optimizer, batch_size=phase2.get("batch_size", phase1.batch_size),
                  stop=p2_stop or phase1.stop, keep_optimizer=False, probes=c.probes)
        for label, init in c.inits.items():
            phase2_run = phase1.replace(init=init, parent=phase1 if needs_parent(init) else None, **p2)
            plan.add(name, phase2_run, **labels, **c.init_labels(label), phase=2,
                     **({"phase2_lr": phase2_run.optimizer.lr} if p2_optimizer else {}))


@experiment_kind("sweep", tables=RUN_TABLES, required=("datasets", "batch_sizes", "lrs"), properties={
    "datasets": _labels,
    "phase1_fraction": _fraction_open,
    "batch_sizes": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": "integer", "minimum": 1}},
    "lrs": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": "number", "exclusiveMinimum": 0}},
})
def plan_sweep(plan: Plan, name: str, exp: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """The hyperparameter sweep (Figures 4 and 5): every batch size x learning rate, chosen separately for
    phase 1 and phase 2. Each phase-1 setting is trained once and warm-starts one run per phase-2 setting
    (every init that needs a parent); an init without a parent runs once per setting. The grid is the
    two lists, written once; each run is labelled with its phase-1 and phase-2 batch size and lr."""
    c = common_settings(name, exp, config)
    phase1_fraction = float(_setting(exp, config, "phase1_fraction"))
    settings = list(itertools.product(exp["batch_sizes"], exp["lrs"]))
    datasets = _datasets(exp, config, c.key)
    for d, m, o, seed in itertools.product(datasets, c.models, c.optimizers, c.seeds):
        base = c.labels(d, m, o, seed)
        optimizer = c.optimizers[o]
        phase1_runs = {}
        for b1, lr1 in settings:
            run = c.parent_of(c.run(datasets[d], m, o, seed, train_fraction=phase1_fraction, batch_size=b1,
                                    optimizer=dataclasses.replace(optimizer, lr=float(lr1))))
            phase1_runs[(b1, lr1)] = run
            plan.add(name, run, **{**base, "batch_size": b1, "lr": float(lr1)}, phase1_batch_size=b1,
                     phase1_lr=float(lr1), init=run.init.strategy, baseline=True, phase=1)
        for (b2, lr2), label in itertools.product(settings, c.inits):
            init = c.inits[label]
            parents = list(phase1_runs.items()) if needs_parent(init) else [((None, None), None)]
            for (b1, lr1), parent in parents:
                run = c.run(datasets[d], m, o, seed, batch_size=b2, init=init, parent=parent,
                            optimizer=dataclasses.replace(optimizer, lr=float(lr2)))
                plan.add(name, run, **{**base, "batch_size": b2, "lr": float(lr2)}, phase1_batch_size=b1,
                         phase1_lr=None if lr1 is None else float(lr1), **c.init_labels(label), phase=2)


@experiment_kind("checkpoints", tables=RUN_TABLES, required=("datasets", "checkpoint_every", "checkpoints"),
                 properties={
    "datasets": _labels,
    "phase1_fraction": _fraction_open,
    "checkpoint_every": {"type": "integer", "minimum": 1, "description": "k: phase 1 keeps its weights every k epochs"},
    "checkpoints": {"type": "integer", "minimum": 1, "description": "n: phase 1 trains n * k epochs"},
})
def plan_checkpoints(plan: Plan, name: str, exp: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """How quickly generalisation is damaged (Figure 7): phase 1 trains ``checkpoints`` x
    ``checkpoint_every`` epochs (a fixed number, so every checkpoint exists) and keeps its weights every
    ``checkpoint_every`` epochs; each checkpoint warm-starts its own phase-2 run (every init that needs a
    parent), against the inits without a parent. The checkpoints are outputs of the one phase-1 job."""
    c = common_settings(name, exp, config)
    phase1_fraction = float(_setting(exp, config, "phase1_fraction"))
    every, count = exp["checkpoint_every"], exp["checkpoints"]
    epochs = [every * (i + 1) for i in range(count)]
    datasets = _datasets(exp, config, c.key)
    for d, m, o, seed in itertools.product(datasets, c.models, c.optimizers, c.seeds):
        labels = c.labels(d, m, o, seed)
        phase1 = c.parent_of(c.run(datasets[d], m, o, seed, train_fraction=phase1_fraction,
                                   stop=StopSpec("epochs", max_epochs=epochs[-1]), checkpoints=tuple(epochs)))
        plan.add(name, phase1, **labels, init=phase1.init.strategy, baseline=True, phase=1, checkpoint_epoch=None)
        for label, init in c.inits.items():
            if not needs_parent(init):
                run = phase1.replace(train_fraction=1.0, init=init, parent=None, stop=c.stop, checkpoints=())
                plan.add(name, run, **labels, **c.init_labels(label), phase=2, checkpoint_epoch=None)
                continue
            for e in epochs:
                run = phase1.replace(train_fraction=1.0, init=init, parent=phase1, parent_epoch=e, stop=c.stop,
                                     checkpoints=(), keep_optimizer=False)
                plan.add(name, run, **labels, **c.init_labels(label), phase=2, checkpoint_epoch=e)


@experiment_kind("online", tables=STREAM_TABLES, required=("datasets", "policies"), properties={
    "datasets": _labels,
    "policies": {**_labels, "description": "entries of warmstart.policies.POLICIES"},
    "round_size": {"type": "integer", "minimum": 1, "default": 100},
    "max_samples": {"type": ["integer", "null"], "minimum": 1},
})
def plan_online(plan: Plan, name: str, exp: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """Online learning (Figures 2, 8, 9): one stream per dataset x model x optimiser x policy x init x
    seed; each round adds ``round_size`` samples chosen by the policy and retrains to convergence."""
    c = common_settings(name, exp, config)
    policies = _labels_list(exp, "policies", c.key)
    for i, p in enumerate(policies):
        checked("policies", p, {}, f"{c.key}.policies[{i}]")
    round_size, max_samples = exp.get("round_size", 100), exp.get("max_samples")
    datasets = _datasets(exp, config, c.key)
    for d, m, o, policy, label, seed in itertools.product(datasets, c.models, c.optimizers, policies, c.inits,
                                                          c.seeds):
        stream = c.stream(c.run(datasets[d], m, o, seed), policy=policy, init=c.inits[label],
                          round_size=round_size, max_samples=max_samples)
        plan.add(name, stream, **c.labels(d, m, o, seed), policy=policy, **c.init_labels(label))


@experiment_kind("transfer", tables=RUN_TABLES, required=("source", "target", "fractions"), properties={
    "source": {"type": "string", "description": "dataset label the source model is trained on (its whole pool)"},
    "target": {"type": "string", "description": "dataset label of the target task"},
    "fractions": {"type": "array", "minItems": 1, "uniqueItems": True,
                  "items": {"type": "number", "exclusiveMinimum": 0, "maximum": 1}},
})
def plan_transfer(plan: Plan, name: str, exp: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """Transfer (Figure 3): a model trained to convergence on the whole ``source`` pool starts training
    on each fraction of the ``target`` pool (with an init that needs a parent, e.g. the ``transfer``
    strategy, which keeps the tensors that fit), against an init without a parent on the same fraction."""
    c = common_settings(name, exp, config)
    source = dataset_spec(exp["source"], config, f"{c.key}.source")
    target = dataset_spec(exp["target"], config, f"{c.key}.target")
    fractions = _labels_list(exp, "fractions", c.key)
    for i, f in enumerate(fractions):
        if not isinstance(f, (int, float)) or isinstance(f, bool) or not 0 < f <= 1:
            raise ConfigError(f"{c.key}.fractions[{i}]: must be in (0, 1], got {f!r}")
    for m, o, seed in itertools.product(c.models, c.optimizers, c.seeds):
        labels = c.labels(exp["target"], m, o, seed)
        source_run = c.run(source, m, o, seed)
        plan.add(name, source_run, **{**labels, "dataset": exp["source"]}, init=source_run.init.strategy,
                 baseline=True, phase=1, fraction=1.0)
        for f, label in itertools.product(fractions, c.inits):
            init = c.inits[label]
            target_run = c.run(target, m, o, seed, train_fraction=float(f), init=init,
                               parent=source_run if needs_parent(init) else None)
            plan.add(name, target_run, **labels, **c.init_labels(label), phase=2, fraction=float(f))


REMEDY_SECTIONS = ("inits", "terms", "interventions", "optimizers")
PROTOCOLS = ("batch", "online")


@experiment_kind("remedies", tables=RUN_TABLES + STREAM_TABLES, required=("datasets", "target", "baseline", "remedies"),
                 properties={
    "datasets": _labels,
    "phase1_fraction": _fraction_open,
    "target": {"type": "string", "description": "label under 'inits:' of what a remedy tries to match (random init)"},
    "baseline": {"type": "string", "description": "label under 'inits:' of the plain warm start"},
    "remedies": {"type": "object", "minProperties": 1, "description":
                 "label under 'inits:', 'terms:', 'interventions:' or 'optimizers:' -> {option: [values]} (a "
                 "term, an intervention or an optimiser goes with the warm start)",
                 "additionalProperties": {"type": ["object", "null"],
                                          "additionalProperties": {"type": "array", "minItems": 1}}},
    "protocols": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"enum": list(PROTOCOLS)},
                  "description": "batch (two phases) and/or online (rounds); default: batch, and online "
                                 "when an 'online:' section is given"},
    "optimizer_phases": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"enum": [1, 2]},
                         "description": "the batch phases an optimiser remedy (e.g. Muon) trains: [2] (default, "
                                        "the warm start's phase only) or [1, 2] (its own phase 1 too)"},
    "online": {"type": "object", "additionalProperties": False, "properties": {
        "optimizer": {"type": "string", "description": "label under 'optimizers:' (default: the first of optimizers)"},
        "policy": {"type": "string"}, "round_size": {"type": "integer", "minimum": 1},
        "max_samples": {"type": ["integer", "null"], "minimum": 1},
        "seeds": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": "integer", "minimum": 0},
                  "description": "the streams' seeds (default: the experiment's)"},
        "settings": {"enum": ["all", "first"], "description": "every setting of each remedy's grid, or its first"}}},
})
def plan_remedies(plan: Plan, name: str, exp: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """The remedies compared on one protocol (the leaderboard): for each remedy, every setting of its grid
    (an init strategy applied to the phase-1 model; or, with the warm start, a loss term, an intervention
    or another optimiser), beside the ``target`` (random init) and the ``baseline`` (plain warm start),
    on the batch protocol (phase 1 on ``phase1_fraction``, then the whole pool) and/or the online one
    (one stream per remedy setting, ``round_size`` new samples per round, the same samples for every
    remedy under the same seed). A term, intervention or optimiser acts in phase 2 (and in every round);
    an optimiser remedy also trains its own phase 1 when ``optimizer_phases`` is [1, 2]."""
    c = common_settings(name, {**exp, "inits": [exp["target"], exp["baseline"]]}, config)
    target, baseline = c.inits[exp["target"]], c.inits[exp["baseline"]]
    if needs_parent(target) or not needs_parent(baseline):
        raise ConfigError(f"{c.key}: the target must start afresh and the baseline from the phase-1 model")
    protocols = exp.get("protocols") or (["batch", "online"] if exp.get("online") is not None else ["batch"])
    if "online" in protocols and exp.get("online") is None:
        raise ConfigError(f"{c.key}.protocols: 'online' needs an 'online:' section (round_size, max_samples, ...)")
    # (role, remedy label, setting, init, extra fields of the remedy's runs)
    conditions = [("target", exp["target"], exp["target"], target, {}),
                  ("baseline", exp["baseline"], exp["baseline"], baseline, {})]
    for label, grid in exp["remedies"].items():
        sections = [sec for sec in REMEDY_SECTIONS if label in (config.get(sec) or {})]
        if len(sections) != 1:
            raise ConfigError(f"{c.key}.remedies.{label}: must be a label under exactly one of "
                              f"{', '.join(repr(sec + ':') for sec in REMEDY_SECTIONS)}"
                              + (f" (it is under {sections})" if sections else ""))
        section = sections[0]
        if section == "optimizers":
            if grid:
                raise ConfigError(f"{c.key}.remedies.{label}: an optimiser remedy takes no grid; define one "
                                  "label under 'optimizers:' per setting")
            conditions.append(("remedy", label, label, baseline,
                               {"optimizer": optimizer_spec(label, config, f"{c.key}.remedies.{label}")}))
            continue
        entries = _grid({"grid": {label: grid or {}}}, config, f"{c.key}.remedies", "grid", section, allow_empty=True)
        for _, setting, entry in entries:
            if section == "inits":
                conditions.append(("remedy", label, setting, InitSpec(entry["name"], entry["options"]), {}))
            elif section == "terms":
                conditions.append(("remedy", label, setting, baseline,
                                   {"terms": c.terms + (TermSpec(entry["name"], entry["options"]),)}))
            else:
                conditions.append(("remedy", label, setting, baseline,
                                   {"interventions": (InterventionSpec(entry["name"], entry["options"]),)}))
    datasets = _datasets(exp, config, c.key)
    phase1_fraction = float(_setting(exp, config, "phase1_fraction"))
    optimizer_phases = exp.get("optimizer_phases", [2])
    children = [init for _, _, _, init, _ in conditions]
    for d, m, o, seed in itertools.product(datasets, c.models, c.optimizers, c.seeds) if "batch" in protocols else ():
        labels = {**c.labels(d, m, o, seed), "protocol": "batch"}
        phase1 = c.parent_of(c.run(datasets[d], m, o, seed, train_fraction=phase1_fraction), children)
        plan.add(name, phase1, **labels, init=phase1.init.strategy, baseline=True, phase=1, role="phase1",
                 remedy=None, setting=None)
        for role, remedy, setting, init, fields in conditions:
            parent = phase1
            if "optimizer" in fields and 1 in optimizer_phases:
                parent = plan.add(name, phase1.replace(optimizer=fields["optimizer"]), **labels, init=phase1.init.strategy,
                                  baseline=True, phase=1, role="phase1", remedy=remedy, setting=setting)
            run = parent.replace(train_fraction=1.0, init=init, parent=parent if needs_parent(init) else None,
                                 keep_optimizer=False, **fields)
            plan.add(name, run, **labels, init=setting, baseline=not needs_parent(init), phase=2, role=role,
                     remedy=remedy, setting=setting)
    if "online" not in protocols:
        return
    online = exp["online"]
    policy = online.get("policy", "random")
    checked("policies", policy, {}, f"{c.key}.online.policy")
    first_optimizer = next(iter(c.optimizers))  # a label c.run knows; the stream's own optimiser replaces it
    optimizer = online.get("optimizer", first_optimizer)
    opt = optimizer_spec(optimizer, config, f"{c.key}.online.optimizer")
    first_only = online.get("settings", "all") == "first"
    seen: set[str] = set()
    for role, remedy, setting, init, fields in conditions:
        if first_only and remedy in seen:
            continue
        seen.add(remedy)
        for d, m, seed in itertools.product(datasets, c.models, online.get("seeds", c.seeds)):
            template = c.run(datasets[d], m, first_optimizer, seed, **{"optimizer": opt, **fields})
            stream = c.stream(template, ".online", policy=policy, init=init,
                              round_size=online.get("round_size", 100), max_samples=online.get("max_samples"))
            plan.add(name, stream, **{**c.labels(d, m, first_optimizer, seed), "optimizer": optimizer,
                                     "lr": opt.lr}, protocol="online", policy=policy, init=setting,
                     baseline=not needs_parent(init), role=role, remedy=remedy, setting=setting)


# -- the whole config ---------------------------------------------------------------------------------

def plan_experiments(config: Mapping[str, Any], only: list[str] | None = None) -> Plan:
    """Expand every experiment in ``config`` (or those named in ``only``) into a Plan."""
    from .reports import REPORTS

    plan = Plan()
    experiments = config.get("experiments") or {}
    for name, exp in experiments.items():
        if only is not None and name not in only:
            continue
        kind = _as_config_error(EXPERIMENT_KINDS.lookup, exp.get("kind"), f"experiments.{name}.kind")
        report = _as_config_error(REPORTS.lookup, exp.get("report"), f"experiments.{name}.report")
        if not set(report.tables) <= set(kind.tables):
            raise ConfigError(f"experiments.{name}.report: {exp.get('report')!r} reads the tables {list(report.tables)}, "
                              f"which a {kind.name!r} experiment does not write (it writes {list(kind.tables)})")
        kind.plan(plan, name, exp, config)
        plan.experiment_config[name] = dict(exp)
        if not set(report.tables) & set(plan.tables(name)):
            raise ConfigError(f"experiments.{name}.report: {exp.get('report')!r} reads the tables "
                              f"{list(report.tables)}, none of which this experiment writes")
    return plan


def plan_blocks(plan: Plan, stack_seeds: int, stacks_per_job: int = 1) -> dict[str, Block]:
    """The training jobs of ``plan``: the runs of one condition of the stacked engine (``checks.stackable``)
    whose seeds fall in the same block of ``stack_seeds`` consecutive seeds train as one stack (with
    ``stack_seeds`` 1, a stack of one each); every other run trains alone, in a block named after it.
    With ``stacks_per_job`` > 1, up to that many stacks whose runs start from the same parent stack (or
    from none) share one job, one stack after the other: a job's start-up (a process, torch's import)
    costs more than a small model's training. A pure function of the plan: the same blocks before,
    during and after training. How seeds and stacks are grouped changes no run's numbers
    (``runner.run_block``; each stack trains on its own)."""
    from .checks import stackable

    groups: dict[tuple, list[RunSpec]] = {}
    blocks: dict[str, Block] = {}
    for spec in plan.runs.values():
        if stackable(spec):
            groups.setdefault((condition_key(spec), spec.seed // stack_seeds), []).append(spec)
        else:
            blocks[spec.name] = Block(spec.name, (spec,), stacked=False)
    stacks: dict[tuple, list[tuple[str, tuple[RunSpec, ...]]]] = {}
    for (key, index), members in groups.items():
        members.sort(key=lambda s: s.seed)
        name = f"{members[0].condition_label}_b{index}_{key[:10]}"
        parent = members[0].parent
        shared = (None if parent is None else condition_key(parent), members[0].dataset.key, index)
        stacks.setdefault(shared, []).append((name, tuple(members)))
    for shared, named in stacks.items():
        named.sort()
        for start in range(0, len(named), stacks_per_job):
            chunk = named[start:start + stacks_per_job]
            if len(chunk) == 1:
                name = chunk[0][0]
            else:
                name = f"{chunk[0][0].rsplit('_', 2)[0]}_x{len(chunk)}_{short_hash([n for n, _ in chunk], 10)}"
            blocks[name] = Block(name, tuple(s for _, members in chunk for s in members), stacked=True)
    return blocks


def plan_stream_blocks(plan: Plan, streams_per_job: int = 1) -> dict[str, tuple[StreamSpec, ...]]:
    """Online streams that share a training job, one after the other (``streams_per_job`` > 1): up to that
    many streams of one dataset, in name order. A stream not listed trains in a job of its own. A pure
    function of the plan; grouping changes no stream's numbers (each runs on its own)."""
    if streams_per_job <= 1:
        return {}
    by_data: dict[str, list[StreamSpec]] = {}
    for spec in plan.streams.values():
        by_data.setdefault(spec.round.dataset.key, []).append(spec)
    blocks = {}
    for key, specs in by_data.items():
        specs.sort(key=lambda s: s.name)
        for start in range(0, len(specs), streams_per_job):
            chunk = tuple(specs[start:start + streams_per_job])
            if len(chunk) > 1:
                blocks[f"{key}_streams_x{len(chunk)}_{short_hash([s.name for s in chunk], 10)}"] = chunk
    return blocks


def block_stacks(specs: Sequence[RunSpec]) -> list[list[RunSpec]]:
    """A training job's stacks: its runs grouped by condition, in the job's order."""
    stacks: dict[str, list[RunSpec]] = {}
    for spec in specs:
        stacks.setdefault(condition_key(spec), []).append(spec)
    return list(stacks.values())


def condition_key(spec: RunSpec) -> str:
    """What the seeds of one stack share: the spec without its seed, the engine and the probes."""
    return short_hash({"condition": spec.seedless(), "engine": dataclasses.asdict(spec.engine),
                       "probes": [dataclasses.asdict(p) for p in spec.probes]}, 16)
