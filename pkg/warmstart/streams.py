"""Online learning: data arrive in rounds and the model is retrained after each (Figures 2, 8, 9).

A stream starts from an empty training set. Each round a selection policy adds ``round_size`` samples
of the training pool, and the model is trained to convergence on everything so far, either from the
previous round's weights (``warm``) or from a fresh initialisation (``random``), always with a fresh
optimiser. The job keeps its state after every finished round, so a killed stream resumes at the next
round and its finished rows are never lost or duplicated.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .datasets import DeviceData
from .init import STRATEGIES, initialise
from .io import save_torch
from .models import build_model
from .policies import POLICIES, SelectionContext
from .spec import InitSpec, RunSpec, SpecError, _check, _is_int, short_hash
from .splits import Split
from .train import train

ROUND_FIELDS = ("round", "n_samples", "val_acc", "val_loss", "train_acc", "train_loss", "epochs",
                "train_time_s", "cumulative_train_time_s", "converged")


@dataclass(frozen=True)
class StreamSpec:
    """One online stream: dataset x model x policy x init strategy x seed.

    ``round`` holds the per-round training settings (dataset, model, optimiser, batch size, stop rule,
    seed, validation fraction) as a RunSpec template; its own data fraction and init are unused.
    """

    round: RunSpec
    policy: str = "random"
    init: InitSpec = field(default_factory=lambda: InitSpec("warm"))
    round_size: int = 100
    max_samples: int | None = None  # None: until the pool is exhausted

    def __post_init__(self) -> None:
        _check(self.policy in POLICIES, "policy", f"unknown policy {self.policy!r}; known: {sorted(POLICIES)}")
        _check(self.init.strategy in STRATEGIES, "init.strategy",
               f"unknown strategy {self.init.strategy!r}; known: {sorted(STRATEGIES)}")
        _check(_is_int(self.round_size) and self.round_size >= 1, "round_size",
               f"must be a positive integer, got {self.round_size!r}")
        _check(self.max_samples is None or (_is_int(self.max_samples) and self.max_samples >= 1), "max_samples",
               f"must be a positive integer or null, got {self.max_samples!r}")

    @property
    def seed(self) -> int:
        return self.round.seed

    def canonical(self) -> dict[str, Any]:
        template = self.round.canonical()
        for unused in ("train_fraction", "init", "parent"):
            template.pop(unused)
        return {"round": template, "policy": self.policy, "init": dataclasses.asdict(self.init),
                "round_size": self.round_size, "max_samples": self.max_samples}

    @property
    def stream_id(self) -> str:
        return short_hash(self.canonical(), 12)

    @property
    def name(self) -> str:
        r = self.round
        return (f"{r.dataset.name}_{r.model.arch}_{r.optimizer.name}_{self.policy}_{self.init.strategy}"
                f"_r{self.round_size}_s{r.seed}_{self.stream_id}")

    def to_dict(self) -> dict[str, Any]:
        return {"round": self.round.to_dict(), "policy": self.policy, "init": dataclasses.asdict(self.init),
                "round_size": self.round_size, "max_samples": self.max_samples, "stream_id": self.stream_id}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "StreamSpec":
        spec = cls(round=RunSpec.from_dict(d["round"]), policy=d["policy"], init=InitSpec(**d["init"]),
                   round_size=d["round_size"], max_samples=d["max_samples"])
        if "stream_id" in d and d["stream_id"] != spec.stream_id:
            raise SpecError(f"stream_id: stored {d['stream_id']!r} does not match the spec's hash {spec.stream_id!r}")
        return spec


def round_seed(seed: int, round_index: int) -> int:
    """A distinct seed per round, so each random round gets its own fresh initialisation and batch order."""
    return 1_000_003 * seed + round_index


def run_stream(spec: StreamSpec, data: DeviceData, split: Split, *, state_path: str | Path | None = None,
               on_round: Callable[[dict], None] | None = None,
               log: Callable[[str], None] | None = print) -> list[dict]:
    """Run (or resume) a stream; returns one row per round (see ROUND_FIELDS)."""
    device = data.x_train.device
    r = spec.round
    pool = split.pool.to(device)
    x_pool, y_pool = data.x_train[pool], data.y_train[pool]
    val = split.validation.to(device)
    x_val, y_val = data.x_train[val], data.y_train[val]
    limit = min(spec.max_samples or len(pool), len(pool))
    available = torch.ones(len(pool), dtype=torch.bool, device=device)
    chosen = torch.empty(0, dtype=torch.long, device=device)
    rows: list[dict] = []
    previous_state: dict | None = None
    context = SelectionContext(x_pool, available)

    state_path = Path(state_path) if state_path else None
    if state_path is not None and state_path.exists():
        saved = torch.load(state_path, map_location=device, weights_only=False)
        if saved.get("tag") == spec.stream_id:
            rows, chosen, previous_state = saved["rows"], saved["chosen"].to(device), saved["model"]
            available[chosen] = False
            if log:
                log(f"resumed after round {len(rows)} ({len(chosen)} samples)")

    def model_for_round(index: int, parent_state: dict | None):
        torch.manual_seed(round_seed(r.seed, index))
        fresh = build_model(r.model, data.input_shape, data.num_classes)
        if parent_state is None or not STRATEGIES[spec.init.strategy].needs_parent:
            return fresh.to(device)  # a random stream, or the first round of a warm one
        return initialise(spec.init.strategy, fresh, parent_state, spec.init.options).to(device)

    cumulative = rows[-1]["cumulative_train_time_s"] if rows else 0.0
    while len(chosen) < limit:
        index = len(rows)
        context.model = None if previous_state is None else model_for_round(index, None)
        if context.model is not None:
            context.model.load_state_dict(previous_state)
        k = min(spec.round_size, limit - len(chosen))
        new = POLICIES[spec.policy](context, k)
        if len(new) != k or not bool(available[new].all()) or len(torch.unique(new)) != k:
            raise RuntimeError(f"policy {spec.policy!r} returned an invalid selection in round {index + 1}")
        available[new] = False
        chosen = torch.cat([chosen, new])

        model = model_for_round(index, previous_state)
        result = train(model, r.optimizer, x_pool[chosen], y_pool[chosen], x_val, y_val,
                       batch_size=r.batch_size, stop=r.stop, seed=round_seed(r.seed, index),
                       log=None, evaluate_every_epoch=False, engine=r.engine)
        cumulative += result.train_time_s
        final = result.final
        row = {"round": index + 1, "n_samples": int(len(chosen)), "val_acc": final["val_acc"],
               "val_loss": final["val_loss"], "train_acc": final["train_acc"], "train_loss": final["train_loss"],
               "epochs": final["epoch"], "train_time_s": result.train_time_s,
               "cumulative_train_time_s": cumulative, "converged": result.converged}
        rows.append(row)
        previous_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if state_path is not None:
            save_torch({"tag": spec.stream_id, "rows": rows, "chosen": chosen.cpu(),
                        "model": {k: v.cpu() for k, v in previous_state.items()}}, state_path)
        if log:
            log(f"round {row['round']}: {row['n_samples']} samples, val_acc {row['val_acc']:.4f}, "
                f"{row['epochs']} epochs, {row['train_time_s']:.1f}s (total {cumulative:.1f}s)")
        if on_round:
            on_round(row)
    return rows


def execute_stream(spec: StreamSpec, data_path, split_path, out_dir, *, device: str = "auto",
                   threads: int | None = None, log: Callable[[str], None] | None = None) -> list[dict]:
    """Load inputs, run or resume the stream, write ``spec.json`` and ``rounds.parquet`` atomically."""
    import pandas as pd

    from .datasets import load_prepared
    from .io import save_json, save_parquet
    from .runner import setup_job
    from .splits import load_split

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if log is None:
        def log(msg: str) -> None:
            print(f"[{spec.name}] {msg}", flush=True)
    dev = setup_job(device, threads, log)
    started = time.time()
    state_path = out_dir / "state.pt"
    rows = run_stream(spec, load_prepared(data_path, dev), load_split(split_path), state_path=state_path, log=log)
    frame = pd.DataFrame(rows, columns=list(ROUND_FIELDS))
    frame.insert(0, "stream_id", spec.stream_id)
    save_json(spec.to_dict(), out_dir / "spec.json")
    save_parquet(frame, out_dir / "rounds.parquet")
    state_path.unlink(missing_ok=True)
    log(f"done: {len(rows)} rounds in {time.time() - started:.1f}s wall")
    return rows
