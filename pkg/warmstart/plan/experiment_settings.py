"""The settings every experiment kind resolves the same way (``ExperimentSettings``): seeds, batch size,
validation fraction, stop rule, engine, and the models, optimisers, inits, loss terms and probes it names
by label, each resolved into a checked spec; and how a kind makes runs and streams from them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from warmstart.components.inits import STRATEGIES
from warmstart.core.errors import ConfigError, SpecError
from warmstart.core.spec import (DatasetSpec, EngineSpec, InitSpec, ModelSpec, OptimizerSpec, ProbeSpec, RunSpec, StopSpec,
                                 StreamSpec, TermSpec)
from warmstart.plan.config_labels import (built, dataset_spec, grid_entries, init_spec, model_spec, optimizer_spec,
                                          probe_spec, term_spec)


def needs_parent(init: InitSpec) -> bool:
    return STRATEGIES[init.strategy].needs_parent


def setting(exp: Mapping[str, Any], config: Mapping[str, Any], name: str):
    """An experiment's own value, else the config-wide default under ``defaults:``."""
    if name in exp:
        return exp[name]
    return (config.get("defaults") or {})[name]


def stop_spec(exp, config, key) -> StopSpec:
    stop = {**(config.get("defaults") or {}).get("stop", {}), **(exp.get("stop") or {})}
    return built(StopSpec, stop, f"{key}.stop")


def engine_spec(exp, config, key) -> EngineSpec:
    return built(EngineSpec, {**(config.get("engine") or {}), **(exp.get("engine") or {})}, f"{key}.engine")


def labels_list(exp, name, key, default=None) -> list:
    values = exp.get(name, default)
    if not values:
        raise ConfigError(f"{key}.{name}: must be a non-empty list")
    if len(set(map(str, values))) != len(values):
        raise ConfigError(f"{key}.{name}: has duplicates: {values}")
    return list(values)


def experiment_datasets(exp, config, key, field_name="datasets") -> dict[str, DatasetSpec]:
    labels = labels_list(exp, field_name, key)
    return {d: dataset_spec(d, config, f"{key}.{field_name}[{i}]") for i, d in enumerate(labels)}


@dataclass
class ExperimentSettings:
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
        inits = self.inits.values() if inits is None else inits
        wanted = {f for init in inits for f in STRATEGIES[init.strategy].parent_files(init.options)}
        return parent.replace(keep_optimizer=True) if "optimizer" in wanted else parent


def experiment_settings(name: str, exp: Mapping[str, Any], config: Mapping[str, Any]) -> ExperimentSettings:
    key = f"experiments.{name}"
    seeds = labels_list(exp, "seeds", key)
    for i, seed in enumerate(seeds):
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(f"{key}.seeds[{i}]: must be a non-negative integer, got {seed!r}")
    models = labels_list(exp, "models", key)
    optimizers = labels_list(exp, "optimizers", key)
    inits = labels_list(exp, "inits", key, default=(config.get("defaults") or {}).get("inits"))
    init_specs = {label: init_spec(label, config, f"{key}.inits[{i}]") for i, label in enumerate(inits)}
    for _, condition, entry in grid_entries(exp, config, key, "init_grid", "inits"):
        init_specs[condition] = InitSpec(entry["name"], entry["options"])
    return ExperimentSettings(
        key=key, seeds=seeds,
        batch_size=setting(exp, config, "batch_size"),
        validation_fraction=float(setting(exp, config, "validation_fraction")),
        stop=stop_spec(exp, config, key),
        models={m: model_spec(m, config, f"{key}.models[{i}]") for i, m in enumerate(models)},
        optimizers={o: optimizer_spec(o, config, f"{key}.optimizers[{i}]") for i, o in enumerate(optimizers)},
        engine=engine_spec(exp, config, key),
        inits=init_specs,
        terms=tuple(term_spec(t, config, f"{key}.terms[{i}]") for i, t in enumerate(exp.get("terms") or ())),
        probes=tuple(probe_spec(p, config, f"{key}.probes[{i}]") for i, p in enumerate(exp.get("probes") or ())),
    )


def term_conditions(c: ExperimentSettings, exp, config) -> list[tuple[dict[str, Any], tuple[TermSpec, ...]]]:
    """The loss-term conditions of an experiment: (labels, terms) per value of its ``term_grid`` (each
    added to the experiment's ``terms``), or the one condition of its ``terms`` without a grid."""
    grid = grid_entries(exp, config, c.key, "term_grid", "terms")
    if not grid:
        return [({}, c.terms)]
    return [({"term": label, "condition": condition}, c.terms + (TermSpec(entry["name"], entry["options"]),))
            for label, condition, entry in grid]
