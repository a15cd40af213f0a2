"""Online learning: data arrive in rounds and the model is retrained after each (Figures 2, 8, 9).

A stream starts from an empty training set. Each round a selection policy adds ``round_size`` samples
of the training pool, and the model is trained to convergence on everything so far, with a fresh
optimiser. The stream's init strategy decides where each round starts: a strategy that needs a parent
(``warm``, shrink-perturb, ...) is applied to the previous round's final weights; one that does not
(``random``) starts every round from a fresh initialisation (its own seed per round). The first round
always starts fresh. Rounds train through the same engine as single runs (``train.fit``, one seed), with
the round template's loss terms and probes. The job keeps its state after every finished round, so a
killed stream resumes at the next round and its finished rows are never lost or duplicated.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from warmstart.components.datasets import DeviceData, load_prepared
from warmstart.components.inits import STRATEGIES
from warmstart.components.policies import POLICIES, SelectionContext
from warmstart.components.splits import Split, load_split
from warmstart.core.io import save_json, save_parquet
from warmstart.core.records import probe_columns
from warmstart.core.seeds import round_seed
from warmstart.core.spec import StreamSpec
from warmstart.engine.checkpoint import load_resume, save_resume
from warmstart.engine.loop import TrainData, TrainResult, fit
from warmstart.engine.precision import resolve_engine
from warmstart.engine.trainees import SingleModel
from warmstart.jobs.provenance import provenance
from warmstart.jobs.run_files import link_files
from warmstart.jobs.run_metrics import evaluate_test_split
from warmstart.jobs.seed_start import SeedStart, build_seeded, start_seed
from warmstart.jobs.train_block import block_hooks
from warmstart.jobs.train_runs import job_log, setup_job
from warmstart.plan.plan_files import STREAM_FILES
from warmstart.plan.spec_checks import check_names


def check_stream(spec: StreamSpec) -> None:
    POLICIES.lookup(spec.policy, "policy")
    check_names(spec.round.replace(init=spec.init, parent=spec.round if STRATEGIES.lookup(
        spec.init.strategy, "init.strategy").needs_parent else None))


@dataclass
class StreamProgress:
    """A stream after its finished rounds: all that its next round, and a resumed job, go on from."""

    rows: list[dict]
    chosen: torch.Tensor  # the pool positions chosen so far, in the order they were chosen
    model: dict | None = None  # the last round's final weights
    optimizer: dict | None = None  # and its optimiser state

    def save(self, path: Path, tag: str) -> None:
        save_resume(path, tag, {"rows": self.rows, "chosen": self.chosen.cpu(), "optimizer": self.optimizer,
                                "model": {k: v.cpu() for k, v in self.model.items()}})


def resume_stream(spec: StreamSpec, state_path: Path | None, device, log) -> StreamProgress:
    """The stream's saved progress at ``state_path`` when it is this stream's, else no round done."""
    saved = None if state_path is None else load_resume(
        state_path, spec.stream_id, map_location=device, what="the stream's state",
        fix=f"Delete {state_path}: the stream then starts again from its first round")
    if saved is None:
        return StreamProgress([], torch.empty(0, dtype=torch.long, device=device))
    progress = StreamProgress(saved["rows"], saved["chosen"].to(device), saved["model"],
                               saved.get("optimizer"))
    if log:
        log(f"resumed after round {len(progress.rows)} ({len(progress.chosen)} samples)")
    return progress


def run_stream(spec: StreamSpec, data: DeviceData, split: Split, *, state_path: str | Path | None = None,
               on_round: Callable[[dict], None] | None = None,
               log: Callable[[str], None] | None = print) -> list[dict]:
    """Run (or resume) a stream; returns one row per round (``round_row``). A strategy that keeps the
    optimiser state (``warm`` with ``optimizer_state: keep``) continues the previous round's optimiser."""
    check_stream(spec)
    device = data.x_train.device
    pool = split.pool.to(device)
    limit = min(spec.max_samples or len(pool), len(pool))
    state_path = Path(state_path) if state_path else None
    progress = resume_stream(spec, state_path, device, log)
    available = torch.ones(len(pool), dtype=torch.bool, device=device)
    available[progress.chosen] = False
    context = SelectionContext(data.x_train[pool], available)
    origin = build_seeded(spec.round, round_seed(spec.round.seed, 0), data.input_shape, data.num_classes, device)
    while len(progress.chosen) < limit:
        new = select_round(spec, data, context, progress, min(spec.round_size, limit - len(progress.chosen)))
        start, result = train_round(spec, data, split, pool, progress, new, origin)
        progress.chosen = torch.cat([progress.chosen, new])
        row = round_row(progress, start, result, evaluate_test_split(start.model, data, result))
        progress.rows.append(row)
        progress.model = {k: v.detach().clone() for k, v in start.model.state_dict().items()}
        progress.optimizer = result.optimizer_state
        if state_path is not None:
            progress.save(state_path, spec.stream_id)
        if log:
            log(f"round {row['round']}: {row['n_samples']} samples, val_acc {row['val_acc']:.4f}, "
                f"{row['epochs']} epochs, {row['train_time_s']:.1f}s (total {row['cumulative_train_time_s']:.1f}s)")
        if on_round:
            on_round(row)
    return progress.rows


