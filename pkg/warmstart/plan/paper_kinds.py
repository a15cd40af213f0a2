"""The experiment kinds of the paper: the batch experiment (Table 1, Figure 1, Tables 2-5, Figure 6), the
hyperparameter sweep (Figures 4, 5), the checkpoints (Figure 7), online learning (Figures 2, 8, 9) and
transfer (Figure 3). Each turns one experiment's settings into planned runs (or streams), with the labels
its tables and figures need (condition, phase, init, seed).
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Mapping

from warmstart.core.errors import ConfigError
from warmstart.core.spec import StopSpec
from warmstart.plan.config_labels import built, checked, dataset_spec, optimizer_spec
from warmstart.plan.config_schema import FRACTION_OPEN, GRID, LABELS, STOP
from warmstart.plan.experiment_kinds import RUN_TABLES, STREAM_TABLES, experiment_kind
from warmstart.plan.experiment_settings import (experiment_datasets, experiment_settings, labels_list, needs_parent,
                                                setting, term_conditions)
from warmstart.plan.planned import Plan

PHASE2 = {"type": "object", "additionalProperties": False, "description": "phase 2's own settings", "properties": {
    "optimizer": {"type": "string", "description": "label under 'optimizers:' (default: the phase-1 one)"},
    "batch_size": {"type": "integer", "minimum": 1},
    "stop": STOP}}


@experiment_kind("batch", tables=RUN_TABLES, required=("datasets",), properties={
    "datasets": LABELS,
    "phase1_fraction": {**FRACTION_OPEN, "description": "phase 1 trains on this fraction of the pool"},
    "phase2": PHASE2,
    "term_grid": {**GRID, "description": "label under 'terms:' -> {option: [values]}: one condition per value"},
    "init_grid": {**GRID, "description": "label under 'inits:' -> {option: [values]}: one init per value"},
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
    c = experiment_settings(name, exp, config)
    phase1_fraction = float(setting(exp, config, "phase1_fraction"))
    if not 0 < phase1_fraction < 1:
        raise ConfigError(f"{c.key}.phase1_fraction: must be in (0, 1), got {phase1_fraction}")
    datasets = experiment_datasets(exp, config, c.key)
    phase2 = dict(exp.get("phase2") or {})
    p2_optimizer = optimizer_spec(phase2["optimizer"], config, f"{c.key}.phase2.optimizer") if "optimizer" in phase2 else None
    p2_stop = built(StopSpec, {**dataclasses.asdict(c.stop), **phase2["stop"]}, f"{c.key}.phase2.stop") if "stop" in phase2 else None
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
    "datasets": LABELS,
    "phase1_fraction": FRACTION_OPEN,
    "batch_sizes": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": "integer", "minimum": 1}},
    "lrs": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": "number", "exclusiveMinimum": 0}},
})
def plan_sweep(plan: Plan, name: str, exp: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """The hyperparameter sweep (Figures 4 and 5): every batch size x learning rate, chosen separately for
    phase 1 and phase 2. Each phase-1 setting is trained once and warm-starts one run per phase-2 setting
    (every init that needs a parent); an init without a parent runs once per setting. The grid is the
    two lists, written once; each run is labelled with its phase-1 and phase-2 batch size and lr."""
    c = experiment_settings(name, exp, config)
    phase1_fraction = float(setting(exp, config, "phase1_fraction"))
    settings = list(itertools.product(exp["batch_sizes"], exp["lrs"]))
    datasets = experiment_datasets(exp, config, c.key)
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
    "datasets": LABELS,
    "phase1_fraction": FRACTION_OPEN,
    "checkpoint_every": {"type": "integer", "minimum": 1, "description": "k: phase 1 keeps its weights every k epochs"},
    "checkpoints": {"type": "integer", "minimum": 1, "description": "n: phase 1 trains n * k epochs"},
})
def plan_checkpoints(plan: Plan, name: str, exp: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """How quickly generalisation is damaged (Figure 7): phase 1 trains ``checkpoints`` x
    ``checkpoint_every`` epochs (a fixed number, so every checkpoint exists) and keeps its weights every
    ``checkpoint_every`` epochs; each checkpoint warm-starts its own phase-2 run (every init that needs a
    parent), against the inits without a parent. The checkpoints are outputs of the one phase-1 job."""
    c = experiment_settings(name, exp, config)
    phase1_fraction = float(setting(exp, config, "phase1_fraction"))
    every, count = exp["checkpoint_every"], exp["checkpoints"]
    epochs = [every * (i + 1) for i in range(count)]
    datasets = experiment_datasets(exp, config, c.key)
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
    "datasets": LABELS,
    "policies": {**LABELS, "description": "entries of warmstart.components.policies.POLICIES"},
    "round_size": {"type": "integer", "minimum": 1, "default": 100},
    "max_samples": {"type": ["integer", "null"], "minimum": 1},
})
def plan_online(plan: Plan, name: str, exp: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """Online learning (Figures 2, 8, 9): one stream per dataset x model x optimiser x policy x init x
    seed; each round adds ``round_size`` samples chosen by the policy and retrains to convergence."""
    c = experiment_settings(name, exp, config)
    policies = labels_list(exp, "policies", c.key)
    for i, p in enumerate(policies):
        checked("policies", p, {}, f"{c.key}.policies[{i}]")
    round_size, max_samples = exp.get("round_size", 100), exp.get("max_samples")
    datasets = experiment_datasets(exp, config, c.key)
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
    c = experiment_settings(name, exp, config)
    source = dataset_spec(exp["source"], config, f"{c.key}.source")
    target = dataset_spec(exp["target"], config, f"{c.key}.target")
    fractions = labels_list(exp, "fractions", c.key)
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
