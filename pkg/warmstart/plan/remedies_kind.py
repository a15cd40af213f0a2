"""The remedies compared on one protocol (the leaderboard: ``experiment_kind("remedies")``): for each remedy,
every setting of its grid (an init strategy applied to the phase-1 model; or, with the warm start, a loss
term, an intervention or another optimiser), beside the ``target`` (random init) and the ``baseline``
(plain warm start), on the batch protocol and/or the online one.

A condition of the comparison is a tuple (role, remedy label, setting, init, extra fields of its runs);
``remedy_conditions`` makes those of one remedy's grid.
"""
from __future__ import annotations

import itertools
from typing import Any, Mapping

from warmstart.core.errors import ConfigError
from warmstart.core.spec import InitSpec, InterventionSpec, TermSpec
from warmstart.plan.config_labels import checked, grid_entries, optimizer_spec
from warmstart.plan.config_schema import FRACTION_OPEN, LABELS
from warmstart.plan.experiment_kinds import RUN_TABLES, STREAM_TABLES, experiment_kind
from warmstart.plan.experiment_settings import ExperimentSettings, experiment_datasets, experiment_settings, needs_parent, setting
from warmstart.plan.planned import Plan

REMEDY_SECTIONS = ("inits", "terms", "interventions", "optimizers")
PROTOCOLS = ("batch", "online")


