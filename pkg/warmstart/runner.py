"""Execute one RunSpec from files to files: the single entry point a workflow job calls.

Inputs: the prepared dataset tensor file, the split file, and (for a child run) the parent's model file.
Outputs, all in the run's directory and each written atomically:
  spec.json       the full spec (parent included): the directory alone says what was run
  metrics.json    final metrics and how training stopped
  epochs.parquet  one row per epoch (see EPOCH_FIELDS in train.py)
  model.pt        the final state dict (CPU tensors), written last
"""
from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from torch import nn

from .datasets import DeviceData, load_prepared
from .init import initialise
from .io import save_json, save_parquet, save_torch
from .models import build_model, count_parameters
from .spec import RunSpec
from .splits import load_split
from .train import Checkpointing, TrainResult, train

RUN_FILES = ("spec.json", "metrics.json", "epochs.parquet", "model.pt")


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        # fixed input shapes: let cuDNN pick the fastest convolution algorithms once
        torch.backends.cudnn.benchmark = True
    return dev


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)


def initial_model(spec: RunSpec, input_shape, num_classes: int, parent_state: dict | None,
                  device: torch.device | str = "cpu") -> nn.Module:
    """The model a run starts training from: built under the run's seed, then its init strategy applied."""
    seed_everything(spec.seed)
    fresh = build_model(spec.model, input_shape, num_classes)
    model = initialise(spec.init.strategy, fresh, parent_state, spec.init.options)
    return model.to(device)


def run_training(spec: RunSpec, data: DeviceData, split, parent_state: dict | None, *,
                 checkpointing: Checkpointing | None = None,
                 log: Callable[[str], None] | None = print) -> tuple[nn.Module, TrainResult, dict]:
    """Train one run on already-loaded data; returns the model, the result and final metrics."""
    device = data.x_train.device
    train_idx = split.train_indices(spec.train_fraction).to(device)
    val_idx = split.validation.to(device)
    model = initial_model(spec, data.input_shape, data.num_classes, parent_state, device)
    result = train(
        model, spec.optimizer,
        data.x_train[train_idx], data.y_train[train_idx], data.x_train[val_idx], data.y_train[val_idx],
        batch_size=spec.batch_size, stop=spec.stop, seed=spec.seed,
        checkpointing=checkpointing, log=log, engine=spec.engine,
    )
    return model, result, run_metrics(spec, result, model, len(train_idx), len(val_idx), device)


def run_metrics(spec: RunSpec, result: TrainResult, model: nn.Module, n_train: int, n_val: int,
                device: torch.device) -> dict:
    """The final metrics of a run (metrics.json), whichever way it was trained."""
    final = result.final
    return {
        "run_id": spec.run_id,
        "name": spec.name,
        "val_acc": final["val_acc"],
        "val_loss": final["val_loss"],
        "train_acc": final["train_acc"],
        "train_loss": final["train_loss"],
        "epochs": final["epoch"],
        "train_time_s": result.train_time_s,
        "converged": result.converged,
        "stopped_by": result.stopped_by,
        "n_train": int(n_train),
        "n_val": int(n_val),
        "num_parameters": count_parameters(model),
        "precision": result.engine.precision,  # what ran: a bf16 spec runs in fp32 where bf16 does not pay
        "channels_last": result.engine.channels_last,
        "compiled": result.engine.compile,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def write_run(spec: RunSpec, out_dir: Path, model: nn.Module, result: TrainResult, metrics: dict) -> None:
    """Write the run directory (RUN_FILES), each file atomically and the model last, then drop the
    resume checkpoint, which is stale once the run is finished."""
    out_dir.mkdir(parents=True, exist_ok=True)
    save_json(spec.to_dict(), out_dir / "spec.json")
    save_json(metrics, out_dir / "metrics.json")
    epochs = pd.DataFrame(result.history)
    epochs.insert(0, "run_id", spec.run_id)
    save_parquet(epochs, out_dir / "epochs.parquet")
    save_torch({k: v.detach().cpu() for k, v in model.state_dict().items()}, out_dir / "model.pt")
    resume = out_dir / "resume.pt"
    if resume.exists():
        os.remove(resume)


def execute_run(spec: RunSpec, data_path, split_path, out_dir, parent_model_path=None, *,
                device: str = "auto", threads: int | None = None, checkpoint_every_s: float = 300.0,
                log: Callable[[str], None] | None = None) -> dict:
    """Load inputs, train, write the run directory. Safe to re-run after an interruption."""
    started = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if log is None:
        def log(msg: str) -> None:
            print(f"[{spec.name}] {msg}", file=sys.stderr, flush=True)
    dev = setup_job(device, threads, log)
    data = load_prepared(data_path, dev)
    split = load_split(split_path)
    parent_state = load_parent(spec, parent_model_path, dev)

    resume_path = out_dir / "resume.pt"
    model, result, metrics = run_training(
        spec, data, split, parent_state,
        checkpointing=Checkpointing(resume_path, every_s=checkpoint_every_s, tag=spec.run_id), log=log)
    metrics["wall_time_s"] = time.time() - started
    metrics["threads"] = torch.get_num_threads()
    write_run(spec, out_dir, model, result, metrics)
    log(f"done: val_acc {metrics['val_acc']:.4f} after {metrics['epochs']} epochs "
        f"({metrics['stopped_by']}), {metrics['train_time_s']:.1f}s training")
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
    return torch.load(parent_model_path, map_location=device, weights_only=True)
