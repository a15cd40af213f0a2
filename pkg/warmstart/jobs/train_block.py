"""Train a block of runs on already-loaded data: one run, or a stack of runs that differ only in their
seed, init strategy, parent, learning rate, loss-term coefficients and unit-reset options
(``job_blocks.stack_key``: each row's start, rate, coefficients and reset options are its own, its
training the same code for every row).

Which engine trains a run is decided by what changes its numbers (``job_blocks.stackable``: model,
optimiser, init strategy, terms), never by how many runs share the job: a stackable run trains on the
stacked engine, alone as a stack of one. A row of the batched kernels and of the optimiser's update is
computed independently of the other rows, so a run's weights are bitwise the same alone or beside any
other rows (tests/test_same_bits.py, tests/test_stacks.py), and each run of a stack writes the same files
as it would alone.
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
from warmstart.plan.job_blocks import PER_ROW_FIELDS, PER_ROW_SETTINGS, stack_key, stack_shared, stackable
from warmstart.plan.spec_checks import check_names


def block_hooks(specs: Sequence[RunSpec], starts: Sequence[SeedStart], **savers) -> list[Hook]:
    """The hooks of a stack (rows of one ``stack_key``, so one list of terms, probes and interventions):
    its terms (each row with its own coefficient), probes, interventions (each set of a unit
    intervention's options on its own rows) and anchors, stacked over its rows, and the ``savers`` options
    of ``engine.loop.run_hooks`` (export_at, keep_optimizer)."""
    spec = specs[0]
    device = next(starts[0].model.parameters()).device  # where the rows' weights, and so their terms, are
    terms = [BoundTerm.of_rows(TERMS[t.name], [s.terms[k].options for s in specs],
                               stack_state([s.term_states[k] for s in starts]), device)
             for k, t in enumerate(spec.terms)]
    probes = [BoundProbe(PROBES[p.name], dict(p.options)) for p in spec.probes]
    anchors = {}
    if starts[0].anchors:
        anchors = {a: stack_state([s.anchors[a] for s in starts]) for a in starts[0].anchors}
    interventions = [bound for k, i in enumerate(spec.interventions)
                     for bound in BoundIntervention.of_rows(i.name, [s.interventions[k].options for s in specs])]
    return run_hooks(terms=terms, probes=probes, anchors=anchors, interventions=interventions, **savers)


def train_data(specs: Sequence[RunSpec], data: DeviceData, splits: Sequence[Split]) -> TrainData:
    """Each row's training and validation indices (and, for probes of a run whose parent trained on the same
    data, the ``old`` and ``new`` parts of its training set) as rows."""
    device = data.x_train.device
    train_idx = [split.train_indices(spec.train_fraction) for spec, split in zip(specs, splits)]
    val_idx = [split.validation for split in splits]
    if len({len(t) for t in train_idx}) != 1 or len({len(v) for v in val_idx}) != 1:
        raise ValueError(f"stacked seeds need equal set sizes; n_train {[len(t) for t in train_idx]}, "
                         f"n_val {[len(v) for v in val_idx]}")
    td = TrainData(data.x_train, data.y_train, torch.stack(train_idx).to(device), torch.stack(val_idx).to(device))
    parent = specs[0].parent  # with probes, every row's parent saw the same part (``stack_key``)
    if specs[0].probes and parent is not None and parent.dataset == specs[0].dataset:
        n_old = len(splits[0].train_indices(parent.train_fraction))
        td.subsets = {"old": td.train_idx[:, :n_old], "new": td.train_idx[:, n_old:]}
    return td


def check_stackable(specs: Sequence[RunSpec]) -> None:
    """Raise ValueError unless ``specs`` are distinct runs of the stacked engine that may share a stack:
    they differ only in what a row's start decides (``job_blocks.PER_ROW_FIELDS``: seed, init strategy,
    parent) and in what each row trains with its own (``PER_ROW_SETTINGS``: an elementwise optimiser's
    learning rate, the terms' coefficients), so that training reads the rest the same way (one
    ``stack_key``)."""
    if not specs:
        raise ValueError("stacked training needs at least one spec")
    first = specs[0]
    if not stackable(first):
        raise ValueError(f"{first.name}: cannot be stacked (model {first.model.arch!r}, optimiser "
                         f"{first.optimizer.name!r}, init strategy, terms or interventions)")
    key = stack_key(first)
    for spec in specs[1:]:
        if stack_key(spec) != key:
            reference, other = stack_shared(first), stack_shared(spec)
            diff = sorted(k for k in set(reference) | set(other) if other.get(k) != reference.get(k))
            raise ValueError(f"stacked specs may differ only in {', '.join(PER_ROW_FIELDS + PER_ROW_SETTINGS)}: "
                             f"{spec.name} differs from {first.name} in "
                             f"{diff or ['engine, probes, generation or the part of the model trained']}")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"stacked specs must be distinct runs, got {names}")


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
    """The trainee of a block (its rows' models, stacked or alone) and the engine it trains on."""
    resolved = resolve_engine(specs[0].engine, device, starts[0].model)
    if not on_stack:
        return SingleModel(starts[0].model, resolved), resolved
    check_row_starts(specs, starts)
    # the stacked engine runs its own batched forward: nothing to compile (it never paid for the small
    # models that stack, benchmarks/README.md), and metrics.json records that it did not
    resolved = dataclasses.replace(resolved, compile=False)
    return StackedModels([s.model for s in starts], method), resolved


def check_row_starts(specs: Sequence[RunSpec], starts: Sequence[SeedStart]) -> None:
    """Raise unless every row starts with the same parameters (names, shapes) trainable alike: a stack's
    leaves are shared by its rows. An init strategy that trains only part of the model must say so when
    registered (``trains``), which keeps its runs in stacks of their own (``job_blocks.stack_key``)."""
    def layout(model):
        return [(n, tuple(p.shape), p.requires_grad) for n, p in model.named_parameters()]
    reference = layout(starts[0].model)
    for spec, start in zip(specs[1:], starts[1:]):
        if layout(start.model) != reference:
            raise ValueError(f"{spec.name} (init strategy {spec.init.strategy!r}) starts with other parameters, "
                             f"or other trainable ones, than {specs[0].name} ({specs[0].init.strategy!r}) in "
                             "its stack: register the strategy with the part it trains (trains=...)")


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
    """Train ``specs`` (one run, or the rows of one stack: module docstring).
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
                        keep_optimizer=any(spec.keep_optimizer for spec in specs))
    results = fit(trainee, [spec.optimizer for spec in specs], td, [s.seed for s in specs], batch_size=spec0.batch_size,
                  stop=spec0.stop, resolved=resolved, checkpointing=checkpointing, log=log,
                  row_names=tuple(spec.name for spec in specs),
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
    """Train ``specs`` together as one stack (``check_stackable``); per spec, what ``run_training`` returns."""
    check_stackable(specs)
    return run_block(specs, data, splits, parent_states, **kwargs)
