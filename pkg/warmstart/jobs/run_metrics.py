"""A run's final metrics (``metrics.json``): what training measured, the final model on the test split, and
what ran it."""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from warmstart.components.datasets import DeviceData
from warmstart.components.inits import InitCost
from warmstart.components.models import count_parameters
from warmstart.core.spec import RunSpec
from warmstart.engine.loop import TrainResult
from warmstart.engine.objective import evaluate
from warmstart.jobs.provenance import provenance


def evaluate_test_split(model: nn.Module, data: DeviceData, result: TrainResult) -> dict:
    """The final model's loss and accuracy on the data set's official test split (``test_loss``,
    ``test_acc``; NaN when the data set has none), measured after training (its time is not training time)
    in the precision the run trained with (uncompiled, memory format untouched). The leaderboard reports
    these: each arm's setting is chosen on the validation accuracy, so the number it is reported with must
    come from other data."""
    if len(data.x_test) == 0:
        return {"test_loss": float("nan"), "test_acc": float("nan")}
    engine = dataclasses.replace(result.engine, compile=False, channels_last=False)
    loss, acc = evaluate(model, data.x_test, data.y_test, resolved=engine)
    return {"test_loss": loss, "test_acc": acc}


def run_metrics(spec: RunSpec, result: TrainResult, model: nn.Module, n_train: int, n_val: int,
                device: torch.device, init_cost: InitCost | None = None, test: dict | None = None) -> dict:
    """The final metrics of a run (metrics.json), whichever way it was trained; ``test``: the final model on
    the test split (``evaluate_test_split``; NaN when not given)."""
    final = result.final
    init_cost = init_cost or InitCost()
    return {
        "run_id": spec.run_id,
        "name": spec.name,
        "val_acc": final["val_acc"],
        "val_loss": final["val_loss"],
        "test_acc": (test or {}).get("test_acc", float("nan")),  # the official test split (never used to choose)
        "test_loss": (test or {}).get("test_loss", float("nan")),
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
