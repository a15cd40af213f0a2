"""The training engine: train a model on device-resident tensors until a stop rule fires.

The hot loop is lean on purpose: the data already live on the device, a batch is an index slice of a
seeded permutation, and losses and accuracies accumulate in device scalars that are read once per epoch,
so there is no per-step host synchronisation and no per-sample Python.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .io import save_torch
from .spec import EngineSpec, OptimizerSpec, StopSpec

OPTIMIZERS: dict[str, Callable[[Any, OptimizerSpec], torch.optim.Optimizer]] = {
    # A fresh optimiser per run: the paper resets Adam's state between rounds (its Section 3.5).
    "sgd": lambda params, o: torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay),
    "adam": lambda params, o: torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay),
}

EPOCH_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "epoch_time_s", "samples_seen")


def build_optimizer(model: nn.Module, spec: OptimizerSpec) -> torch.optim.Optimizer:
    return OPTIMIZERS[spec.name](model.parameters(), spec)


# bf16 autocast on the CPU. None (auto): only for convolutional models, and only on CPUs with native
# bf16 instructions (AVX512-BF16 or AMX). Measured on the development CPU (AMD EPYC with AVX512-BF16,
# benchmarks/README.md): ResNet-18 trained 1.6-2.3x faster in bf16, while the MLP and logistic
# regression, whose steps are too small to gain, ran 10-20% slower. Where bf16 does not apply, a bf16 run
# runs in fp32 and its metrics say so. True or False overrides the rule.
CPU_BF16: bool | None = None


def cpu_has_native_bf16() -> bool:
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


@dataclass(frozen=True)
class ResolvedEngine:
    """What the engine actually does on this device for this model (recorded in metrics.json)."""

    autocast: torch.dtype | None = None  # None: plain fp32
    channels_last: bool = False
    compile: bool = False

    @property
    def precision(self) -> str:
        return "bf16" if self.autocast == torch.bfloat16 else "fp32"

    def context(self, device: torch.device):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast)


def resolve_engine(engine: EngineSpec | None, device: torch.device, model: nn.Module) -> ResolvedEngine:
    if engine is None:
        return ResolvedEngine()
    cuda = device.type == "cuda"
    convolutional = any(isinstance(m, nn.Conv2d) for m in model.modules())
    cpu_bf16 = (convolutional and cpu_has_native_bf16()) if CPU_BF16 is None else CPU_BF16
    bf16 = engine.precision == "bf16" and (cuda or (device.type == "cpu" and cpu_bf16))
    # NHWC suits cuDNN's tensor cores and oneDNN's CPU convolutions alike (1.3x for ResNet-18 here)
    return ResolvedEngine(autocast=torch.bfloat16 if bf16 else None,
                          channels_last=engine.channels_last and convolutional,
                          compile=engine.compile)


def prepare_model(model: nn.Module, resolved: ResolvedEngine) -> nn.Module:
    """Apply the memory format in place; return the module to call (compiled or not). The returned
    module shares its parameters with ``model``, whose state dict stays the one to save."""
    if resolved.channels_last:
        model.to(memory_format=torch.channels_last)
    return torch.compile(model) if resolved.compile else model


@dataclass
class TrainResult:
    history: list[dict[str, float]]
    stopped_by: str  # "threshold" (reached the training-accuracy threshold), "max_epochs" or "epochs"
    train_time_s: float  # training only: evaluation excluded
    engine: "ResolvedEngine" = field(default_factory=lambda: ResolvedEngine())

    @property
    def converged(self) -> bool:
        return self.stopped_by == "threshold"

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1]


@dataclass
class Checkpointing:
    """Periodic resumable state, so an interrupted long run resumes instead of starting over."""

    path: Path
    every_s: float = 300.0
    tag: str = ""  # the run id: a resume file of another run is never picked up


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096,
             resolved: ResolvedEngine = ResolvedEngine()) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on (x, y), in eval mode, in large batches, one host sync."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for start in range(0, len(x), batch_size):
        with resolved.context(x.device):
            logits = model(_formatted(x[start:start + batch_size], resolved))
        yb = y[start:start + batch_size]
        loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum")
        correct += (logits.argmax(1) == yb).sum()
    model.train(was_training)
    n = max(len(x), 1)
    return loss_sum.item() / n, correct.item() / n


def _formatted(xb: torch.Tensor, resolved: ResolvedEngine) -> torch.Tensor:
    return xb.contiguous(memory_format=torch.channels_last) if resolved.channels_last and xb.dim() == 4 else xb


def train_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                perm: torch.Tensor, batch_size: int,
                resolved: ResolvedEngine = ResolvedEngine()) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass over ``perm`` in batches; returns the summed loss and correct count as device scalars
    (read them once, after the epoch: reading per step would synchronise the host every step)."""
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for start in range(0, len(perm), batch_size):
        idx = perm[start:start + batch_size]
        xb, yb = _formatted(x[idx], resolved), y[idx]
        with resolved.context(x.device):
            logits = model(xb)
            loss = F.cross_entropy(logits.float(), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss.detach() * len(idx)
        correct += (logits.detach().argmax(1) == yb).sum()
    return loss_sum, correct


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(
    model: nn.Module,
    optimizer: OptimizerSpec,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    *,
    batch_size: int,
    stop: StopSpec,
    seed: int,
    eval_batch_size: int = 4096,
    checkpointing: Checkpointing | None = None,
    log: Callable[[str], None] | None = print,
    log_every_s: float = 10.0,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    evaluate_every_epoch: bool = True,
    engine: EngineSpec | None = None,
) -> TrainResult:
    """Train ``model`` in place on (x_train, y_train) and evaluate on (x_val, y_val) after every epoch.

    Training accuracy is the running accuracy over the epoch in train mode, as in the authors' code;
    it is what the ``converged`` stop rule compares with the threshold. With ``evaluate_every_epoch``
    off, only the last epoch is evaluated (its record has the validation metrics, earlier ones NaN): for
    online rounds, where only each round's final model is reported. ``engine`` selects precision,
    memory format and compilation (see EngineSpec); what was applied is in the result's ``engine``.
    """
    device = x_train.device
    n = len(x_train)
    opt = build_optimizer(model, optimizer)
    resolved = resolve_engine(engine, device, model)
    step_model = prepare_model(model, resolved)
    # Batch order has its own generator, so it depends only on the seed and not on how the model was made
    order_gen = torch.Generator().manual_seed(2 * seed + 1)
    history: list[dict[str, float]] = []
    samples_seen, train_time_s, start_epoch = 0, 0.0, 0

    if checkpointing is not None and checkpointing.path.exists():
        state = torch.load(checkpointing.path, weights_only=False, map_location=device)
        if state.get("tag") == checkpointing.tag:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            order_gen.set_state(state["order_gen"])
            history, samples_seen, train_time_s = state["history"], state["samples_seen"], state["train_time_s"]
            start_epoch = len(history)
            if log:
                log(f"resumed from {checkpointing.path} after epoch {start_epoch}")
    last_checkpoint = last_log = time.monotonic()

    stopped_by = stop.cap_reason
    if history and stop.reached(history[-1]["train_acc"]):
        stopped_by = "threshold"  # interrupted between finishing and saving: nothing left to train
    model.train()
    for epoch in range(start_epoch, stop.max_epochs):
        if stopped_by == "threshold":
            break
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=order_gen).to(device, non_blocking=True)
        loss_sum, correct = train_epoch(step_model, opt, x_train, y_train, perm, batch_size, resolved)
        _synchronize(device)
        epoch_time = time.perf_counter() - t0
        train_time_s += epoch_time
        samples_seen += n

        train_acc = correct.item() / n
        if stop.reached(train_acc):
            stopped_by = "threshold"
        last = epoch + 1 == stop.max_epochs or stopped_by == "threshold"
        if evaluate_every_epoch or last:
            val_loss, val_acc = evaluate(step_model, x_val, y_val, eval_batch_size, resolved)
        else:
            val_loss = val_acc = float("nan")
        record = {
            "epoch": epoch + 1,
            "train_loss": loss_sum.item() / n,
            "train_acc": train_acc,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "epoch_time_s": epoch_time,
            "samples_seen": samples_seen,
        }
        history.append(record)
        if on_epoch:
            on_epoch(record)

        now = time.monotonic()
        if log and (last or now - last_log >= log_every_s):
            log(f"epoch {epoch + 1}/{stop.max_epochs}  train_loss {record['train_loss']:.4f}  "
                f"train_acc {record['train_acc']:.4f}  val_acc {val_acc:.4f}  train_time {train_time_s:.1f}s")
            last_log = now
        if checkpointing is not None and not last and now - last_checkpoint >= checkpointing.every_s:
            save_torch({"tag": checkpointing.tag, "model": model.state_dict(), "optimizer": opt.state_dict(),
                        "order_gen": order_gen.get_state(), "history": history,
                        "samples_seen": samples_seen, "train_time_s": train_time_s}, checkpointing.path)
            last_checkpoint = now

    return TrainResult(history=history, stopped_by=stopped_by, train_time_s=train_time_s, engine=resolved)