@experiment_kind("remedies", tables=RUN_TABLES + STREAM_TABLES, required=("datasets", "target", "baseline", "remedies"),
                 properties={
    "datasets": LABELS,
    "phase1_fraction": FRACTION_OPEN,
    "target": {"type": "string", "description": "label under 'inits:' of what a remedy tries to match (random init)"},
    "baseline": {"type": "string", "description": "label under 'inits:' of the plain warm start"},
    "remedies": {"type": "object", "minProperties": 1, "description":
                 "label under 'inits:', 'terms:', 'interventions:' or 'optimizers:' -> {option: [values]} (a "
                 "term, an intervention or an optimiser goes with the warm start)",
                 "additionalProperties": {"type": ["object", "null"],
                                          "additionalProperties": {"type": "array", "minItems": 1}}},
    "per_model": {"type": "object", "description":
                  "model label -> {remedy label -> {option: [values]}}: that remedy's grid on that model, in "
                  "place of the one under 'remedies' (the comparison's per-architecture settings)",
                  "additionalProperties": {"type": "object", "additionalProperties": {
                      "type": ["object", "null"], "additionalProperties": {"type": "array", "minItems": 1}}}},
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
    c = experiment_settings(name, {**exp, "inits": [exp["target"], exp["baseline"]]}, config)
    target, baseline = c.inits[exp["target"]], c.inits[exp["baseline"]]
    if needs_parent(target) or not needs_parent(baseline):
        raise ConfigError(f"{c.key}: the target must start afresh and the baseline from the phase-1 model")
    protocols = exp.get("protocols") or (["batch", "online"] if exp.get("online") is not None else ["batch"])
    if "online" in protocols and exp.get("online") is None:
        raise ConfigError(f"{c.key}.protocols: 'online' needs an 'online:' section (round_size, max_samples, ...)")
    per_model = exp.get("per_model") or {}
    check_per_model(c, exp, per_model)
    fixed = [("target", exp["target"], exp["target"], target, {}),
             ("baseline", exp["baseline"], exp["baseline"], baseline, {})]
    conditions_of = {m: fixed + model_conditions(c, exp, config, per_model.get(m, {}), m, baseline) for m in c.models}
    datasets = experiment_datasets(exp, config, c.key)
    phase1_fraction = float(setting(exp, config, "phase1_fraction"))
    if "batch" in protocols:
        plan_batch_protocol(plan, name, c, datasets, conditions_of, phase1_fraction, exp.get("optimizer_phases", [2]))
    if "online" in protocols:
        plan_online_protocol(plan, name, c, exp["online"], config, datasets, conditions_of)


def check_per_model(c: ExperimentSettings, exp: Mapping[str, Any], per_model: Mapping[str, Any]) -> None:
    """Every model of ``per_model`` is one of the experiment's, and each of its grids one of its remedies'."""
    for m, grids in per_model.items():
        if m not in c.models:
            raise ConfigError(f"{c.key}.per_model.{m}: not one of the experiment's models {list(c.models)}")
        for label in grids:
            if label not in exp["remedies"]:
                raise ConfigError(f"{c.key}.per_model.{m}.{label}: not one of the experiment's remedies "
                                  f"{list(exp['remedies'])}")


def model_conditions(c: ExperimentSettings, exp, config, own_grids: Mapping[str, Any], model: str, baseline) -> list[tuple]:
    """The remedies' conditions on ``model``: each remedy's grid, or the model's own (``own_grids``)."""
    return [cond for label, grid in exp["remedies"].items()
            for cond in remedy_conditions(
                c, label, own_grids.get(label, grid), baseline, config,
                f"{c.key}.per_model.{model}" if label in own_grids else f"{c.key}.remedies")]


def plan_batch_protocol(plan: Plan, name: str, c: ExperimentSettings, datasets, conditions_of, phase1_fraction: float,
                        optimizer_phases) -> None:
    """Per dataset x model x optimiser x seed: phase 1 on ``phase1_fraction`` of the pool, then each
    condition on the whole pool (an optimiser remedy with phase 1 in ``optimizer_phases``: from its own
    phase 1)."""
    for d, m, o, seed in itertools.product(datasets, c.models, c.optimizers, c.seeds):
        labels = {**c.labels(d, m, o, seed), "protocol": "batch"}
        children = [init for _, _, _, init, _ in conditions_of[m]]
        phase1 = c.parent_of(c.run(datasets[d], m, o, seed, train_fraction=phase1_fraction), children)
        plan.add(name, phase1, **labels, init=phase1.init.strategy, baseline=True, phase=1, role="phase1",
                 remedy=None, setting=None)
        for role, remedy, setting_label, init, fields in conditions_of[m]:
            parent = phase1
            if "optimizer" in fields and 1 in optimizer_phases:
                parent = plan.add(name, phase1.replace(optimizer=fields["optimizer"]), **labels, init=phase1.init.strategy,
                                  baseline=True, phase=1, role="phase1", remedy=remedy, setting=setting_label)
            run = parent.replace(train_fraction=1.0, init=init, parent=parent if needs_parent(init) else None,
                                 keep_optimizer=False, **fields)
            plan.add(name, run, **labels, init=setting_label, baseline=not needs_parent(init), phase=2, role=role,
                     remedy=remedy, setting=setting_label)


def plan_online_protocol(plan: Plan, name: str, c: ExperimentSettings, online: Mapping[str, Any], config, datasets,
                         conditions_of) -> None:
    """One stream per condition (every setting of each remedy's grid, or its first), dataset, model and
    seed, setting by setting of each remedy (a model may have its own grid)."""
    policy = online.get("policy", "random")
    checked("policies", policy, {}, f"{c.key}.online.policy")
    first_optimizer = next(iter(c.optimizers))  # a label c.run knows; the stream's own optimiser replaces it
    optimizer = online.get("optimizer", first_optimizer)
    opt = optimizer_spec(optimizer, config, f"{c.key}.online.optimizer")
    first_only = online.get("settings", "all") == "first"
    seeds = online.get("seeds", c.seeds)

    def add_stream(d: str, m: str, seed: int, role: str, remedy: str, setting_label: str, init, fields) -> None:
        template = c.run(datasets[d], m, first_optimizer, seed, **{"optimizer": opt, **fields})
        stream = c.stream(template, ".online", policy=policy, init=init,
                          round_size=online.get("round_size", 100), max_samples=online.get("max_samples"))
        plan.add(name, stream, **{**c.labels(d, m, first_optimizer, seed), "optimizer": optimizer,
                                 "lr": opt.lr}, protocol="online", policy=policy, init=setting_label,
                 baseline=not needs_parent(init), role=role, remedy=remedy, setting=setting_label)
    for remedy in dict.fromkeys(cond[1] for conds in conditions_of.values() for cond in conds):
        settings = {m: [cond for cond in conditions_of[m] if cond[1] == remedy][:1 if first_only else None]
                    for m in c.models}
        for k in range(max(map(len, settings.values()))):
            for d, m, seed in itertools.product(datasets, c.models, seeds):
                if k < len(settings[m]):
                    add_stream(d, m, seed, *settings[m][k])


def remedy_conditions(c: ExperimentSettings, label: str, grid, baseline, config: Mapping[str, Any], key: str) -> list[tuple]:
    """(role, remedy label, setting, init, extra fields of its runs) for every setting of one remedy's grid
    (``key``: where the grid is written): an init strategy applied to the phase-1 model, or the warm start
    with a loss term, an intervention or another optimiser."""
    sections = [sec for sec in REMEDY_SECTIONS if label in (config.get(sec) or {})]
    if len(sections) != 1:
        raise ConfigError(f"{key}.{label}: must be a label under exactly one of "
                          f"{', '.join(repr(sec + ':') for sec in REMEDY_SECTIONS)}"
                          + (f" (it is under {sections})" if sections else ""))
    section = sections[0]
    if section == "optimizers":
        if grid:
            raise ConfigError(f"{key}.{label}: an optimiser remedy takes no grid; define one label under "
                              "'optimizers:' per setting")
        return [("remedy", label, label, baseline, {"optimizer": optimizer_spec(label, config, f"{key}.{label}")})]
    conditions = []
    for _, setting_name, entry in grid_entries({"grid": {label: grid or {}}}, config, key, "grid", section, allow_empty=True):
        if section == "inits":
            conditions.append(("remedy", label, setting_name, InitSpec(entry["name"], entry["options"]), {}))
        elif section == "terms":
            conditions.append(("remedy", label, setting_name, baseline,
                               {"terms": c.terms + (TermSpec(entry["name"], entry["options"]),)}))
        else:
            conditions.append(("remedy", label, setting_name, baseline,
                               {"interventions": (InterventionSpec(entry["name"], entry["options"]),)}))
    return conditions
