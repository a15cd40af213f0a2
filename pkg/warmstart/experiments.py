"""From config to runs: expand the experiments declared in config.yaml into validated RunSpecs.

The config names datasets, models and optimisers once (``datasets:``, ``models:``, ``optimizers:``)
and experiments refer to them by label. Each experiment has a ``kind`` that is looked up in
``EXPERIMENT_KINDS``; a kind turns one experiment's settings into planned runs, each with the labels
its tables and figures need (condition, phase, init, seed). Runs are keyed by their content-addressed
name, so a run needed by two experiments appears once in the plan and is trained once.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .spec import DatasetSpec, EngineSpec, InitSpec, ModelSpec, OptimizerSpec, RunSpec, SpecError, StopSpec
from .splits import split_name
from .streams import StreamSpec


class ConfigError(ValueError):
    """A config value is invalid; the message starts with the key path, e.g. ``experiments.table1.seeds``."""


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

    def add(self, experiment: str, spec: "RunSpec | StreamSpec", **labels: Any):
        (self.streams if isinstance(spec, StreamSpec) else self.runs).setdefault(spec.name, spec)
        self.experiments.setdefault(experiment, []).append(PlannedRun(spec, labels))
        return spec

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


def run_split_name(spec: "RunSpec | StreamSpec") -> str:
    spec = spec.round if isinstance(spec, StreamSpec) else spec
    return split_name(spec.dataset.key, spec.seed, spec.validation_fraction)


# -- resolving labels ---------------------------------------------------------------------------------

def _resolve(section: str, label: str, config: Mapping[str, Any], key: str, name_field: str) -> tuple[str, dict]:
    entries = config.get(section) or {}
    if label not in entries:
        raise ConfigError(f"{key}: unknown {section[:-1]} {label!r}; define it under '{section}:' "
                          f"(defined: {sorted(entries)})")
    options = dict(entries[label] or {})
    return options.pop(name_field, label), options


def dataset_spec(label: str, config, key: str) -> DatasetSpec:
    from .datasets import DATASETS

    entries = config.get("datasets") or {}
    options = dict(entries.get(label) or {})
    name = options.pop("name", label)
    if name not in DATASETS:
        raise ConfigError(f"{key}: unknown dataset {name!r}; known: {sorted(DATASETS)}")
    return DatasetSpec(name, options)


def model_spec(label: str, config, key: str) -> ModelSpec:
    from .models import MODELS

    arch, options = _resolve("models", label, config, key, "arch")
    if arch not in MODELS:
        raise ConfigError(f"models.{label}.arch: unknown model {arch!r}; known: {sorted(MODELS)}")
    return ModelSpec(arch, options)


def optimizer_spec(label: str, config, key: str) -> OptimizerSpec:
    name, options = _resolve("optimizers", label, config, key, "name")
    try:
        spec = OptimizerSpec(name=name, **options)
        spec.validate(f"optimizers.{label}")
    except TypeError as e:
        raise ConfigError(f"optimizers.{label}: {e}") from None
    except SpecError as e:
        raise ConfigError(str(e)) from None
    return spec


def _setting(exp: Mapping[str, Any], config: Mapping[str, Any], name: str):
    """An experiment's own value, else the config-wide default under ``defaults:``."""
    if name in exp:
        return exp[name]
    return (config.get("defaults") or {})[name]


def _built(cls, settings: dict, key: str):
    """``cls(**settings)``, validated; a bad field becomes a ConfigError naming ``key``."""
    try:
        spec = cls(**settings)
        spec.validate(key)
    except TypeError as e:
        raise ConfigError(f"{key}: {e}") from None
    except SpecError as e:
        raise ConfigError(str(e)) from None
    return spec


def stop_spec(exp, config, key) -> StopSpec:
    stop = {**(config.get("defaults") or {}).get("stop", {}), **(exp.get("stop") or {})}
    return _built(StopSpec, stop, f"{key}.stop")


def engine_spec(exp, config, key) -> EngineSpec:
    return _built(EngineSpec, {**(config.get("engine") or {}), **(exp.get("engine") or {})}, f"{key}.engine")


