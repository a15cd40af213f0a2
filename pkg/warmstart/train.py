"""The training engine: one training step, one epoch record and one loop for every kind of run.

A run trains S models side by side: S = 1 for a single run (any model, ``SingleModel``) and for an online
round, S = the seeds of one condition for a stack of cheap models (``StackedModels``: the seeds' weights
as ``[S, ...]`` tensors, every linear layer one batched matrix product). Both present the same interface
(forward over ``[S, B, ...]`` inputs, weights as ``[S, ...]`` tensors), so everything below is written
once over a leading seed dimension:

* ``batch_objective``: each seed's mean cross-entropy plus the run's loss terms (``warmstart.terms``);
* ``train_epoch``: one pass in batches; the summed objective is back-propagated, so each seed's slice of
  the stacked weights gets exactly its own gradient; the run's interventions (``warmstart.units``) run
  after each optimiser step;
* ``epoch_record``: the per-epoch row of ``epochs.parquet``, with the probes' columns (``warmstart.probes``);
* ``fit``: epochs until each seed's stop rule fires; a finished seed is written out of the stack and its
  rows (and optimiser and intervention state) dropped; where it stands is one ``LoopState``, saved every
  ``checkpoint_every_s`` and restored by a resumed job.

The hot loop is lean on purpose: the data already live on the device, a batch is an index slice of a
seeded permutation, and losses and accuracies accumulate in device tensors that are read once per epoch,
so there is no per-step host synchronisation and no per-sample Python.
"""
from __future__ import annotations

import contextlib
import copy
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .io import load_torch, save_torch
from .optimizers import build_optimizer
from .probes import BoundProbe, ProbeContext
from .records import EPOCH_FIELDS  # noqa: F401  (the record's columns; also read from here)
from .spec import EngineSpec, OptimizerSpec, StopSpec
from .terms import BoundTerm, TermBatch


# -- engine options ---------------------------------------------------------------------------------------

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


def cpu_channels_last_is_safe() -> bool:
    """Whether oneDNN's NHWC convolutions can be trusted on this CPU. On CPUs without AVX-512, oneDNN's
    AVX2 1x1-convolution kernel computes the weight gradient of a strided 1x1 convolution with fewer
    input channels than its block (8) wrongly in NHWC: it writes past its workspace (a segfault with one
    thread, wrong gradients or a hang with more; uxlfoundation/oneDNN#6035, open). Measured here: a
    ResNet-18 of width 4 in channels_last crashes in its first backward pass with one thread on an AVX2
    CPU. So NHWC on a CPU only where the CPU has AVX-512."""
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def resolve_engine(engine: EngineSpec | None, device: torch.device, model: nn.Module) -> ResolvedEngine:
    if engine is None:
        return ResolvedEngine()
    cuda = device.type == "cuda"
    convolutional = any(isinstance(m, nn.Conv2d) for m in model.modules())
    cpu_bf16 = (convolutional and cpu_has_native_bf16()) if CPU_BF16 is None else CPU_BF16
    bf16 = engine.precision == "bf16" and (cuda or (device.type == "cpu" and cpu_bf16))
    # NHWC suits cuDNN's tensor cores and oneDNN's CPU convolutions alike (1.3x for ResNet-18 on an
    # AVX-512 CPU), where oneDNN's NHWC kernels are sound (cpu_channels_last_is_safe)
    nhwc = engine.channels_last and convolutional and (cuda or cpu_channels_last_is_safe())
    return ResolvedEngine(autocast=torch.bfloat16 if bf16 else None,
                          channels_last=nhwc,
                          compile=engine.compile)


def prepare_model(model: nn.Module, resolved: ResolvedEngine) -> nn.Module:
    """Apply the memory format in place; return the module to call (compiled or not). The returned
    module shares its parameters with ``model``, whose state dict stays the one to save."""
    if resolved.channels_last:
        model.to(memory_format=torch.channels_last)
    return torch.compile(model) if resolved.compile else model


def _formatted(xb: torch.Tensor, resolved: ResolvedEngine) -> torch.Tensor:
    return xb.contiguous(memory_format=torch.channels_last) if resolved.channels_last and xb.dim() == 4 else xb


# -- the models being trained: one, or a stack of seeds ------------------------------------------------------

