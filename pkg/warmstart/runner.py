"""Execute runs from files to files: the entry point a training job calls, for one run or a stack of seeds.

Inputs: the prepared dataset tensor file, each run's split file, and (for a child run) its parent's model
file (and optimiser state, when the child continues it). Outputs, per run, in its own directory and each
written atomically:
  spec.json       the full spec (parent included): the directory alone says what was run
  metrics.json    final metrics and how training stopped
  epochs.parquet  one row per epoch (EPOCH_FIELDS in records.py, then the probes' columns)
  model.pt        the final state dict (CPU tensors), written last
and, when the spec asks for them, ``checkpoints/epoch<k>.pt`` (the weights after epoch k) and
``optimizer.pt`` (the final optimiser state).

A stack trains the seeds of one condition together (``StackedModels``) and writes the same files per run
as single runs do, with the same numbers within float tolerance.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from .checks import check_names, stackable
from .datasets import DeviceData, load_prepared
from .init import InitContext, InitCost, derived_seed, initialise
from .io import load_torch, save_json, save_parquet, save_torch
from .models import build_model, count_parameters
from .plan_io import probe_file, run_dict
from .probes import PROBES, BoundProbe
from .provenance import provenance
from .records import EPOCH_FIELDS
from .spec import RunSpec
from .splits import Split, load_split
from .terms import TERMS, BoundTerm
from .units import BoundIntervention
from .train import (Checkpointing, RunState, SingleModel, StackedModels, TrainData,
                    TrainResult, fit, resolve_engine, stack_state)

RUN_FILES = ("spec.json", "metrics.json", "epochs.parquet", "model.pt")


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        # fixed input shapes: let cuDNN pick the fastest convolution algorithms once
        torch.backends.cudnn.benchmark = True
    return dev


def build_seeded(spec: RunSpec, seed: int, input_shape, num_classes: int, device) -> nn.Module:
    """The model of ``spec`` initialised under ``seed``; the global random state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(spec.model, input_shape, num_classes).to(device)


@dataclass
class SeedStart:
    """One seed's model as its training begins, and what its terms and probes need from the start."""

    model: nn.Module
    ctx: InitContext
    anchors: dict[str, dict[str, torch.Tensor]]
    term_states: list[dict[str, torch.Tensor]]


def start_seed(spec: RunSpec, data: DeviceData, split: Split, parent_state: dict | None, *,
               parent_optimizer_state: dict | None = None, origin: nn.Module | None = None,
               init_seed: int | None = None, train_idx: torch.Tensor | None = None,
               parent_idx: torch.Tensor | None = None, apply_strategy: bool = True, device=None) -> SeedStart:
    """Build ``spec``'s model under its seed (or ``init_seed``) and apply its init strategy (unless
    ``apply_strategy`` is off: an online stream's first round starts from the fresh model); then run its
    terms' setups and snapshot the anchors its terms and probes read. ``origin`` is the lineage's first
    initialisation (default: the fresh model as built, before the strategy: for a batch run also its
    parent's initialisation); the context and the anchors hold a copy of its parameters.
    ``train_idx`` and ``parent_idx`` default to the split's prefixes for the run's and its parent's
    training fractions."""
    device = device if device is not None else data.x_train.device
    seed = spec.seed if init_seed is None else init_seed
    fresh = build_seeded(spec, seed, data.input_shape, data.num_classes, device)
    # A copy taken before the strategy runs: strategies load the parent into ``fresh`` in place, so the
    # lineage's first initialisation must not be read through it afterwards.
    origin_params = parameter_snapshot(fresh if origin is None else origin)
    train_idx = split.train_indices(spec.train_fraction).to(device) if train_idx is None else train_idx
    if parent_idx is None and spec.parent is not None and spec.parent.dataset == spec.dataset:
        parent_idx = split.train_indices(spec.parent.train_fraction).to(device)
    ctx = InitContext(
        fresh=fresh, seed=seed, parent_state=parent_state, parent_optimizer_state=parent_optimizer_state,
        x_train=data.x_train[train_idx], y_train=data.y_train[train_idx],
        x_parent=None if parent_idx is None else data.x_train[parent_idx],
        y_parent=None if parent_idx is None else data.y_train[parent_idx],
        new_model=lambda tag: build_seeded(spec, derived_seed(seed, tag), data.input_shape, data.num_classes, device),
        origin=origin_params, cost=InitCost())
    ctx.train = _strategy_trainer(spec, data, train_idx, split, ctx.cost, seed)
    model = initialise(spec.init.strategy, spec.init.options, ctx) if apply_strategy else fresh
    if origin is None and spec.parent is None:
        origin_params = parameter_snapshot(model)  # a lineage that begins here begins at this run's start
    term_states = []
    for t in spec.terms:
        setup = TERMS[t.name].setup
        term_states.append({} if setup is None else setup(ctx, model, **t.options))
    anchors = {}
    if spec.terms or spec.probes:
        anchors = {"start": parameter_snapshot(model), "origin": origin_params}
    return SeedStart(model, ctx, anchors, term_states)


