"""The optimisers behind ``warmstart.optimizers``' registry entries, written here rather than taken from
``torch.optim`` (kept apart so the registry imports no torch).

Why not ``torch.optim``: constructing any of its optimisers imports ``torch._dynamo`` (``Optimizer.__init__``
calls ``add_param_group``, which, like ``zero_grad``, ``state_dict``, ``load_state_dict`` and ``step``, is
wrapped by ``torch._disable_dynamo``, whose first call imports dynamo). Measured on the 2-core development
CPU with torch 2.14: 1.5-2.1 s per process, paid once by every training job. Subclassing
``torch.optim.Optimizer`` would mean overriding every one of those methods and its ``__init__``, so these
are plain classes with the part of its interface the engine uses: ``param_groups``, ``state`` (keyed by
parameter), ``zero_grad(set_to_none=True)``, ``step()``, ``state_dict()`` / ``load_state_dict()``.

Their state dicts are torch's, key for key (``state`` by parameter index with ``momentum_buffer`` /
``step``, ``exp_avg``, ``exp_avg_sq``; ``param_groups`` with torch's hyper-parameter keys), so optimiser
files written by ``torch.optim.SGD`` / ``Adam`` load here and the other way round, and the engine's
per-row slicing (``StackedModels.keep``, ``row_optimizer_state``) works unchanged. ``SGD`` and ``Adam``
compute what torch's default (non-foreach, non-fused) CPU implementations compute, op for op, so their
steps are bitwise torch's on the CPU (``tests/test_optim.py``). They use torch's ``_foreach`` kernels on
every device, which on a CPU fall back to the same per-tensor ops and on a GPU are the kernels torch's
default (foreach) path launches.

``Muon`` (Jordan et al. 2024, ``torch.optim.Muon``'s update) is written over any number of leading batch
dimensions, so one instance over S seeds' stacked ``[S, out, in]`` weights orthogonalises each seed's
matrix on its own: a per-row optimiser, which the stacked engine can use.
"""
from __future__ import annotations

import copy
import math
from collections import defaultdict
from itertools import chain
from typing import Any, Iterable

import torch
from torch import Tensor


class PlainOptimizer:
    """torch.optim.Optimizer's bookkeeping (param groups, per-parameter state, torch's state-dict format),
    without its dynamo-decorated methods. Subclasses set ``defaults`` and write ``step``."""

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], defaults: dict[str, Any]):
        self.defaults = dict(defaults)
        self.state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict[str, Any]) -> None:
        group = dict(group)
        params = group["params"]
        group["params"] = [params] if isinstance(params, Tensor) else list(params)
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in group["params"]):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                    continue
                if p.grad.grad_fn is not None:
                    p.grad.detach_()
                else:
                    p.grad.requires_grad_(False)
                p.grad.zero_()

    def state_dict(self) -> dict[str, Any]:
        """torch's format: parameters numbered in group order; the state tensors themselves (not copies),
        as torch returns them."""
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            for p in group["params"]:
                index.setdefault(id(p), len(index))
            packed["params"] = [index[id(p)] for p in group["params"]]
            groups.append(packed)
        state = {index[id(p)]: s for p, s in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As torch loads one: by parameter position; the saved groups' hyper-parameters replace the
        current ones; state tensors move to their parameter's device and (floating) dtype, ``step`` stays
        as saved; a tensor already there is kept, not copied."""
        saved_groups = copy.deepcopy(state_dict["param_groups"])
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(g["params"]) != len(s["params"]) for g, s in zip(self.param_groups, saved_groups)):
            raise ValueError("loaded state dict contains a parameter group that doesn't match the size of "
                             "optimizer's group")
        by_index = dict(zip(chain.from_iterable(s["params"] for s in saved_groups),
                            chain.from_iterable(g["params"] for g in self.param_groups)))
        state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        for k, v in state_dict["state"].items():
            if k in by_index:
                p = by_index[k]
                state[p] = {key: _cast(p, value, key) for key, value in v.items()}
            else:
                state[k] = v
        for group, saved in zip(self.param_groups, saved_groups):
            saved["params"] = group["params"]
        self.state, self.param_groups = state, saved_groups

    def __repr__(self) -> str:
        return f"{type(self).__name__}({[{k: v for k, v in g.items() if k != 'params'} for g in self.param_groups]})"


def _cast(param: Tensor, value: Any, key: str) -> Any:
    if not torch.is_tensor(value) or key == "step":
        return value
    return value.to(dtype=param.dtype, device=param.device) if param.is_floating_point() else value.to(device=param.device)


def _with_grads(group: dict) -> list[Tensor]:
    return [p for p in group["params"] if p.grad is not None]


class SGD(PlainOptimizer):
    """torch.optim.SGD's update: ``g = grad + weight_decay * p``; with momentum ``b = momentum * b +
    (1 - dampening) * g`` (the first buffer: g itself), ``g = b`` (Nesterov: ``g + momentum * b``);
    ``p -= lr * g``."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"invalid SGD settings: lr {lr}, momentum {momentum}, weight_decay {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening,
                                  "weight_decay": weight_decay, "nesterov": nesterov, "maximize": False,
                                  "foreach": None, "differentiable": False, "fused": None})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else _closure(closure)
        for group in self.param_groups:
            params = _with_grads(group)
            if not params:
                continue
            lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
            grads = [p.grad for p in params]
            if wd != 0:
                grads = torch._foreach_add(grads, params, alpha=wd)
            if momentum != 0:
                bufs = []
                for p, g in zip(params, grads):
                    buf = self.state[p].get("momentum_buffer")
                    if buf is None:
                        buf = g.detach().clone()
                        self.state[p]["momentum_buffer"] = buf
                    else:
                        buf.mul_(momentum).add_(g, alpha=1 - group["dampening"])
                    bufs.append(buf)
                grads = torch._foreach_add(grads, bufs, alpha=momentum) if group["nesterov"] else bufs
            torch._foreach_add_(params, grads, alpha=-lr)
        return loss