def select_round(spec: StreamSpec, data: DeviceData, context: SelectionContext, progress: StreamProgress,
                 k: int) -> torch.Tensor:
    """The ``k`` pool positions the policy adds in the next round, taken from ``context.available``; the
    policy sees the previous round's final model (none before the first round)."""
    r = spec.round
    index = len(progress.rows)
    context.model = None
    if progress.model is not None:
        context.model = build_seeded(r, round_seed(r.seed, index), data.input_shape, data.num_classes,
                                     data.x_train.device)
        context.model.load_state_dict(progress.model)
    new = POLICIES[spec.policy](context, k)
    if len(new) != k or not bool(context.available[new].all()) or len(torch.unique(new)) != k:
        raise RuntimeError(f"policy {spec.policy!r} returned an invalid selection in round {index + 1}")
    context.available[new] = False
    return new


def train_round(spec: StreamSpec, data: DeviceData, split: Split, pool: torch.Tensor, progress: StreamProgress,
                new: torch.Tensor, origin: nn.Module) -> tuple[SeedStart, TrainResult]:
    """Train the next round on the samples chosen so far and ``new``, from the previous round's final
    model (by the stream's strategy) or from a fresh one of the round's own seed."""
    r, index, device = spec.round, len(progress.rows), data.x_train.device
    strategy = STRATEGIES[spec.init.strategy]
    previous_idx = pool[progress.chosen]
    train_idx = pool[torch.cat([progress.chosen, new])]
    from_parent = progress.model is not None and strategy.needs_parent
    round_spec = r.replace(init=spec.init, parent=r if from_parent else None)
    start = start_seed(round_spec, data, split, progress.model if from_parent else None, origin=origin,
                       parent_optimizer_state=progress.optimizer if from_parent else None,
                       init_seed=round_seed(r.seed, index), train_idx=train_idx,
                       parent_idx=previous_idx if from_parent else None, apply_strategy=from_parent)
    resolved = resolve_engine(r.engine, device, start.model)
    td = TrainData(data.x_train, data.y_train, train_idx.unsqueeze(0), split.validation.to(device).unsqueeze(0))
    if from_parent:
        td.subsets = {"old": previous_idx.unsqueeze(0), "new": pool[new].unsqueeze(0)}
    result = fit(SingleModel(start.model, resolved), r.optimizer, td, [round_seed(r.seed, index)],
                 batch_size=r.batch_size, stop=r.stop, resolved=resolved, log=None,
                 hooks=block_hooks([round_spec], [start],
                                   keep_optimizer="optimizer" in strategy.parent_files(spec.init.options)),
                 optimizer_state=start.ctx.optimizer_state)[0]
    return start, result