def parameter_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's parameters as detached copies: later in-place updates of the model do not reach them."""
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _strategy_trainer(spec: RunSpec, data: DeviceData, train_idx: torch.Tensor, split: Split, cost: InitCost,
                      seed: int):
    """``ctx.train``: train a model (its trainable parameters) on the run's data with the run's optimiser,
    batch size and stop rule, as a strategy's own first stage; its time and samples count as init cost."""
    def train_model(model: nn.Module, log: Callable[[str], None] | None = None) -> TrainResult:
        resolved = resolve_engine(spec.engine, data.x_train.device, model)
        device = data.x_train.device
        td = TrainData(data.x_train, data.y_train, train_idx.unsqueeze(0), split.validation.to(device).unsqueeze(0))
        result = fit(SingleModel(model, resolved), spec.optimizer, td, [derived_seed(seed, "init-train")],
                     batch_size=spec.batch_size, stop=spec.stop, resolved=resolved, log=log)[0]
        cost.time_s += result.train_time_s
        cost.samples += int(result.final["samples_seen"])
        return result
    return train_model


def run_state(specs: Sequence[RunSpec], starts: Sequence[SeedStart]) -> RunState:
    """The terms, probes and anchors of a block of runs (one condition), stacked over its seeds."""
    spec = specs[0]
    terms = [BoundTerm(TERMS[t.name], dict(t.options), stack_state([s.term_states[k] for s in starts]))
             for k, t in enumerate(spec.terms)]
    probes = [BoundProbe(PROBES[p.name], dict(p.options)) for p in spec.probes]
    anchors = {}
    if starts[0].anchors:
        anchors = {a: stack_state([s.anchors[a] for s in starts]) for a in starts[0].anchors}
    interventions = [BoundIntervention(i.name, dict(i.options)) for i in spec.interventions]
    return RunState(terms=terms, probes=probes, anchors=anchors, interventions=interventions)


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


def run_training(spec: RunSpec, data: DeviceData, split: Split, parent_state: dict | None,
                 **kwargs) -> tuple[nn.Module, TrainResult, dict]:
    """Train one run on already-loaded data: (final model, TrainResult, metrics)."""
    return run_block([spec], data, [split], [parent_state], **kwargs)[0]


def run_training_stacked(specs: Sequence[RunSpec], data: DeviceData, splits: Sequence[Split],
                         parent_states: Sequence[dict | None], **kwargs) -> list[tuple[nn.Module, TrainResult, dict]]:
    """Train the seeds of one condition together as a stack; per spec, what ``run_training`` returns."""
    check_stackable(specs)
    return run_block(specs, data, splits, parent_states, **kwargs)