class Adam(PlainOptimizer):
    """torch.optim.Adam's update (``decoupled_weight_decay``: AdamW's): per step t, ``g = grad +
    weight_decay * p`` (AdamW instead ``p *= 1 - lr * weight_decay``), ``m = lerp(m, g, 1 - beta1)``,
    ``v = beta2 v + (1 - beta2) g^2``, ``p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)``.
    ``step`` is a float32 scalar tensor on the CPU, as torch keeps it."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled_weight_decay: bool = False):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid Adam settings: lr {lr}, betas {betas}, eps {eps}, weight_decay {weight_decay}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                                  "amsgrad": False, "maximize": False, "foreach": None, "capturable": False,
                                  "differentiable": False, "fused": None,
                                  "decoupled_weight_decay": decoupled_weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else _closure(closure)
        for group in self.param_groups:
            adam_step(self.state, group, _with_grads(group))
        return loss


def adam_step(state, group: dict, params: list[Tensor]) -> None:
    """One Adam(W) step of ``params`` with ``group``'s settings, their moments in ``state``: torch's
    multi-tensor (foreach) algorithm for non-capturable steps, op for op."""
    if not params:
        return
    for p in params:
        if len(state[p]) == 0:
            state[p]["step"] = torch.tensor(0.0, dtype=torch.float32)
            state[p]["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state[p]["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    grads = [p.grad for p in params]
    exp_avgs = [state[p]["exp_avg"] for p in params]
    exp_avg_sqs = [state[p]["exp_avg_sq"] for p in params]
    steps = [state[p]["step"] for p in params]
    torch._foreach_add_(steps, torch.tensor(1.0), alpha=1.0)
    if wd != 0:
        if group.get("decoupled_weight_decay"):
            torch._foreach_mul_(params, 1 - lr * wd)
        else:
            grads = torch._foreach_add(grads, params, alpha=wd)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    counts = [s.item() for s in steps]
    step_size = [(lr / (1 - beta1 ** t)) * -1 for t in counts]
    bias_correction2_sqrt = [(1 - beta2 ** t) ** 0.5 for t in counts]
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, bias_correction2_sqrt)
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, exp_avgs, denom, step_size)


def _closure(closure):
    with torch.enable_grad():
        return closure()


# -- Muon ------------------------------------------------------------------------------------------------------

# Muon's quintic Newton-Schulz coefficients (Jordan et al.; torch.optim.Muon's defaults)
QUINTIC = (3.4445, -4.7750, 2.0315)


def newton_schulz_dtype(device: torch.device) -> torch.dtype:
    """Muon's Newton-Schulz precision: bfloat16 (torch.optim.Muon's) where the device computes it natively
    (CUDA; CPUs with AVX512-BF16 or AMX), float32 elsewhere: measured on an AVX2 CPU, a bfloat16 batched
    product of 100 x 100 matrices took 5.9 ms against 0.48 ms in float32, which made a Muon epoch of the
    demo's MLP 10x slower than Adam's. So Muon's last bits depend on the machine, as bf16 autocast does."""
    from .train import cpu_has_native_bf16

    return torch.bfloat16 if device.type == "cuda" or cpu_has_native_bf16() else torch.float32


