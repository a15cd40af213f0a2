"""A run's directory: the files a finished run writes (each atomically, the model last), the checkpoints
it keeps, the parent files a child run reads, and a finished run's published files taken up again by a
job that would otherwise train it a second time."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from warmstart.core.io import load_torch, save_json, save_parquet, save_torch
from warmstart.core.records import EPOCH_FIELDS
from warmstart.core.spec import RunSpec
from warmstart.engine.hooks import Hook
from warmstart.engine.loop import TrainResult
from warmstart.plan.plan_files import (OPTIMIZER_FILE, RUN_FILES, checkpoint_file, probe_file, run_dict,
                                       run_file_names)

SAVERS = {".json": save_json, ".parquet": save_parquet, ".pt": save_torch}  # by suffix, each atomic


def write_run(spec: RunSpec, out_dir: Path, model: nn.Module, result: TrainResult, metrics: dict) -> None:
    """Write the run directory: ``plan_files.RUN_FILES`` in their order, the requested extras (one table
    per probe, ``plan_files.probe_file``: epoch and the probe's columns; the optimiser state when kept)
    before the last of them, the model. ``spec.json`` holds the spec without its requests: every file but
    the requested extras is a function of the run's identity."""
    import pandas as pd

    history = pd.DataFrame(result.history)
    epochs = history[list(EPOCH_FIELDS)]  # the fields every run records
    epochs.insert(0, "run_id", spec.run_id)
    content = {"spec.json": run_dict(spec), "metrics.json": metrics, "epochs.parquet": epochs,
               "model.pt": cpu_state(model)}
    extras = {probe_file(probe): history[["epoch", *columns]]
              for probe, columns in zip(spec.probes, result.probe_columns, strict=True)}
    if spec.keep_optimizer:
        extras[OPTIMIZER_FILE] = result.optimizer_state
    *first, last = RUN_FILES  # the model last: its presence says the run's other files are there
    for name in (*first, *extras, last):
        SAVERS[Path(name).suffix]({**content, **extras}[name], out_dir / name)


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


class CheckpointSaver(Hook):
    """The checkpoints a block's runs ask for, as a hook of the loop: after each epoch ``k`` in
    ``specs[i].checkpoints``, seed ``i``'s model (which the loop's ``ExportAt``, an earlier hook, has
    brought up to date) as ``kept_dir/<run name>/<plan_files.checkpoint_file(k)>``. It holds no state: a
    resumed run does not pass those epochs again, and its files stay in ``kept_dir``."""

    def __init__(self, specs: Sequence[RunSpec], models: Sequence[nn.Module], kept_dir: Path):
        self.wanted = {i: (set(spec.checkpoints), Path(kept_dir) / spec.name, model)
                       for i, (spec, model) in enumerate(zip(specs, models)) if spec.checkpoints}

    def on_record(self, row: int, seed_index: int, record: dict[str, float]) -> None:
        epochs, run_dir, model = self.wanted.get(seed_index, ((), None, None))
        if record["epoch"] in epochs:
            save_torch(cpu_state(model), run_dir / checkpoint_file(record["epoch"]))


def move_checkpoints(spec: RunSpec, kept_dir: Path, out_dir: Path) -> None:
    """Move the checkpoints ``CheckpointSaver`` kept in ``kept_dir`` (beside the job's resume state) into
    the run's directory ``out_dir``, and remove ``kept_dir``."""
    if spec.checkpoints:
        for epoch in spec.checkpoints:
            (out_dir / checkpoint_file(epoch)).parent.mkdir(parents=True, exist_ok=True)
            os.replace(kept_dir / checkpoint_file(epoch), out_dir / checkpoint_file(epoch))
        (kept_dir / checkpoint_file(epoch)).parent.rmdir()
        kept_dir.rmdir()


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


def published_run(spec: RunSpec, runs_dir) -> Path | None:
    """``runs_dir/<run>`` where it holds every file the plan asks of ``spec`` (``run_file_names``), else
    None. Such a run needs no training: its name is the hash of what determines its numbers, and a run
    gives the same files whichever job trains it (docs/caching.md, "Same spec, same bits")."""
    run_dir = Path(runs_dir) / spec.name
    return run_dir if all((run_dir / name).is_file() for name in run_file_names(spec)) else None


def link_files(source: Path, target: Path, names: Sequence[str]) -> None:
    """Give ``target/<name>`` the content of ``source/<name>`` for each name (directories made as needed):
    a hard link where the file system allows (the same file, its times kept), else a copy with its times."""
    for name in names:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source / name, target / name)
        except OSError:
            shutil.copy2(source / name, target / name)