def run_block(specs: Sequence[RunSpec], data: DeviceData, splits: Sequence[Split],
              parent_states: Sequence[dict | None], *, method: str = "bmm",
              parent_optimizer_states: Sequence[dict | None] | None = None,
              checkpointing: Checkpointing | None = None, checkpoint_dir: Path | None = None,
              on_epoch: Callable[[int, dict], None] | None = None,
              log: Callable[[str], None] | None = print) -> list[tuple[nn.Module, TrainResult, dict]]:
    """Train ``specs`` on already-loaded data: one run, or the seeds of one condition as a stack.
    ``splits[i]`` and ``parent_states[i]`` belong to ``specs[i]``. Returns, per spec and in order,
    (final model, TrainResult, metrics).

    Which engine trains a run is decided by what changes its numbers (``checks.stackable``: model,
    optimiser, init strategy, terms), never by how many seeds share the job: a stackable run trains on
    the stacked engine, alone as a stack of one. A seed's rows of the batched kernels and of the
    optimiser's update are computed independently of the other rows, so its weights are bitwise the
    same alone or beside any other seeds (tests/test_same_bits.py). A run that lists ``checkpoints``
    keeps them in ``checkpoint_dir/<run name>/``."""
    if not len(specs) == len(splits) == len(parent_states):
        raise ValueError(f"got {len(specs)} specs, {len(splits)} splits and {len(parent_states)} parent states")
    on_stack = stackable(specs[0])
    if on_stack:
        check_stackable(specs)
    elif len(specs) != 1:
        raise ValueError(f"{specs[0].name}: cannot be stacked; one run at a time")
    for spec in specs:
        check_names(spec)
    parent_optimizer_states = parent_optimizer_states or [None] * len(specs)
    device = data.x_train.device
    starts = [start_seed(spec, data, split, parent, parent_optimizer_state=popt)
              for spec, split, parent, popt in zip(specs, splits, parent_states, parent_optimizer_states)]
    spec0 = specs[0]
    resolved = resolve_engine(spec0.engine, device, starts[0].model)
    if on_stack:
        # the stacked engine runs its own batched forward: nothing to compile (it never paid for the
        # small models that stack, benchmarks/README.md), and metrics.json records that it did not
        resolved = dataclasses.replace(resolved, compile=False)
        trainee = StackedModels([s.model for s in starts], method)
    else:
        trainee = SingleModel(starts[0].model, resolved)
    td = train_data(specs, data, splits)
    savers = {}
    if any(spec.checkpoints for spec in specs):
        if checkpoint_dir is None:
            raise ValueError("checkpoints: a run that keeps checkpoints needs a checkpoint_dir")
        savers = {i: checkpoint_saver(spec, Path(checkpoint_dir) / spec.name, start.model)
                  for i, (spec, start) in enumerate(zip(specs, starts)) if spec.checkpoints}

    def after_epoch(i: int, record: dict) -> None:
        if i in savers:
            savers[i](record)
        if on_epoch:
            on_epoch(i, record)
    results = fit(trainee, spec0.optimizer, td, [s.seed for s in specs], batch_size=spec0.batch_size,
                  stop=spec0.stop, run=run_state(specs, starts), resolved=resolved,
                  checkpointing=checkpointing, log=log, on_epoch=after_epoch,
                  export_at=set().union(*(spec.checkpoints for spec in specs)),
                  optimizer_state=starts[0].ctx.optimizer_state if not on_stack else None,
                  keep_optimizer=spec0.keep_optimizer)
    n, n_val = td.train_idx.shape[1], td.val_idx.shape[1]
    return [(start.model, result, run_metrics(spec, result, start.model, n, n_val, device, start.ctx.cost))
            for spec, start, result in zip(specs, starts, results)]


def run_metrics(spec: RunSpec, result: TrainResult, model: nn.Module, n_train: int, n_val: int,
                device: torch.device, init_cost: InitCost | None = None) -> dict:
    """The final metrics of a run (metrics.json), whichever way it was trained."""
    final = result.final
    init_cost = init_cost or InitCost()
    return {
        "run_id": spec.run_id,
        "name": spec.name,
        "val_acc": final["val_acc"],
        "val_loss": final["val_loss"],
        "train_acc": final["train_acc"],
        "train_loss": final["train_loss"],
        "epochs": final["epoch"],
        "train_time_s": result.train_time_s,
        "samples_seen": int(final["samples_seen"]),
        "init_time_s": init_cost.time_s,  # what the init strategy spent before training (e.g. LL+WS)
        "init_samples": init_cost.samples,
        "units_reset": result.units_reset,  # by the run's interventions (0 without any)
        "converged": result.converged,
        "stopped_by": result.stopped_by,
        "n_train": int(n_train),
        "n_val": int(n_val),
        "num_parameters": count_parameters(model),
        "precision": result.engine.precision,  # what ran: a bf16 spec runs in fp32 where bf16 does not pay
        "channels_last": result.engine.channels_last,
        "compiled": result.engine.compile,
        **provenance(device),  # warmstart_version, git_commit, torch, python, device, threads
    }