def _labels_list(exp, name, key) -> list:
    values = exp.get(name)
    if not values:
        raise ConfigError(f"{key}.{name}: must be a non-empty list")
    if len(set(map(str, values))) != len(values):
        raise ConfigError(f"{key}.{name}: has duplicates: {values}")
    return list(values)


# -- experiment kinds ---------------------------------------------------------------------------------

EXPERIMENT_KINDS: dict[str, Callable[[Plan, str, Mapping[str, Any], Mapping[str, Any]], None]] = {}


def experiment_kind(name: str):
    def decorate(fn):
        EXPERIMENT_KINDS[name] = fn
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

    def run(self, dataset: DatasetSpec, model: str, optimizer: str, seed: int, **fields: Any) -> RunSpec:
        try:
            return RunSpec(dataset=dataset, model=self.models[model], optimizer=self.optimizers[optimizer],
                           batch_size=self.batch_size, stop=self.stop, seed=seed,
                           validation_fraction=self.validation_fraction, engine=self.engine, **fields)
        except SpecError as e:
            raise ConfigError(f"{self.key}: {e}") from None

    def labels(self, dataset: str, model: str, optimizer: str, seed: int) -> dict[str, Any]:
        return dict(dataset=dataset, model=model, optimizer=optimizer, lr=self.optimizers[optimizer].lr,
                    batch_size=self.batch_size, seed=seed)


def common_settings(name: str, exp: Mapping[str, Any], config: Mapping[str, Any]) -> Common:
    key = f"experiments.{name}"
    seeds = _labels_list(exp, "seeds", key)
    for i, seed in enumerate(seeds):
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(f"{key}.seeds[{i}]: must be a non-negative integer, got {seed!r}")
    models = _labels_list(exp, "models", key)
    optimizers = _labels_list(exp, "optimizers", key)
    return Common(
        key=key, seeds=seeds,
        batch_size=_setting(exp, config, "batch_size"),
        validation_fraction=float(_setting(exp, config, "validation_fraction")),
        stop=stop_spec(exp, config, key),
        models={m: model_spec(m, config, f"{key}.models[{i}]") for i, m in enumerate(models)},
        optimizers={o: optimizer_spec(o, config, f"{key}.optimizers[{i}]") for i, o in enumerate(optimizers)},
        engine=engine_spec(exp, config, key),
    )


def _datasets(exp, config, key, field_name="datasets") -> dict[str, DatasetSpec]:
    labels = _labels_list(exp, field_name, key)
    return {d: dataset_spec(d, config, f"{key}.{field_name}[{i}]") for i, d in enumerate(labels)}


def _inits(exp, key, allowed) -> list[str]:
    inits = _labels_list({"inits": exp.get("inits", ["warm", "random"])}, "inits", key)
    for i, init in enumerate(inits):
        if init not in allowed:
            raise ConfigError(f"{key}.inits[{i}]: must be one of {list(allowed)}, got {init!r}")
    return inits


