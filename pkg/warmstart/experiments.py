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

from .spec import DatasetSpec, InitSpec, ModelSpec, OptimizerSpec, RunSpec, SpecError, StopSpec
from .splits import split_name


class ConfigError(ValueError):
    """A config value is invalid; the message starts with the key path, e.g. ``experiments.table1.seeds``."""


@dataclass(frozen=True)
class PlannedRun:
    spec: RunSpec
    labels: dict[str, Any]  # what tables and figures group by; not part of the run's identity


@dataclass
class Plan:
    runs: dict[str, RunSpec] = field(default_factory=dict)  # run name -> spec, every run once
    experiments: dict[str, list[PlannedRun]] = field(default_factory=dict)
    experiment_config: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, experiment: str, spec: RunSpec, **labels: Any) -> RunSpec:
        self.runs.setdefault(spec.name, spec)
        self.experiments.setdefault(experiment, []).append(PlannedRun(spec, labels))
        return spec

    @property
    def datasets(self) -> dict[str, DatasetSpec]:
        return {s.dataset.key: s.dataset for s in self.runs.values()}

    @property
    def splits(self) -> dict[str, tuple[DatasetSpec, int, float]]:
        """Split name -> (dataset, seed, validation fraction), for every split some run needs."""
        return {run_split_name(s): (s.dataset, s.seed, s.validation_fraction) for s in self.runs.values()}


def run_split_name(spec: RunSpec) -> str:
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


def stop_spec(exp, config, key) -> StopSpec:
    stop = {**(config.get("defaults") or {}).get("stop", {}), **(exp.get("stop") or {})}
    try:
        spec = StopSpec(**stop)
        spec.validate(f"{key}.stop")
    except TypeError as e:
        raise ConfigError(f"{key}.stop: {e}") from None
    except SpecError as e:
        raise ConfigError(str(e)) from None
    return spec


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


@experiment_kind("batch")
def plan_batch(plan: Plan, name: str, exp: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """The paper's batch experiment (Table 1, Figure 1): train on ``phase1_fraction`` of the pool
    (phase 1), then on all of it (phase 2), starting from the phase-1 weights (``warm``) or a fresh
    init (``random``). One phase-1 run per dataset x model x optimiser x seed serves every warm
    condition that starts from it."""
    key = f"experiments.{name}"
    phase1_fraction = float(_setting(exp, config, "phase1_fraction"))
    if not 0 < phase1_fraction < 1:
        raise ConfigError(f"{key}.phase1_fraction: must be in (0, 1), got {phase1_fraction}")
    inits = _labels_list({"inits": exp.get("inits", ["warm", "random"])}, "inits", key)
    for i, init in enumerate(inits):
        if init not in ("warm", "random"):
            raise ConfigError(f"{key}.inits[{i}]: the batch experiment compares 'warm' and 'random', got {init!r}")
    seeds = _labels_list(exp, "seeds", key)
    for i, seed in enumerate(seeds):
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(f"{key}.seeds[{i}]: must be a non-negative integer, got {seed!r}")
    batch_size = _setting(exp, config, "batch_size")
    validation_fraction = float(_setting(exp, config, "validation_fraction"))
    stop = stop_spec(exp, config, key)

    datasets = _labels_list(exp, "datasets", key)
    models = _labels_list(exp, "models", key)
    optimizers = _labels_list(exp, "optimizers", key)
    resolved_d = {d: dataset_spec(d, config, f"{key}.datasets[{i}]") for i, d in enumerate(datasets)}
    resolved_m = {m: model_spec(m, config, f"{key}.models[{i}]") for i, m in enumerate(models)}
    resolved_o = {o: optimizer_spec(o, config, f"{key}.optimizers[{i}]") for i, o in enumerate(optimizers)}

    for d, m, o, seed in itertools.product(datasets, models, optimizers, seeds):
        condition = dict(dataset=d, model=m, optimizer=o, lr=resolved_o[o].lr, batch_size=batch_size, seed=seed)
        try:
            phase1 = RunSpec(dataset=resolved_d[d], model=resolved_m[m], optimizer=resolved_o[o],
                             batch_size=batch_size, stop=stop, seed=seed, train_fraction=phase1_fraction,
                             validation_fraction=validation_fraction)
        except SpecError as e:
            raise ConfigError(f"{key}: {e}") from None
        plan.add(name, phase1, **condition, init="random", phase=1)
        for init in inits:
            parent = phase1 if init == "warm" else None
            phase2 = phase1.replace(train_fraction=1.0, init=InitSpec(init), parent=parent)
            plan.add(name, phase2, **condition, init=init, phase=2)


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
