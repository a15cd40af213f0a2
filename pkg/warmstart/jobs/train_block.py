"""Train a block of runs on already-loaded data: one run, or the seeds of one condition as a stack.

Which engine trains a run is decided by what changes its numbers (``checks.stackable``: model, optimiser,
init strategy, terms), never by how many seeds share the job: a stackable run trains on the stacked engine,
alone as a stack of one. A seed's rows of the batched kernels and of the optimiser's update are computed
independently of the other rows, so its weights are bitwise the same alone or beside any other seeds
(tests/test_same_bits.py), and each run of a stack writes the same files as it would alone.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from warmstart.components.datasets import DeviceData
from warmstart.components.probes import PROBES, BoundProbe
from warmstart.components.splits import Split
from warmstart.components.terms import TERMS, BoundTerm
from warmstart.core.spec import RunSpec
from warmstart.engine.checkpoint import Checkpointing
from warmstart.engine.hooks import Hook
from warmstart.engine.intervention_hook import BoundIntervention
from warmstart.engine.loop import TrainData, TrainResult, fit, run_hooks
from warmstart.engine.precision import resolve_engine
from warmstart.engine.trainees import SingleModel, StackedModels, stack_state
from warmstart.jobs.run_files import CheckpointSaver
from warmstart.jobs.run_metrics import evaluate_test_split, run_metrics
from warmstart.jobs.seed_start import SeedStart, start_seed
from warmstart.plan.job_blocks import stackable
from warmstart.plan.spec_checks import check_names


def block_hooks(specs: Sequence[RunSpec], starts: Sequence[SeedStart], **savers) -> list[Hook]:
    """The hooks of a block of runs (one condition): its terms, probes, interventions and anchors, stacked
    over its seeds, and the ``savers`` options of ``engine.loop.run_hooks`` (export_at, keep_optimizer)."""
    spec = specs[0]
    terms = [BoundTerm(TERMS[t.name], dict(t.options), stack_state([s.term_states[k] for s in starts]))
             for k, t in enumerate(spec.terms)]
    probes = [BoundProbe(PROBES[p.name], dict(p.options)) for p in spec.probes]
    anchors = {}
    if starts[0].anchors:
        anchors = {a: stack_state([s.anchors[a] for s in starts]) for a in starts[0].anchors}
    interventions = [BoundIntervention(i.name, dict(i.options)) for i in spec.interventions]
    return run_hooks(terms=terms, probes=probes, anchors=anchors, interventions=interventions, **savers)


def train_data(specs: Sequence[RunSpec], data: DeviceData, splits: Sequence[Split]) -> TrainData:
    """Each seed's training and validation indices (and, with a parent on the same data, the ``old`` and
    ``new`` parts of its training set) as rows."""
    device = data.x_train.device
    train_idx = [split.train_indices(spec.train_fraction) for spec, split in zip(specs, splits)]
    val_idx = [split.validation for split in splits]
    if len({len(t) for t in train_idx}) != 1 or len({len(v) for v in val_idx}) != 1:
        raise ValueError(f"stacked seeds need equal set sizes; n_train {[len(t) for t in train_idx]}, "
                         f"n_val {[len(v) for v in val_idx]}")
    td = TrainData(data.x_train, data.y_train, torch.stack(train_idx).to(device), torch.stack(val_idx).to(device))
    parent = specs[0].parent
    if parent is not None and parent.dataset == specs[0].dataset:
        n_old = len(splits[0].train_indices(parent.train_fraction))
        td.subsets = {"old": td.train_idx[:, :n_old], "new": td.train_idx[:, n_old:]}
    return td


def check_stackable(specs: Sequence[RunSpec]) -> None:
    """Raise ValueError unless ``specs`` are one condition of the stacked engine at distinct seeds."""
    if not specs:
        raise ValueError("stacked training needs at least one spec")
    first = specs[0]
    if not stackable(first):
        raise ValueError(f"{first.name}: cannot be stacked (model {first.model.arch!r}, optimiser "
                         f"{first.optimizer.name!r}, init strategy, terms or interventions)")
    reference = first.seedless()
    for spec in specs[1:]:
        other = spec.seedless()
        if other != reference or spec.engine != first.engine or spec.probes != first.probes:
            diff = sorted(k for k in set(reference) | set(other) if other.get(k) != reference.get(k))
            raise ValueError(f"stacked specs must differ only in their seed: {spec.name} differs from "
                             f"{first.name} in {diff or ['engine or probes']}")
    seeds = [s.seed for s in specs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"stacked specs must have distinct seeds, got {seeds}")


def check_block(specs: Sequence[RunSpec], splits: Sequence[Split], parent_states: Sequence[dict | None]) -> bool:
    """Raise unless ``specs`` (with a split and a parent state each) make a block; whether it stacks."""
    if not len(specs) == len(splits) == len(parent_states):
        raise ValueError(f"got {len(specs)} specs, {len(splits)} splits and {len(parent_states)} parent states")
    on_stack = stackable(specs[0])
    if on_stack:
        check_stackable(specs)
    elif len(specs) != 1:
        raise ValueError(f"{specs[0].name}: cannot be stacked; one run at a time")
    for spec in specs:
        check_names(spec)
    return on_stack


def block_trainee(specs: Sequence[RunSpec], starts: Sequence[SeedStart], on_stack: bool, method: str, device):
    """The trainee of a block (its seeds' models, stacked or alone) and the engine it trains on."""
    resolved = resolve_engine(specs[0].engine, device, starts[0].model)
    if not on_stack:
        return SingleModel(starts[0].model, resolved), resolved
    # the stacked engine runs its own batched forward: nothing to compile (it never paid for the small
    # models that stack, benchmarks/README.md), and metrics.json records that it did not
    resolved = dataclasses.replace(resolved, compile=False)
    return StackedModels([s.model for s in starts], method), resolved


def checkpoint_savers(specs: Sequence[RunSpec], starts: Sequence[SeedStart], checkpoint_dir: Path | None) -> list[Hook]:
    """The hook that keeps the checkpoints the runs ask for (in ``checkpoint_dir/<run name>/``), if any do."""
    if not any(spec.checkpoints for spec in specs):
        return []
    if checkpoint_dir is None:
        raise ValueError("checkpoints: a run that keeps checkpoints needs a checkpoint_dir")
    return [CheckpointSaver(specs, [start.model for start in starts], Path(checkpoint_dir))]


def run_block(specs: Sequence[RunSpec], data: DeviceData, splits: Sequence[Split],
              parent_states: Sequence[dict | None], *, method: str = "bmm",
              parent_optimizer_states: Sequence[dict | None] | None = None,
              checkpointing: Checkpointing | None = None, checkpoint_dir: Path | None = None,
              on_epoch: Callable[[int, dict], None] | None = None,
              log: Callable[[str], None] | None = print) -> list[tuple[nn.Module, TrainResult, dict]]:
    """Train ``specs`` (one run, or the seeds of one condition as a stack: module docstring).
    ``splits[i]`` and ``parent_states[i]`` belong to ``specs[i]``. Returns, per spec and in order,
    (final model, TrainResult, metrics). A run that lists ``checkpoints`` keeps them in
    ``checkpoint_dir/<run name>/``."""
    on_stack = check_block(specs, splits, parent_states)
    parent_optimizer_states = parent_optimizer_states or [None] * len(specs)
    device = data.x_train.device
    starts = [start_seed(spec, data, split, parent, parent_optimizer_state=popt)
              for spec, split, parent, popt in zip(specs, splits, parent_states, parent_optimizer_states)]
    spec0 = specs[0]
    trainee, resolved = block_trainee(specs, starts, on_stack, method, device)
    td = train_data(specs, data, splits)
    hooks = block_hooks(specs, starts, export_at=set().union(*(spec.checkpoints for spec in specs)),
                        keep_optimizer=spec0.keep_optimizer)
    results = fit(trainee, spec0.optimizer, td, [s.seed for s in specs], batch_size=spec0.batch_size,
                  stop=spec0.stop, resolved=resolved, checkpointing=checkpointing, log=log,
                  hooks=hooks + checkpoint_savers(specs, starts, checkpoint_dir), on_epoch=on_epoch,
                  optimizer_state=starts[0].ctx.optimizer_state if not on_stack else None)
    n, n_val = td.train_idx.shape[1], td.val_idx.shape[1]
    return [(start.model, result, run_metrics(spec, result, start.model, n, n_val, device, start.ctx.cost,
                                              test=evaluate_test_split(start.model, data, result)))
            for spec, start, result in zip(specs, starts, results)]


def run_training(spec: RunSpec, data: DeviceData, split: Split, parent_state: dict | None,
                 **kwargs) -> tuple[nn.Module, TrainResult, dict]:
    """Train one run on already-loaded data: (final model, TrainResult, metrics)."""
    return run_block([spec], data, [split], [parent_state], **kwargs)[0]


def run_training_stacked(specs: Sequence[RunSpec], data: DeviceData, splits: Sequence[Split],
                         parent_states: Sequence[dict | None], **kwargs) -> list[tuple[nn.Module, TrainResult, dict]]:
    """Train the seeds of one condition together as a stack; per spec, what ``run_training`` returns."""
    check_stackable(specs)
    return run_block(specs, data, splits, parent_states, **kwargs)