def round_row(progress: StreamProgress, start: SeedStart, result: TrainResult, test: dict) -> dict:
    """A round's row: round, n_samples, val_acc, val_loss, test_acc, test_loss, train_acc, train_loss,
    epochs, train_time_s, init_time_s, cumulative_train_time_s, samples_seen, cumulative_samples, converged,
    units_reset, then the probes' columns of the round's last epoch. ``test``: the round's final model on
    the data set's test split (NaN without one), measured after training; ``units_reset``: the units the
    round's interventions reset (0 without any). ``cumulative_train_time_s`` adds up every round's training
    and init time, ``cumulative_samples`` every round's samples processed (training and init)."""
    rows, final, cost = progress.rows, result.final, start.ctx.cost
    samples_seen = int(final["samples_seen"]) + cost.samples
    return {"round": len(rows) + 1, "n_samples": int(len(progress.chosen)), "val_acc": final["val_acc"],
            "val_loss": final["val_loss"], "test_acc": test["test_acc"], "test_loss": test["test_loss"],
            "train_acc": final["train_acc"], "train_loss": final["train_loss"],
            "epochs": final["epoch"], "train_time_s": result.train_time_s, "init_time_s": cost.time_s,
            "cumulative_train_time_s": (rows[-1]["cumulative_train_time_s"] if rows else 0.0)
            + (result.train_time_s + cost.time_s),
            "samples_seen": samples_seen,
            "cumulative_samples": (rows[-1]["cumulative_samples"] if rows else 0) + samples_seen,
            "converged": result.converged, "units_reset": result.units_reset,
            **{k: final[k] for k in probe_columns(final)}}


def execute_stream(spec: StreamSpec, data_path, split_path, out_dir, *, device: str = "auto",
                   threads: int | None = None, state_path=None,
                   log: Callable[[str], None] | None = None) -> list[dict]:
    """Load inputs, run or resume the stream, write ``spec.json`` (the spec, and under ``provenance`` what
    ran it: ``provenance.provenance``) and ``rounds.parquet`` atomically.
    The per-round state lives at ``state_path`` (default ``<out_dir>/state.pt``) until the stream is done."""
    import pandas as pd

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = log or job_log(spec.name)
    dev = setup_job(device, threads, log)
    started = time.time()
    state_path = Path(state_path) if state_path else out_dir / "state.pt"
    rows = run_stream(spec, load_prepared(data_path, dev), load_split(split_path), state_path=state_path, log=log)
    frame = pd.DataFrame(rows)
    frame.insert(0, "stream_id", spec.stream_id)
    # what produced the rounds, beside the spec: rounds.parquet's columns stay the rounds' numbers
    save_json({**spec.to_dict(), "provenance": provenance(dev)}, out_dir / "spec.json")
    save_parquet(frame, out_dir / "rounds.parquet")
    state_path.unlink(missing_ok=True)
    log(f"done: {len(rows)} rounds in {time.time() - started:.1f}s wall")
    return rows


def published_stream(spec: StreamSpec, streams_dir) -> Path | None:
    """``streams_dir/<stream>`` where it holds the stream's files (``STREAM_FILES``) for this very spec
    (a stream's name leaves its probes out; its ``spec.json`` holds them), else None."""
    stream_dir = Path(streams_dir) / spec.name
    if not all((stream_dir / name).is_file() for name in STREAM_FILES):
        return None
    published = json.loads((stream_dir / "spec.json").read_text())
    published.pop("provenance", None)
    return stream_dir if published == json.loads(json.dumps(spec.to_dict())) else None


def execute_streams(specs: Sequence[StreamSpec], data_path, split_paths: Sequence, out_dir, *, state_dir,
                    published_dir=None, **kwargs) -> None:
    """A job of several streams (``job_blocks.plan_stream_blocks``), one after the other, each into
    ``out_dir/<stream>`` with its resume state in ``state_dir``. With ``published_dir`` (the workflow's
    ``results/streams``), a stream published there already is linked, not run again (as
    ``train_runs.execute_block`` does for runs)."""
    for spec, split_path in zip(specs, split_paths, strict=True):
        done = published_stream(spec, published_dir) if published_dir is not None else None
        if done is not None:
            link_files(done, Path(out_dir) / spec.name, STREAM_FILES)
            (kwargs.get("log") or job_log(spec.name))(f"reused: its files are published in {done}")
            continue
        execute_stream(spec, data_path, split_path, Path(out_dir) / spec.name,
                       state_path=Path(state_dir) / f"{spec.name}.pt", **kwargs)