def newton_schulz(g: Tensor, steps: int, coefficients: tuple[float, float, float] = QUINTIC, eps: float = 1e-7,
                  dtype: torch.dtype | None = torch.bfloat16) -> Tensor:
    """An approximate orthogonalisation of each matrix of ``g`` [..., m, n] (batched over the leading
    dimensions): ``X = G / ||G||_F`` (per matrix), then ``steps`` times ``A = X X^T``, ``X = a X + (b A + c
    A^2) X`` on the wide orientation (transposed when m > n). An odd matrix polynomial, so X keeps G's
    singular vectors and maps each singular value s of X_0 to f(s) = a s + b s^3 + c s^5, iterated. With
    the quintic coefficients (a steep slope at 0 on purpose) it does not converge to the polar factor
    U V^T: after enough steps every singular value oscillates within about [0.7, 1.2]. In ``dtype``
    (torch.optim.Muon: bfloat16; None: g's own); returned in that dtype."""
    a, b, c = coefficients
    x = g if dtype is None else g.to(dtype)
    wide = g.size(-2) <= g.size(-1)
    if not wide:
        x = x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    batched = x.dim() > 2
    shape = x.shape
    if batched:
        x = x.reshape(-1, *shape[-2:])
    for _ in range(steps):
        if batched:
            gram = torch.bmm(x, x.mT)
            update = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
            x = torch.baddbmm(x, update, x, beta=a)
        else:
            gram = x @ x.T
            update = torch.addmm(gram, gram, gram, beta=b, alpha=c)
            x = torch.addmm(x, update, x, beta=a)
    x = x.reshape(shape)
    return x if wide else x.mT


def muon_lr(lr: float, adjust_lr_fn: str | None, rows: int, cols: int) -> float:
    """torch.optim.Muon's learning-rate adjustment for a (rows, cols) matrix."""
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    if adjust_lr_fn == "spectral_unclamped":
        return lr * math.sqrt(rows / cols)
    raise ValueError(f"unknown adjust_lr_fn {adjust_lr_fn!r}")


class Muon(PlainOptimizer):
    """Muon for the groups marked ``use_muon``, AdamW (``adam_step``, decoupled weight decay) for the rest.

    A Muon group's parameters are matrices after their first ``batch_dims`` dimensions (a stack's seed
    dimension: 1; a single model: 0), a kernel of more dimensions flattened to (out, -1). Per step, as
    ``torch.optim.Muon``: ``B = lerp(B, g, 1 - momentum)``; ``U = lerp(g, B, momentum)`` (Nesterov) or
    ``B``; ``O = newton_schulz(U)``; ``p *= 1 - lr * weight_decay``; ``p -= muon_lr(lr) * O``, each matrix
    (each seed's) on its own, so a stack's rows are independent optimisers."""

    def __init__(self, groups: list[dict], batch_dims: int = 0):
        self.batch_dims = batch_dims
        super().__init__(groups, {})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else _closure(closure)
        for group in self.param_groups:
            params = _with_grads(group)
            if not group["use_muon"]:
                adam_step(self.state, group, params)
                continue
            for p in params:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - group["momentum"])
                update = p.grad.lerp(buf, group["momentum"]) if group["nesterov"] else buf
                matrices = update.flatten(self.batch_dims + 1)  # [..., out, in * kernel]
                ortho = newton_schulz(matrices, group["ns_steps"], tuple(group["ns_coefficients"]), group["eps"],
                                      dtype=newton_schulz_dtype(p.device))
                rows, cols = matrices.shape[-2:]
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(ortho.reshape(p.shape), alpha=-muon_lr(group["lr"], group["adjust_lr_fn"], rows, cols))
        return loss