def write_run(spec: RunSpec, out_dir: Path, model: nn.Module, result: TrainResult, metrics: dict) -> None:
    """Write the run directory, each file atomically and the model last: RUN_FILES (``epochs.parquet``
    holds the fields every run records), one table per probe (``plan_io.probe_file``: epoch and the
    probe's columns), and the optimiser state when kept. ``spec.json`` holds the spec without its
    requests: every file but the requested extras is a function of the run's identity."""
    import pandas as pd

    out_dir.mkdir(parents=True, exist_ok=True)
    save_json(run_dict(spec), out_dir / "spec.json")
    save_json(metrics, out_dir / "metrics.json")
    history = pd.DataFrame(result.history)
    epochs = history[list(EPOCH_FIELDS)]
    epochs.insert(0, "run_id", spec.run_id)
    save_parquet(epochs, out_dir / "epochs.parquet")
    for probe, columns in zip(spec.probes, result.probe_columns, strict=True):
        save_parquet(history[["epoch", *columns]], out_dir / probe_file(probe))
    if spec.keep_optimizer:
        save_torch(result.optimizer_state, out_dir / "optimizer.pt")
    save_torch(cpu_state(model), out_dir / "model.pt")


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def checkpoint_saver(spec: RunSpec, out_dir: Path, model: nn.Module):
    """Per epoch record of a run: keep its weights (``model``, which ``fit`` has brought up to date at
    these epochs) after each epoch in ``spec.checkpoints``."""
    wanted = set(spec.checkpoints)

    def save(record: dict) -> None:
        if record["epoch"] in wanted:
            save_torch(cpu_state(model), out_dir / f"epoch{record['epoch']}.pt")
    return save


def execute_run(spec: RunSpec, data_path, split_path, out_dir, parent_model_path=None, **kwargs) -> dict:
    """``execute_runs`` for one run."""
    return execute_runs([spec], data_path, [split_path], [out_dir], [parent_model_path], **kwargs)[0]