@experiment_kind("batch")
def plan_batch(plan: Plan, name: str, exp: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """The paper's batch experiment (Table 1, Figure 1): train on ``phase1_fraction`` of the pool
    (phase 1), then on all of it (phase 2), starting from the phase-1 weights (``warm``) or a fresh
    init (``random``). One phase-1 run per dataset x model x optimiser x seed serves every warm
    condition that starts from it."""
    c = common_settings(name, exp, config)
    phase1_fraction = float(_setting(exp, config, "phase1_fraction"))
    if not 0 < phase1_fraction < 1:
        raise ConfigError(f"{c.key}.phase1_fraction: must be in (0, 1), got {phase1_fraction}")
    inits = _inits(exp, c.key, ("warm", "random"))
    datasets = _datasets(exp, config, c.key)
    for d, m, o, seed in itertools.product(datasets, c.models, c.optimizers, c.seeds):
        labels = c.labels(d, m, o, seed)
        phase1 = c.run(datasets[d], m, o, seed, train_fraction=phase1_fraction)
        plan.add(name, phase1, **labels, init="random", phase=1)
        for init in inits:
            parent = phase1 if init == "warm" else None
            phase2 = phase1.replace(train_fraction=1.0, init=InitSpec(init), parent=parent)
            plan.add(name, phase2, **labels, init=init, phase=2)


@experiment_kind("online")
def plan_online(plan: Plan, name: str, exp: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """Online learning (Figures 2, 8, 9): one stream per dataset x model x optimiser x policy x init x
    seed; each round adds ``round_size`` samples chosen by the policy and retrains to convergence."""
    from .policies import POLICIES

    c = common_settings(name, exp, config)
    policies = _labels_list(exp, "policies", c.key)
    for i, p in enumerate(policies):
        if p not in POLICIES:
            raise ConfigError(f"{c.key}.policies[{i}]: unknown policy {p!r}; known: {sorted(POLICIES)}")
    inits = _inits(exp, c.key, ("warm", "random"))
    round_size, max_samples = exp.get("round_size", 100), exp.get("max_samples")
    datasets = _datasets(exp, config, c.key)
    for d, m, o, policy, init, seed in itertools.product(datasets, c.models, c.optimizers, policies, inits, c.seeds):
        template = c.run(datasets[d], m, o, seed)
        try:
            stream = StreamSpec(template, policy=policy, init=InitSpec(init), round_size=round_size,
                                max_samples=max_samples)
        except SpecError as e:
            raise ConfigError(f"{c.key}: {e}") from None
        plan.add(name, stream, **c.labels(d, m, o, seed), policy=policy, init=init)


@experiment_kind("transfer")
def plan_transfer(plan: Plan, name: str, exp: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """Transfer (Figure 3): a model trained to convergence on the whole ``source`` pool warm-starts
    training on each fraction of the ``target`` pool, against a random init on the same fraction.
    Tensors that do not fit the target (a head with another class count, a stem with other input
    channels) keep their fresh initialisation: see the ``transfer`` init strategy."""
    c = common_settings(name, exp, config)
    source = dataset_spec(exp["source"], config, f"{c.key}.source")
    target = dataset_spec(exp["target"], config, f"{c.key}.target")
    fractions = _labels_list(exp, "fractions", c.key)
    for i, f in enumerate(fractions):
        if not isinstance(f, (int, float)) or isinstance(f, bool) or not 0 < f <= 1:
            raise ConfigError(f"{c.key}.fractions[{i}]: must be in (0, 1], got {f!r}")
    inits = _inits(exp, c.key, ("warm", "random"))
    for m, o, seed in itertools.product(c.models, c.optimizers, c.seeds):
        labels = c.labels(exp["target"], m, o, seed)
        source_run = c.run(source, m, o, seed)
        plan.add(name, source_run, **{**labels, "dataset": exp["source"]}, init="random", phase=1, fraction=1.0)
        for f, init in itertools.product(fractions, inits):
            parent = source_run if init == "warm" else None
            strategy = "transfer" if init == "warm" else "random"
            target_run = c.run(target, m, o, seed, train_fraction=float(f), init=InitSpec(strategy), parent=parent)
            plan.add(name, target_run, **labels, init=init, phase=2, fraction=float(f))


# -- the whole config ---------------------------------------------------------------------------------

def plan_experiments(config: Mapping[str, Any], only: list[str] | None = None) -> Plan:
    """Expand every experiment in ``config`` (or those named in ``only``) into a Plan."""
    plan = Plan()
    experiments = config.get("experiments") or {}
    for name, exp in experiments.items():
        if only is not None and name not in only:
            continue
        kind = exp.get("kind")
        if kind not in EXPERIMENT_KINDS:
            raise ConfigError(f"experiments.{name}.kind: unknown kind {kind!r}; known: {sorted(EXPERIMENT_KINDS)}")
        EXPERIMENT_KINDS[kind](plan, name, exp, config)
        plan.experiment_config[name] = dict(exp)
    return plan