class _Recording:
    """What both trainees share: an activation recorder (``warmstart.units``), called only during the
    forward passes a ``recording()`` block makes (the training objective's), never during evaluation,
    probes or a loss term's extra forward."""

    _record: Callable[[str, torch.Tensor], None] | None = None
    _recording: bool = False

    def set_recorder(self, record: Callable[[str, torch.Tensor], None], names: Collection[str]) -> None:
        self._record = record

    @contextlib.contextmanager
    def recording(self):
        self._recording = self._record is not None
        try:
            yield
        finally:
            self._recording = False

    def _maybe_record(self, name: str, h: torch.Tensor) -> None:
        if self._recording:
            self._record(name, h)


class SingleModel(_Recording):
    """One model of any architecture, seen through the seed-stacked interface with S = 1."""

    num_seeds = 1
    stacked = False

    def __init__(self, model: nn.Module, resolved: ResolvedEngine = ResolvedEngine()):
        self.model, self.resolved = model, resolved
        self.module = prepare_model(model, resolved)
        self._hooks: list = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(_formatted(x[0], self.resolved)).unsqueeze(0)

    def set_recorder(self, record, names) -> None:
        from .units import hook_activations

        super().set_recorder(record, names)
        self._hooks = hook_activations(self.model, set(names), self._maybe_record)

    def trainable_names(self) -> set[str]:
        return {n for n, p in self.model.named_parameters() if p.requires_grad}

    def leaf(self, name: str) -> torch.Tensor:
        """The tensor the optimiser holds for parameter ``name``."""
        return self.model.get_parameter(name)

    def param_rows(self, name: str) -> torch.Tensor:
        """Parameter ``name`` as a [1, ...] view: writes (under no_grad) reach the model."""
        return self.model.get_parameter(name).unsqueeze(0)

    def buffer_rows(self, name: str) -> torch.Tensor | None:
        return self.model.get_buffer(name).unsqueeze(0)

    def module_of(self, row: int) -> nn.Module:
        return self.model

    def named_params(self) -> dict[str, torch.Tensor]:
        return {n: p.unsqueeze(0) for n, p in self.model.named_parameters()}

    def optimizer_params(self) -> list[torch.Tensor]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def grads(self, loss: torch.Tensor) -> dict[str, torch.Tensor]:
        """Gradients of ``loss`` by the trainable weights as [1, ...] tensors, leaving ``.grad`` alone."""
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
        return {n: (torch.zeros_like(p) if g is None else g).unsqueeze(0) for (n, p), g in zip(named, grads)}

    def train(self, mode: bool = True) -> None:
        self.model.train(mode)

    @property
    def training(self) -> bool:
        return self.model.training

    def models(self) -> list[nn.Module]:
        return [self.model]

    def keep(self, rows: list[int], opt: torch.optim.Optimizer, make_opt) -> torch.optim.Optimizer:
        if rows != [0]:
            raise ValueError("a single model keeps its one row until it is done")
        return opt

    def export(self, row: int) -> None:
        """Write row ``row``'s weights into its own module (a single model trains in place)."""

    def row_optimizer_state(self, opt: torch.optim.Optimizer, row: int) -> dict:
        return copy.deepcopy(opt.state_dict())

    def resume_state(self) -> dict:
        return {"model": self.model.state_dict()}

    def load_resume_state(self, state: dict, make_opt) -> torch.optim.Optimizer:
        self.model.load_state_dict(state["model"])
        return make_opt(self.optimizer_params())


_ACTIVATIONS = {nn.Tanh: torch.tanh, nn.ReLU: torch.relu}
STACK_METHODS = ("bmm", "vmap")


def stack_layers(model: nn.Module) -> list[tuple]:
    """The model as a list of ops the batched forward runs: only Flatten, Linear, Tanh and ReLU."""
    if not isinstance(model, nn.Sequential):
        raise ValueError(f"stacked training needs an nn.Sequential model, got {type(model).__name__}")
    ops: list[tuple] = []
    for name, layer in model.named_children():
        if isinstance(layer, nn.Flatten) and layer.start_dim == 1 and layer.end_dim == -1:
            ops.append(("flatten",))
        elif isinstance(layer, nn.Linear):
            ops.append(("linear", f"{name}.weight", None if layer.bias is None else f"{name}.bias"))
        elif type(layer) in _ACTIVATIONS:
            ops.append(("act", _ACTIVATIONS[type(layer)], name))
        else:
            raise ValueError(f"stacked training cannot batch layer {name}: {layer!r}")
    if any(True for _ in model.buffers()):
        raise ValueError("stacked training does not support models with buffers")
    return ops