def execute_runs(specs: Sequence[RunSpec], data_path, split_paths: Sequence, out_dirs: Sequence,
                 parent_model_paths: Sequence | None = None, parent_optimizer_paths: Sequence | None = None, *,
                 device: str = "auto", threads: int | None = None,
                 checkpoint_every_s: float = 300.0, resume_path=None, method: str = "bmm",
                 log: Callable[[str], None] | None = None) -> list[dict]:
    """Load inputs, train (one run, or a stack), write each run's directory. Safe to re-run after an
    interruption: the job resumes from ``resume_path`` (saved every ``checkpoint_every_s``)."""
    started = time.time()
    k = len(specs)
    parent_model_paths = list(parent_model_paths or [None] * k)
    parent_optimizer_paths = list(parent_optimizer_paths or [None] * k)
    if not k == len(split_paths) == len(out_dirs) == len(parent_model_paths) == len(parent_optimizer_paths):
        raise ValueError("specs, split_paths, out_dirs and parent paths must have equal lengths")
    if log is None:
        label = specs[0].name if k == 1 else f"stack of {k} seeds"

        def log(msg: str) -> None:
            print(f"[{label}] {msg}", file=sys.stderr, flush=True)
    dev = setup_job(device, threads, log)
    data = load_prepared(data_path, dev)
    splits = [load_split(p) for p in split_paths]
    parents = [load_parent(s, p, dev) for s, p in zip(specs, parent_model_paths)]
    parent_opts = [None if p is None else load_parent_file(p, dev, "the parent's optimiser state")
                   for p in parent_optimizer_paths]
    out_dirs = [Path(d) for d in out_dirs]
    resume = Path(resume_path) if resume_path else out_dirs[0] / "resume.pt"
    tag = "+".join(s.run_id for s in specs)
    # checkpoints are kept beside the resume state until the run is done: an interrupted job's output
    # directory is removed before it runs again, and the resumed run does not pass those epochs again
    kept = resume.with_name(resume.stem + ".checkpoints")
    outputs = run_block(specs, data, splits, parents, method=method,
                        parent_optimizer_states=parent_opts,
                        checkpointing=Checkpointing(resume, every_s=checkpoint_every_s, tag=tag),
                        checkpoint_dir=kept, log=log)
    wall = time.time() - started
    all_metrics = []
    for spec, out_dir, (model, result, metrics) in zip(specs, out_dirs, outputs):
        metrics["wall_time_s"] = wall  # a stack's wall time is shared by its runs
        metrics["threads"] = torch.get_num_threads()
        metrics["stacked_seeds"] = k  # how many seeds shared the job (their numbers do not depend on it)
        if spec.checkpoints:
            (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            for epoch in spec.checkpoints:
                os.replace(kept / spec.name / f"epoch{epoch}.pt", out_dir / "checkpoints" / f"epoch{epoch}.pt")
            (kept / spec.name).rmdir()
        write_run(spec, out_dir, model, result, metrics)
        all_metrics.append(metrics)
        log(f"done: {spec.name} val_acc {metrics['val_acc']:.4f} after {metrics['epochs']} epochs "
            f"({metrics['stopped_by']}), {metrics['train_time_s']:.1f}s training")
    if kept.exists():
        kept.rmdir()
    resume.unlink(missing_ok=True)  # stale once every run is written
    return all_metrics


def execute_block(specs: Sequence[RunSpec], data_path, split_paths: Sequence, out_dirs: Sequence,
                  parent_model_paths: Sequence | None = None, parent_optimizer_paths: Sequence | None = None, *,
                  resume_dir, block: str, **kwargs) -> list[dict]:
    """A training job (``experiments.plan_blocks``): its stacks (or its one run), one after the other, each
    with ``execute_runs`` and a resume file of its own (``<resume_dir>/<block>[.<k>].pt``)."""
    from .experiments import block_stacks

    k = len(specs)
    columns = list(zip(specs, split_paths, out_dirs, parent_model_paths or [None] * k,
                       parent_optimizer_paths or [None] * k))
    position = {id(spec): i for i, spec in enumerate(specs)}
    stacks = block_stacks(specs)
    metrics = []
    for n, stack in enumerate(stacks):
        rows = [columns[position[id(spec)]] for spec in stack]
        resume = Path(resume_dir) / (f"{block}.pt" if len(stacks) == 1 else f"{block}.{n}.pt")
        metrics += execute_runs([r[0] for r in rows], data_path, [r[1] for r in rows], [r[2] for r in rows],
                                [r[3] for r in rows], [r[4] for r in rows], resume_path=resume, **kwargs)
    return metrics


def setup_job(device: str, threads: int | None, log: Callable[[str], None]) -> torch.device:
    """Thread count and device of a training job."""
    if threads:
        # Snakemake's `threads` bound each job, so parallel jobs do not oversubscribe the cores
        torch.set_num_threads(threads)
    dev = pick_device(device)
    log(f"device {dev}, {torch.get_num_threads()} CPU threads")
    return dev


def load_parent(spec: RunSpec, parent_model_path, device: torch.device) -> dict | None:
    if spec.parent is None or parent_model_path is None:
        return None
    return load_parent_file(parent_model_path, device, "the parent model")


def load_parent_file(path, device: torch.device, what: str):
    """A parent run's file (its model, a checkpoint, its optimiser state), checked (``io.load_torch``); a
    damaged one names the parent run's directory to delete, so that the workflow trains it again."""
    path = Path(path)
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return load_torch(path, what=what, map_location=device,
                      fix=f"Delete the parent run's directory {run_dir} and run the workflow again: it trains the "
                          "parent again, then this run")
