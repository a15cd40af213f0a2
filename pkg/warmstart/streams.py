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

import time
from pathlib import Path
from typing import Callable

import torch

from .datasets import DeviceData
from .init import STRATEGIES
from .io import load_torch, save_torch
from .policies import POLICIES, SelectionContext
from .records import probe_columns
from .runner import build_seeded, check_names, run_state, start_seed
from .spec import StreamSpec
from .splits import Split
from .train import SingleModel, TrainData, fit, resolve_engine


def round_seed(seed: int, round_index: int) -> int:
    """A distinct seed per round, so each random round gets its own fresh initialisation and batch order."""
    return 1_000_003 * seed + round_index


def check_stream(spec: StreamSpec) -> None:
    POLICIES.lookup(spec.policy, "policy")
    check_names(spec.round.replace(init=spec.init, parent=spec.round if STRATEGIES.lookup(
        spec.init.strategy, "init.strategy").needs_parent else None))


def run_stream(spec: StreamSpec, data: DeviceData, split: Split, *, state_path: str | Path | None = None,
               on_round: Callable[[dict], None] | None = None,
               log: Callable[[str], None] | None = print) -> list[dict]:
    """Run (or resume) a stream; returns one row per round (round, n_samples, val_acc, val_loss, train_acc,
    train_loss, epochs, train_time_s, init_time_s, cumulative_train_time_s, samples_seen,
    cumulative_samples, converged, then the probes' columns of each round's last epoch). ``cumulative_train_time_s`` adds up every round's training and init time,
    ``cumulative_samples`` every round's samples processed (training and init). A strategy that keeps the
    optimiser state (``warm`` with ``optimizer_state: keep``) continues the previous round's optimiser."""
    check_stream(spec)
    device = data.x_train.device
    r = spec.round
    strategy = STRATEGIES[spec.init.strategy]
    pool = split.pool.to(device)
    val = split.validation.to(device)
    limit = min(spec.max_samples or len(pool), len(pool))
    available = torch.ones(len(pool), dtype=torch.bool, device=device)
    chosen = torch.empty(0, dtype=torch.long, device=device)
    rows: list[dict] = []
    previous_state: dict | None = None
    previous_optimizer: dict | None = None
    keep_optimizer = "optimizer" in strategy.parent_files(spec.init.options)
    context = SelectionContext(data.x_train[pool], available)
    origin = build_seeded(r, round_seed(r.seed, 0), data.input_shape, data.num_classes, device)

    state_path = Path(state_path) if state_path else None
    if state_path is not None and state_path.exists():
        saved = load_torch(state_path, what="the stream's state", map_location=device,
                           fix=f"Delete {state_path}: the stream then starts again from its first round")
        if saved.get("tag") == spec.stream_id:
            rows, chosen, previous_state = saved["rows"], saved["chosen"].to(device), saved["model"]
            previous_optimizer = saved.get("optimizer")
            available[chosen] = False
            if log:
                log(f"resumed after round {len(rows)} ({len(chosen)} samples)")

    cumulative = rows[-1]["cumulative_train_time_s"] if rows else 0.0
    cumulative_samples = rows[-1]["cumulative_samples"] if rows else 0
    while len(chosen) < limit:
        index = len(rows)
        context.model = None
        if previous_state is not None:
            context.model = build_seeded(r, round_seed(r.seed, index), data.input_shape, data.num_classes, device)
            context.model.load_state_dict(previous_state)
        k = min(spec.round_size, limit - len(chosen))
        new = POLICIES[spec.policy](context, k)
        if len(new) != k or not bool(available[new].all()) or len(torch.unique(new)) != k:
            raise RuntimeError(f"policy {spec.policy!r} returned an invalid selection in round {index + 1}")
        available[new] = False
        previous_idx = pool[chosen]
        chosen = torch.cat([chosen, new])
        train_idx = pool[chosen]

        from_parent = previous_state is not None and strategy.needs_parent
        round_spec = r.replace(init=spec.init, parent=r if from_parent else None)
        start = start_seed(round_spec, data, split, previous_state if from_parent else None, origin=origin,
                           parent_optimizer_state=previous_optimizer if from_parent else None,
                           init_seed=round_seed(r.seed, index), train_idx=train_idx,
                           parent_idx=previous_idx if from_parent else None, apply_strategy=from_parent)
        resolved = resolve_engine(r.engine, device, start.model)
        td = TrainData(data.x_train, data.y_train, train_idx.unsqueeze(0), val.unsqueeze(0))
        if from_parent:
            td.subsets = {"old": previous_idx.unsqueeze(0), "new": pool[new].unsqueeze(0)}
        result = fit(SingleModel(start.model, resolved), r.optimizer, td, [round_seed(r.seed, index)],
                     batch_size=r.batch_size, stop=r.stop, run=run_state([round_spec], [start]), resolved=resolved,
                     log=None, evaluate_every_epoch=False, optimizer_state=start.ctx.optimizer_state,
                     keep_optimizer=keep_optimizer)[0]
        cumulative += result.train_time_s + start.ctx.cost.time_s
        samples_seen = int(result.final["samples_seen"]) + start.ctx.cost.samples
        cumulative_samples += samples_seen
        final = result.final
        row = {"round": index + 1, "n_samples": int(len(chosen)), "val_acc": final["val_acc"],
               "val_loss": final["val_loss"], "train_acc": final["train_acc"], "train_loss": final["train_loss"],
               "epochs": final["epoch"], "train_time_s": result.train_time_s, "init_time_s": start.ctx.cost.time_s,
               "cumulative_train_time_s": cumulative, "samples_seen": samples_seen,
               "cumulative_samples": cumulative_samples, "converged": result.converged,
               **{k: final[k] for k in probe_columns(final)}}
        rows.append(row)
        previous_state = {k: v.detach().clone() for k, v in start.model.state_dict().items()}
        previous_optimizer = result.optimizer_state
        if state_path is not None:
            save_torch({"tag": spec.stream_id, "rows": rows, "chosen": chosen.cpu(), "optimizer": previous_optimizer,
                        "model": {k: v.cpu() for k, v in previous_state.items()}}, state_path)
        if log:
            log(f"round {row['round']}: {row['n_samples']} samples, val_acc {row['val_acc']:.4f}, "
                f"{row['epochs']} epochs, {row['train_time_s']:.1f}s (total {cumulative:.1f}s)")
        if on_round:
            on_round(row)
    return rows


def execute_stream(spec: StreamSpec, data_path, split_path, out_dir, *, device: str = "auto",
                   threads: int | None = None, state_path=None,
                   log: Callable[[str], None] | None = None) -> list[dict]:
    """Load inputs, run or resume the stream, write ``spec.json`` (the spec, and under ``provenance`` what
    ran it: ``provenance.provenance``) and ``rounds.parquet`` atomically.
    The per-round state lives at ``state_path`` (default ``<out_dir>/state.pt``) until the stream is done."""
    import pandas as pd

    from .datasets import load_prepared
    from .io import save_json, save_parquet
    from .provenance import provenance
    from .runner import setup_job
    from .splits import load_split

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if log is None:
        def log(msg: str) -> None:
            print(f"[{spec.name}] {msg}", flush=True)
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
