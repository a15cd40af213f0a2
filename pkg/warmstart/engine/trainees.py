"""The models being trained, one or a stack of seeds, behind one interface (the trainee protocol).

A run trains S models side by side: S = 1 for a single run (any model, ``SingleModel``) and for an online
round, S = the rows of a stack of cheap models (``StackedModels``: runs that differ only in seed, init
strategy and parent, ``plan.job_blocks.stack_key``; the rows' weights as ``[S, ...]`` tensors, every
linear layer one batched matrix product). Both present the same interface, so everything else in the
engine is written once over a leading seed dimension: ``forward`` over ``[S, B, ...]`` inputs, weights
as ``[S, ...]`` tensors (``named_params``, ``param_rows``), ``grads``, ``export(row)`` (a row's weights into its own module), ``keep(rows, index)`` (drop finished seeds) and
``state_dict`` / ``load_state_dict`` (resume). ``keep_rows`` is the one definition of keeping rows,
used for weights, optimiser state, hook state and anchors alike.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, Callable, Collection, Sequence

import torch
from torch import nn

from warmstart.engine.precision import ResolvedEngine, formatted, prepare_model


def keep_rows(value: Any, index: torch.Tensor | int) -> Any:
    """``value`` with only the seed rows ``index`` kept: every tensor with a leading seed dimension (any
    tensor of one or more dimensions), also inside dicts and lists; scalars and plain values as they are."""
    if torch.is_tensor(value):
        return value[index] if value.dim() > 0 else value
    if isinstance(value, dict):
        return {k: keep_rows(v, index) for k, v in value.items()}
    if isinstance(value, list):
        return [keep_rows(v, index) for v in value]
    return value


def hook_activations(model: nn.Module, names: set[str], record) -> list:
    """Forward hooks on the named modules of ``model`` that pass their input and output to ``record(name,
    input, output)`` while the model is in training mode. Returns the hook handles."""
    handles = []
    for name in names:
        def hook(module, inputs, output, name=name):
            if module.training:
                record(name, inputs[0], output)
        handles.append(model.get_submodule(name).register_forward_hook(hook))
    return handles


class _Recording:
    """What both trainees share: an activation recorder (``warmstart.engine.intervention_hook``), called only during the
    forward passes a ``recording()`` block makes (the training objective's), never during evaluation,
    probes or a loss term's extra forward."""

    _record: Callable[[str, torch.Tensor, torch.Tensor], None] | None = None
    _recording: bool = False

    def set_recorder(self, record: Callable[[str, torch.Tensor, torch.Tensor], None],
                     names: Collection[str]) -> None:
        self._record = record

    @contextlib.contextmanager
    def recording(self):
        self._recording = self._record is not None
        try:
            yield
        finally:
            self._recording = False

    def _maybe_record(self, name: str, pre: torch.Tensor, h: torch.Tensor) -> None:
        if self._recording:
            self._record(name, pre, h)


class SingleModel(_Recording):
    """One model of any architecture, seen through the seed-stacked interface with S = 1."""

    num_seeds = 1
    stacked = False

    def __init__(self, model: nn.Module, resolved: ResolvedEngine = ResolvedEngine()):
        self.model, self.resolved = model, resolved
        self.module = prepare_model(model, resolved)
        self._hooks: list = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(formatted(x[0], self.resolved)).unsqueeze(0)

    def set_recorder(self, record, names) -> None:
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

    def keep(self, rows: list[int], index: torch.Tensor) -> None:
        if rows != [0]:
            raise ValueError("a single model keeps its one row until it is done")

    def export(self, row: int) -> None:
        """Write row ``row``'s weights into its own module (a single model trains in place)."""

    def row_optimizer_state(self, opt: torch.optim.Optimizer, row: int) -> dict:
        return copy.deepcopy(opt.state_dict())

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])


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
    ``record(name, pre, h)`` (when given) receives each activation layer's input and output [S, B, U]."""
    def forward(params: dict[str, torch.Tensor], x: torch.Tensor, record=None) -> torch.Tensor:
        h = x
        for op in ops:
            if op[0] == "flatten":
                h = h.flatten(2)
            elif op[0] == "linear":
                w = params[op[1]].transpose(1, 2)
                h = torch.bmm(h, w) if op[2] is None else torch.baddbmm(params[op[2]].unsqueeze(1), h, w)
            else:
                pre, h = h, op[1](h)
                if record is not None:
                    record(op[2], pre, h)
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
    ``keep(rows, index)`` drops finished rows (the loop drops the optimiser's rows alike)."""

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
        count is the row's own: every row still training has taken every step), with the row's own
        learning rate where the rows have their own (``optimizer_algorithms.base.set_row_lrs``)."""
        state = opt.state_dict()
        state["state"] = {k: {key: v[row].clone() if torch.is_tensor(v) and v.dim() > 0 else copy.deepcopy(v)
                              for key, v in per_param.items()} for k, per_param in state["state"].items()}
        state["param_groups"] = copy.deepcopy(state["param_groups"])
        for group in state["param_groups"]:
            if isinstance(group["lr"], list):
                group["lr"] = group["lr"][row]
        return state

    def keep(self, rows: list[int], index: torch.Tensor) -> None:
        """Keep only ``rows`` (``index``, on the device): new leaves holding them."""
        self.params = self._leaves(keep_rows(self.params, index))
        self.rows = [self.rows[r] for r in rows]

    def state_dict(self) -> dict:
        return {"params": {n: p.detach() for n, p in self.params.items()}, "rows": self.rows}

    def load_state_dict(self, state: dict) -> None:
        self.params = self._leaves(state["params"])
        self.rows = list(state["rows"])


def stack_state(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Per-seed tensors (anchors, a term's setup) as [S, ...] tensors."""
    return {n: torch.stack([s[n] for s in states]) for n in states[0]} if states and states[0] else {}
