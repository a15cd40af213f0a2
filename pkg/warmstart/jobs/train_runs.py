"""A training job, from files to files: train a planned block of runs (one run, or stacks of seeds) and
write each run's directory.

Inputs: the prepared dataset tensor file, each run's split file, and (for a child run) its parent's model
file (and optimiser state, when the child continues it). Outputs, per run, in its own directory and each
written atomically (``run_files.write_run``):
  spec.json       the full spec (parent included): the directory alone says what was run
  metrics.json    final metrics and how training stopped
  epochs.parquet  one row per epoch (EPOCH_FIELDS in records.py, then the probes' columns)
  model.pt        the final state dict (CPU tensors), written last
and, when the spec asks for them, ``checkpoints/epoch<k>.pt`` (the weights after epoch k) and
``optimizer.pt`` (the final optimiser state).

A stack trains runs that differ only in seed, init strategy, parent, learning rate and loss-term
coefficients together (``StackedModels``) and
writes the same files per run as single runs do, with the same numbers (``train_block``).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from warmstart.components.datasets import load_prepared
from warmstart.components.splits import load_split
from warmstart.core.spec import RunSpec
from warmstart.engine.checkpoint import Checkpointing
from warmstart.jobs.run_files import (link_files, load_parent, load_parent_file, move_checkpoints, published_run,
                                      write_run)
from warmstart.jobs.train_block import run_block
from warmstart.plan.job_blocks import block_stacks
from warmstart.plan.plan_files import run_file_names


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        # fixed input shapes: let cuDNN pick the fastest convolution algorithms once
        torch.backends.cudnn.benchmark = True
    return dev


def setup_job(device: str, threads: int | None, log: Callable[[str], None]) -> torch.device:
    """Thread count and device of a training job."""
    if threads:
        # Snakemake's `threads` bound each job, so parallel jobs do not oversubscribe the cores
        torch.set_num_threads(threads)
    dev = pick_device(device)
    log(f"device {dev}, {torch.get_num_threads()} CPU threads")
    return dev


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
    log = log or job_log(specs[0].name if k == 1 else f"stack of {k} runs", file=sys.stderr)
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
        move_checkpoints(spec, kept / spec.name, out_dir)
        write_run(spec, out_dir, model, result, metrics)
        all_metrics.append(metrics)
        log(f"done: {spec.name} val_acc {metrics['val_acc']:.4f} after {metrics['epochs']} epochs "
            f"({metrics['stopped_by']}), {metrics['train_time_s']:.1f}s training")
    if kept.exists():
        kept.rmdir()
    resume.unlink(missing_ok=True)  # stale once every run is written
    return all_metrics


def job_log(label: str, file=None) -> Callable[[str], None]:
    """A job's log: each message prefixed by what the job trains."""
    def log(msg: str) -> None:
        print(f"[{label}] {msg}", file=file, flush=True)
    return log


def execute_block(specs: Sequence[RunSpec], data_path, split_paths: Sequence, out_dirs: Sequence,
                  parent_model_paths: Sequence | None = None, parent_optimizer_paths: Sequence | None = None, *,
                  resume_dir, block: str, published_dir=None, **kwargs) -> list[dict]:
    """A training job (``experiments.plan_blocks``): its stacks (or its one run), one after the other, each
    with ``execute_runs`` and a resume file of its own (``<resume_dir>/<block>[.<k>].pt``).

    With ``published_dir`` (the workflow's ``results/runs``), a run whose files are all published there
    already (``run_files.published_run``) is not trained again: its files are linked into its output
    directory and the rest of its stack trains without it, to the same bits (a seed's rows are
    independent of the others'). A job runs again for runs it shares with others (a new arm's stack
    joining a job of stacks already trained, one run's files deleted, a probe added to some runs); this
    trains only those. A forced invocation passes no ``published_dir`` and trains everything."""
    k = len(specs)
    columns = list(zip(specs, split_paths, out_dirs, parent_model_paths or [None] * k,
                       parent_optimizer_paths or [None] * k))
    position = {id(spec): i for i, spec in enumerate(specs)}
    stacks = block_stacks(specs)
    log = kwargs.get("log") or job_log(block, file=sys.stderr)
    metrics = []
    for n, stack in enumerate(stacks):
        rows = []
        for spec in stack:
            row = columns[position[id(spec)]]
            done = published_run(spec, published_dir) if published_dir is not None else None
            if done is None:
                rows.append(row)
                continue
            link_files(done, Path(row[2]), run_file_names(spec))
            metrics.append(json.loads((done / "metrics.json").read_text()))
            log(f"reused: {spec.name}, its files are published in {done} (same spec, same bits)")
        if not rows:
            continue
        resume = Path(resume_dir) / (f"{block}.pt" if len(stacks) == 1 else f"{block}.{n}.pt")
        metrics += execute_runs([r[0] for r in rows], data_path, [r[1] for r in rows], [r[2] for r in rows],
                                [r[3] for r in rows], [r[4] for r in rows], resume_path=resume, **kwargs)
    return metrics