def _bmm_forward(ops: list[tuple]) -> Callable[..., torch.Tensor]:
    """Hand-written batched forward: x [S, B, ...] -> logits [S, B, C], one baddbmm per linear layer;
    ``record(name, h)`` (when given) receives each activation layer's output [S, B, U]."""
    def forward(params: dict[str, torch.Tensor], x: torch.Tensor, record=None) -> torch.Tensor:
        h = x
        for op in ops:
            if op[0] == "flatten":
                h = h.flatten(2)
            elif op[0] == "linear":
                w = params[op[1]].transpose(1, 2)
                h = torch.bmm(h, w) if op[2] is None else torch.baddbmm(params[op[2]].unsqueeze(1), h, w)
            else:
                h = op[1](h)
                if record is not None:
                    record(op[2], h)
        return h
    return forward


def _vmap_forward(model: nn.Module) -> Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]:
    """The same through torch.func: vmap over functional_call of a weightless copy of the model."""
    base = copy.deepcopy(model).to("meta")

    def one(params, x):
        return torch.func.functional_call(base, params, (x,))
    return torch.vmap(one, in_dims=(0, 0))


class StackedModels(_Recording):
    """S seeds of one stackable model (``stack_layers``) as ``[S, ...]`` leaf tensors, one row per seed.

    Each seed keeps its own module (``models()``); ``export(row)`` copies its row back into it, and
    ``keep(rows)`` drops finished rows from the weights and the optimiser state alike."""

    def __init__(self, models: Sequence[nn.Module], method: str = "bmm"):
        if method not in STACK_METHODS:
            raise ValueError(f"method must be one of {STACK_METHODS}, got {method!r}")
        self._models = list(models)
        self._forward = _bmm_forward(stack_layers(self._models[0])) if method == "bmm" else _vmap_forward(self._models[0])
        self.trainable = {n: p.requires_grad for n, p in self._models[0].named_parameters()}
        self.params = self._leaves({n: torch.stack([dict(m.named_parameters())[n].detach() for m in self._models])
                                    for n in self.trainable})
        self.rows = list(range(len(self._models)))  # the model behind each row still in the stack
        self._training = True
        self._method = method

    def _leaves(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {n: t.detach().clone().requires_grad_(self.trainable[n]) for n, t in tensors.items()}

    @property
    def num_seeds(self) -> int:
        return len(self.rows)

    stacked = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._recording:
            return self._forward(self.params, x, self._maybe_record)
        return self._forward(self.params, x)

    def set_recorder(self, record, names) -> None:
        if self._method != "bmm":
            raise ValueError("interventions need the bmm stacked forward (it records the activations)")
        super().set_recorder(record, names)

    def named_params(self) -> dict[str, torch.Tensor]:
        return self.params

    def trainable_names(self) -> set[str]:
        return {n for n, t in self.trainable.items() if t}

    def leaf(self, name: str) -> torch.Tensor:
        return self.params[name]

    def param_rows(self, name: str) -> torch.Tensor:
        return self.params[name]

    def buffer_rows(self, name: str) -> None:
        return None  # stacked models have no buffers (stack_layers)

    def module_of(self, row: int) -> nn.Module:
        return self._models[self.rows[row]]

    def optimizer_params(self) -> list[torch.Tensor]:
        return [p for p in self.params.values() if p.requires_grad]

    def grads(self, loss: torch.Tensor) -> dict[str, torch.Tensor]:
        named = [(n, p) for n, p in self.params.items() if p.requires_grad]
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
        return {n: torch.zeros_like(p) if g is None else g for (n, p), g in zip(named, grads)}

    def train(self, mode: bool = True) -> None:
        self._training = mode  # no dropout or normalisation layers: the mode changes nothing

    @property
    def training(self) -> bool:
        return self._training

    def models(self) -> list[nn.Module]:
        return self._models

    def export(self, row: int) -> None:
        with torch.no_grad():
            for name, p in self._models[self.rows[row]].named_parameters():
                p.copy_(self.params[name][row])

    def row_optimizer_state(self, opt: torch.optim.Optimizer, row: int) -> dict:
        """Row ``row``'s optimiser state as its own model's optimiser would hold it (the stack's step
        count is the row's own: every row still training has taken every step)."""
        state = opt.state_dict()
        state["state"] = {k: {key: v[row].clone() if torch.is_tensor(v) and v.dim() > 0 else copy.deepcopy(v)
                              for key, v in per_param.items()} for k, per_param in state["state"].items()}
        state["param_groups"] = copy.deepcopy(state["param_groups"])
        return state

    def keep(self, rows: list[int], opt: torch.optim.Optimizer, make_opt) -> torch.optim.Optimizer:
        """Keep only ``rows``: new leaves holding them, and an optimiser whose per-parameter state
        (momentum buffers, Adam's moments) is sliced the same way; scalar state (Adam's step) is kept."""
        index = torch.tensor(rows, device=next(iter(self.params.values())).device)
        state = opt.state_dict()
        for per_param in state["state"].values():
            for key, value in per_param.items():
                if torch.is_tensor(value) and value.dim() > 0:
                    per_param[key] = value[index]
        self.params = self._leaves({n: p[index] for n, p in self.params.items()})
        self.rows = [self.rows[r] for r in rows]
        new_opt = make_opt(self.optimizer_params())
        new_opt.load_state_dict(state)
        return new_opt

    def resume_state(self) -> dict:
        return {"params": {n: p.detach() for n, p in self.params.items()}, "rows": self.rows}

    def load_resume_state(self, state: dict, make_opt) -> torch.optim.Optimizer:
        self.params = self._leaves(state["params"])
        self.rows = list(state["rows"])
        return make_opt(self.optimizer_params())


def stack_state(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Per-seed tensors (anchors, a term's setup) as [S, ...] tensors."""
    return {n: torch.stack([s[n] for s in states]) for n in states[0]} if states and states[0] else {}


# -- one batch, one epoch ------------------------------------------------------------------------------------

@dataclass
class RunState:
    """What a run's terms and probes read besides the batch, as [S, ...] tensors (rows as in the trainee):
    ``anchors['start']`` the weights the run began training from, ``anchors['origin']`` its lineage's
    first initialisation (for a batch run the fresh model under its seed, which is also its phase-1
    parent's initialisation; for an online stream the first round's)."""

    terms: list[BoundTerm] = field(default_factory=list)
    probes: list[BoundProbe] = field(default_factory=list)
    interventions: list = field(default_factory=list)  # units.BoundIntervention, driven by units.Interventions
    anchors: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    probe_columns: list[list[str]] = field(default_factory=list)  # the columns each probe measured, in order

    def keep(self, index: torch.Tensor) -> None:
        for anchor in self.anchors.values():
            for n in anchor:
                anchor[n] = anchor[n][index]
        for term in self.terms:
            term.state = {n: t[index] for n, t in term.state.items()}


def batch_objective(trainee, xb: torch.Tensor, yb: torch.Tensor, run: RunState,
                    resolved: ResolvedEngine) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The one definition of what a run minimises: per seed, the mean cross-entropy of the batch plus
    every loss term of the run. Returns (objective [S], cross-entropy [S], logits [S, B, C])."""
    with resolved.context(xb.device), trainee.recording():
        logits = trainee.forward(xb)
    logits = logits.float()
    s = logits.shape[0]
    # per sample, then each seed's mean: one reduction for a single model and a stack alike
    ce = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none").view(s, -1).mean(1)
    objective = ce
    if run.terms:
        def forward(x: torch.Tensor) -> torch.Tensor:
            with resolved.context(x.device):
                return trainee.forward(x).float()
        batch = TermBatch(logits=logits, targets=yb, inputs=xb, cross_entropy=ce, params=trainee.named_params(),
                          anchors=run.anchors, state={}, forward=forward)
        for term in run.terms:
            objective = objective + term(batch)
    return objective, ce, logits


def train_epoch(trainee, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, order: torch.Tensor,
                batch_size: int, run: RunState | None = None, resolved: ResolvedEngine = ResolvedEngine(),
                restart_every: int | None = None, interventions=None,
                ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, int]]:
    """One pass of every seed over its batch order ``order`` [S, n] (indices into x, y). Returns each
    seed's summed cross-entropy and correct count as device tensors [S] (read them once, after the epoch:
    reading per step would synchronise the host every step), and the correct count [S] and sample count
    since the counts last restarted (every ``restart_every`` batches; None: the whole epoch), which the
    stop rule reads (``StopSpec.restart_every``). ``interventions`` (``units.Interventions``) run after
    each optimiser step."""
    run = run or RunState()
    s, n = order.shape
    loss_sum = torch.zeros(s, device=x.device)
    correct = torch.zeros(s, device=x.device, dtype=torch.long)
    restarted, restarted_at = correct.clone(), 0
    for batch, start in enumerate(range(0, n, batch_size)):
        if restart_every and batch % restart_every == 0:
            restarted, restarted_at = correct.clone(), start
        if s == 1:  # a 1-D gather is cheaper; the views give the same [1, B, ...] shapes
            idx = order[0, start:start + batch_size]
            xb, yb = x[idx].unsqueeze(0), y[idx].unsqueeze(0)
        else:
            idx = order[:, start:start + batch_size]
            xb, yb = x[idx], y[idx]  # [S, B, ...], [S, B]
        objective, ce, logits = batch_objective(trainee, xb, yb, run, resolved)
        opt.zero_grad(set_to_none=True)
        objective.sum().backward()  # d(sum)/d(row s) = d(objective s)/d(row s): each seed's own gradient
        opt.step()
        if interventions is not None:
            interventions.after_step(opt, yb.shape[1])
        loss_sum += ce.detach() * yb.shape[1]
        correct += (logits.detach().argmax(-1) == yb).sum(1)
    return loss_sum, correct, (correct - restarted, n - restarted_at)


@contextlib.contextmanager
def eval_mode(trainee):
    was_training = trainee.training
    trainee.train(False)
    try:
        yield
    finally:
        trainee.train(was_training)


def evaluate_rows(trainee, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, batch_size: int = 4096,
                  resolved: ResolvedEngine = ResolvedEngine()) -> tuple[list[float], list[float]]:
    """Per-seed mean cross-entropy and accuracy, each seed on its own indices ``idx[s]``, in eval mode, in
    large batches, one host sync."""
    s, n = idx.shape
    loss_sum = torch.zeros(s, device=x.device)
    correct = torch.zeros(s, device=x.device, dtype=torch.long)
    with eval_mode(trainee), torch.inference_mode():
        for start in range(0, n, batch_size):
            part = idx[:, start:start + batch_size]
            yb = y[part]
            with resolved.context(x.device):
                logits = trainee.forward(x[part]).float()
            loss_sum += F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none").view(s, -1).sum(1)
            correct += (logits.argmax(-1) == yb).sum(1)
    n = max(n, 1)
    return [v / n for v in loss_sum.tolist()], [c / n for c in correct.tolist()]


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096,
             resolved: ResolvedEngine = ResolvedEngine()) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of one model on (x, y)."""
    idx = torch.arange(len(x), device=x.device).unsqueeze(0)
    losses, accs = evaluate_rows(SingleModel(model, resolved), x, y, idx, batch_size, resolved)
    return losses[0], accs[0]


def summed_cross_entropy(trainee, x: torch.Tensor, y: torch.Tensor, resolved: ResolvedEngine):
    """(inputs [S, B, ...], targets [S, B]) -> each seed's summed cross-entropy [S], differentiable."""
    def objective(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        with resolved.context(xb.device):
            logits = trainee.forward(xb).float()
        s = logits.shape[0]
        return F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none").view(s, -1).sum(1)
    return objective


def epoch_record(epoch: int, loss_sum: float, correct: int, n: int, val_loss: float, val_acc: float,
                 epoch_time_s: float, samples_seen: int, measured: dict[str, float]) -> dict[str, float]:
    """The one definition of a row of ``epochs.parquet`` (EPOCH_FIELDS, then the probes' columns)."""
    return {"epoch": epoch, "train_loss": loss_sum / n, "train_acc": correct / n, "val_loss": val_loss,
            "val_acc": val_acc, "epoch_time_s": epoch_time_s, "samples_seen": samples_seen, **measured}


# -- the loop --------------------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    history: list[dict[str, float]]
    stopped_by: str  # "threshold" (reached the training-accuracy threshold), "max_epochs" or "epochs"
    train_time_s: float  # training only: evaluation and probes excluded
    engine: ResolvedEngine = field(default_factory=ResolvedEngine)
    optimizer_state: dict | None = None  # the final optimiser state, when asked to keep it
    probe_columns: list[list[str]] = field(default_factory=list)  # per probe of the run: its columns
    units_reset: int = 0  # units the run's interventions reset

    @property
    def converged(self) -> bool:
        return self.stopped_by == "threshold"

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1]


@dataclass
class Checkpointing:
    """Periodic resumable state, so an interrupted long run (or stack) resumes instead of starting over."""

    path: Path
    every_s: float = 300.0
    tag: str = ""  # the run (or stack) id: a resume file of another run is never picked up


@dataclass
class TrainData:
    """Where every seed's samples are: all of them on the device, each seed's sets as index rows."""

    x: torch.Tensor
    y: torch.Tensor
    train_idx: torch.Tensor  # [S, n]
    val_idx: torch.Tensor  # [S, m]
    subsets: dict[str, torch.Tensor] = field(default_factory=dict)  # named [S, k] index rows, for probes

    def rows(self, index: torch.Tensor) -> "TrainData":
        return TrainData(self.x, self.y, self.train_idx[index], self.val_idx[index],
                         {k: v[index] for k, v in self.subsets.items()})


@contextlib.contextmanager
def save_on_signal(enabled: bool):
    """While training with checkpointing, SIGTERM (``scancel``, a preemption, Snakemake stopping) and
    SIGUSR1 (SLURM's ``--signal=USR1@<s>`` before the time limit) are recorded instead of killing the
    process; ``fit`` then saves its resumable state at the end of the epoch and exits, so the job resumes
    from there. Yields the list of signal names received. Only the main thread can install handlers."""
    received: list[str] = []
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield received
        return

    def record(signum, frame):
        received.append(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, record) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class LoopState:
    """Where ``fit`` stands: everything a resumed run needs to go on with the same bits, in one object
    that saves and restores itself (``save`` / ``restore``). Per seed position i (the order of ``seeds``):
    its epoch records, why it stopped, its training time, and, once done, its final state dict; ``active``
    lists the positions still training, in the trainee's row order."""

    active: list[int]
    histories: list[list[dict[str, float]]]
    stopped_by: list[str]
    train_time: list[float]
    generators: list[torch.Generator]
    finished: dict[int, dict | None] = field(default_factory=dict)  # exported seeds (state dicts once saved)
    kept_states: dict[int, dict] = field(default_factory=dict)  # seed -> its final optimiser state, if kept
    units_reset: dict[int, int] = field(default_factory=dict)  # finished seed -> units its interventions reset

    @classmethod
    def start(cls, seeds: Sequence[int], stop: StopSpec) -> "LoopState":
        # seed i's batch order depends only on its seed: its own generator
        return cls(list(range(len(seeds))), [[] for _ in seeds], [stop.cap_reason] * len(seeds),
                   [0.0] * len(seeds), [torch.Generator().manual_seed(2 * seed + 1) for seed in seeds])

    @property
    def epoch(self) -> int:
        """Epochs done by the seeds still training."""
        return len(self.histories[self.active[0]]) if self.active else 0

    def save(self, checkpointing: Checkpointing, trainee, opt, interventions) -> None:
        models = trainee.models()
        save_torch({"tag": checkpointing.tag, "active": self.active, "histories": self.histories,
                    "stopped_by": self.stopped_by, "train_time": self.train_time,
                    "generators": [g.get_state() for g in self.generators],
                    "finished": {i: models[i].state_dict() for i in self.finished}, "kept_states": self.kept_states,
                    "units_reset": self.units_reset,
                    "trainee": trainee.resume_state(), "optimizer": opt.state_dict(),
                    "interventions": None if interventions is None else interventions.resume_state()},
                   checkpointing.path)

    def restore(self, saved: dict, trainee, make_opt, interventions):
        """Take the saved state over (the trainee's rows, its modules of finished seeds, the interventions'
        state); returns the optimiser, rebuilt over the saved rows."""
        self.active, self.histories, self.stopped_by, self.train_time = (
            saved["active"], saved["histories"], saved["stopped_by"], saved["train_time"])
        for g, state in zip(self.generators, saved["generators"]):
            g.set_state(state)
        for i, state in saved["finished"].items():
            trainee.models()[i].load_state_dict(state)
            self.finished[i] = state
        self.kept_states, self.units_reset = saved["kept_states"], saved["units_reset"]
        opt = trainee.load_resume_state(saved["trainee"], make_opt)
        opt.load_state_dict(saved["optimizer"])
        if interventions is not None:
            interventions.load_resume_state(saved["interventions"])
        return opt


def fit(trainee, optimizer: OptimizerSpec, data: TrainData, seeds: Sequence[int], *, batch_size: int,
        stop: StopSpec, run: RunState | None = None, resolved: ResolvedEngine = ResolvedEngine(),
        eval_batch_size: int = 4096, evaluate_every_epoch: bool = True, checkpointing: Checkpointing | None = None,
        log: Callable[[str], None] | None = print, log_every_s: float = 10.0,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None, optimizer_state: dict | None = None,
        keep_optimizer: bool = False, export_at: Collection[int] = ()) -> list[TrainResult]:
    """Train every seed of ``trainee`` until its stop rule fires; returns one TrainResult per seed, in order.

    Seed i's batch order comes from its own generator, ``manual_seed(2 * seeds[i] + 1)``, one ``randperm``
    per epoch over its own training indices, so it depends only on the seed, not on what else is stacked.
    Training accuracy is the running accuracy over the epoch in train mode; the ``converged`` stop rule
    compares it (or, with ``stop.restart_every``, its counts since they last restarted, as the authors'
    code does every 10 batches) with the threshold. With ``evaluate_every_epoch`` off,
    a seed is evaluated only after its last epoch (the other records hold NaN). ``epoch_time_s`` of a seed
    is the epoch's training time divided by the seeds trained in it (its share of the shared work); the
    run's interventions run inside it. After each epoch in ``export_at``, every seed's row is written
    into its own module before ``on_epoch``.
    """
    from .units import Interventions

    run = run or RunState()
    device = data.x.device
    s_all = len(seeds)
    # the module behind the rows and whether they are stacked: what a per-layer optimiser (Muon) needs
    make_opt = lambda params: build_optimizer(params, optimizer, model=trainee.models()[0],  # noqa: E731
                                              stacked=isinstance(trainee, StackedModels))
    opt = make_opt(trainee.optimizer_params())
    if optimizer_state is not None:
        # a copy: load_state_dict keeps same-device tensors as they are, and the steps update them in place
        opt.load_state_dict(copy.deepcopy(optimizer_state))
    interventions = Interventions(run.interventions, trainee, seeds) if run.interventions else None
    n = data.train_idx.shape[1]
    loop = LoopState.start(seeds, stop)
    subset = data

    if checkpointing is not None and checkpointing.path.exists():
        saved = load_torch(checkpointing.path, what="the resume state", map_location=device,
                           fix=f"Delete {checkpointing.path}: the job then starts its runs from the beginning")
        if saved.get("tag") == checkpointing.tag:
            opt = loop.restore(saved, trainee, make_opt, interventions)
            index = torch.tensor(loop.active, device=device)
            run.keep(index)
            subset = data.rows(index)
            if log:
                log(f"resumed from {checkpointing.path} after epoch {loop.epoch}")
    last_checkpoint = last_log = time.monotonic()

    trainee.train(True)
    start_epoch = loop.epoch if loop.active else stop.max_epochs
    with save_on_signal(checkpointing is not None) as signalled:
        for epoch in range(start_epoch, stop.max_epochs):
            active = loop.active
            t0 = time.perf_counter()
            perms = torch.stack([torch.randperm(n, generator=loop.generators[i]) for i in active]).to(
                device, non_blocking=True)
            order = torch.gather(subset.train_idx, 1, perms)
            loss_sum, correct, (recent, n_recent) = train_epoch(trainee, opt, data.x, data.y, order, batch_size, run,
                                                                resolved, stop.restart_every, interventions)
            _synchronize(device)
            epoch_time = (time.perf_counter() - t0) / len(active)

            loss_sum, correct, recent = loss_sum.tolist(), correct.tolist(), recent.tolist()
            reached = [stop.reached(recent[row] / n_recent) for row in range(len(active))]
            done = [row for row in range(len(active)) if reached[row] or epoch + 1 == stop.max_epochs]
            if evaluate_every_epoch or done:
                val_loss, val_acc = evaluate_rows(trainee, data.x, data.y, subset.val_idx, eval_batch_size, resolved)
            measured = _measure(trainee, data, subset, run, resolved, eval_batch_size)
            for row, i in enumerate(active):
                loop.train_time[i] += epoch_time
                shown = evaluate_every_epoch or row in done
                record = epoch_record(epoch + 1, loss_sum[row], correct[row], n,
                                      val_loss[row] if shown else float("nan"), val_acc[row] if shown else float("nan"),
                                      epoch_time, n * (epoch + 1), {k: v[row] for k, v in measured.items()})
                loop.histories[i].append(record)
                if reached[row]:
                    loop.stopped_by[i] = "threshold"
                if record["epoch"] in export_at:  # e.g. a kept checkpoint: seed i's module holds its weights
                    trainee.export(row)
                if on_epoch:
                    on_epoch(i, record)
                if row in done:
                    trainee.export(row)
                    if keep_optimizer:
                        loop.kept_states[i] = trainee.row_optimizer_state(opt, row)
                    if interventions is not None:
                        loop.units_reset[i] = interventions.resets[row]
                    if log and s_all > 1:
                        log(f"[seed {seeds[i]}] done after epoch {epoch + 1} ({loop.stopped_by[i]}): "
                            f"train_acc {record['train_acc']:.4f}  val_acc {record['val_acc']:.4f}")

            now = time.monotonic()
            if log and (now - last_log >= log_every_s or (s_all == 1 and done)):
                log(f"epoch {epoch + 1}/{stop.max_epochs}: " + "  ".join(
                    f"train_acc {loop.histories[i][-1]['train_acc']:.4f} val_acc {loop.histories[i][-1]['val_acc']:.4f}"
                    for i in active) + f"  train_time {max(loop.train_time):.1f}s")
                last_log = now
            if done:
                keep_rows = [row for row in range(len(active)) if row not in done]
                for row in done:
                    loop.finished[active[row]] = None  # exported: its module holds the final weights
                loop.active = [active[row] for row in keep_rows]
                if not loop.active:
                    break
                index = torch.tensor(keep_rows, device=device)
                opt = trainee.keep(keep_rows, opt, make_opt)
                run.keep(index)
                if interventions is not None:
                    interventions.keep(keep_rows, index)
                subset = subset.rows(index)
            if checkpointing is not None and (now - last_checkpoint >= checkpointing.every_s or signalled):
                loop.save(checkpointing, trainee, opt, interventions)
                last_checkpoint = now
                if signalled:  # a scheduler's preemption or time-limit warning: stop now, resume later
                    raise SystemExit(f"{signalled[0]}: saved resumable state after epoch {epoch + 1} to "
                                     f"{checkpointing.path}; the job resumes from it when it runs again")

    return [TrainResult(loop.histories[i], loop.stopped_by[i], loop.train_time[i], resolved, loop.kept_states.get(i),
                        run.probe_columns, loop.units_reset.get(i, 0)) for i in range(s_all)]


def _measure(trainee, data: TrainData, subset: TrainData, run: RunState, resolved: ResolvedEngine,
             eval_batch_size: int) -> dict[str, list[float]]:
    """Every probe of the run on the rows still training, in eval mode; columns of [S] values."""
    if not run.probes:
        return {}
    subsets = {"train": subset.train_idx, **subset.subsets}
    ctx = ProbeContext(model=trainee, x=data.x, y=data.y, subsets=subsets, anchors=run.anchors,
                       objective=summed_cross_entropy(trainee, data.x, data.y, resolved),
                       eval_batch_size=eval_batch_size)
    out: dict[str, list[float]] = {}
    run.probe_columns = []
    with eval_mode(trainee):
        for probe in run.probes:
            measured = probe(ctx)
            run.probe_columns.append(list(measured))
            for column, values in measured.items():
                out[column] = values.detach().float().tolist()
    return out


def train(model: nn.Module, optimizer: OptimizerSpec, x_train: torch.Tensor, y_train: torch.Tensor,
          x_val: torch.Tensor, y_val: torch.Tensor, *, batch_size: int, stop: StopSpec, seed: int,
          eval_batch_size: int = 4096, checkpointing: Checkpointing | None = None,
          log: Callable[[str], None] | None = print, log_every_s: float = 10.0,
          on_epoch: Callable[[dict[str, float]], None] | None = None, evaluate_every_epoch: bool = True,
          engine: EngineSpec | None = None, run: RunState | None = None) -> TrainResult:
    """Train one ``model`` in place on (x_train, y_train), evaluating on (x_val, y_val): ``fit`` with one
    seed, for callers that hold the two sets as separate tensors."""
    x, y = torch.cat([x_train, x_val]), torch.cat([y_train, y_val])
    idx = torch.arange(len(x), device=x.device)
    data = TrainData(x, y, idx[:len(x_train)].unsqueeze(0), idx[len(x_train):].unsqueeze(0))
    resolved = resolve_engine(engine, x.device, model)
    hook = None if on_epoch is None else (lambda i, record: on_epoch(record))
    return fit(SingleModel(model, resolved), optimizer, data, [seed], batch_size=batch_size, stop=stop, run=run,
               resolved=resolved, eval_batch_size=eval_batch_size, evaluate_every_epoch=evaluate_every_epoch,
               checkpointing=checkpointing, log=log, log_every_s=log_every_s, on_epoch=hook)[0]
