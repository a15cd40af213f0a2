"""torch.optim.Adam's (and AdamW's) update, bitwise on the CPU, without torch.optim's dynamo import; and Adam
with a step count per entry, for interventions that reset some entries' moments.
"""
from __future__ import annotations

import torch
from torch import Tensor

from warmstart.components.optimizer_algorithms.base import (PlainOptimizer, params_with_grads, row_segments, rows_of,
                                                            run_closure)


class Adam(PlainOptimizer):
    """torch.optim.Adam's update (``decoupled_weight_decay``: AdamW's): per step t, ``g = grad +
    weight_decay * p`` (AdamW instead ``p *= 1 - lr * weight_decay``), ``m = lerp(m, g, 1 - beta1)``,
    ``v = beta2 v + (1 - beta2) g^2``, ``p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)``.
    ``step`` is a float32 scalar tensor on the CPU, as torch keeps it. ``lr`` may be a per-row list
    (``base.set_row_lrs``)."""

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
        loss = None if closure is None else run_closure(closure)
        for group in self.param_groups:
            adam_step(self.state, group, params_with_grads(group))
        return loss


def adam_step(state, group: dict, params: list[Tensor]) -> None:
    """One Adam(W) step of ``params`` with ``group``'s settings, their moments in ``state``: torch's
    multi-tensor (foreach) algorithm for non-capturable steps, op for op. A group marked
    ``per_entry_step`` (set by an intervention that resets entries, ``units.Interventions``), or whose
    state already holds per-entry steps, takes ``_adam_step_per_entry`` instead."""
    if not params:
        return
    if group.get("per_entry_step") or any(state[p] and state[p]["step"].dim() > 0 for p in params):
        _adam_step_per_entry(state, group, params)
        return
    for p in params:
        if len(state[p]) == 0:
            state[p]["step"] = torch.tensor(0.0, dtype=torch.float32)
            state[p]["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state[p]["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
    grads = [p.grad for p in params]
    exp_avgs = [state[p]["exp_avg"] for p in params]
    exp_avg_sqs = [state[p]["exp_avg_sq"] for p in params]
    steps = [state[p]["step"] for p in params]
    torch._foreach_add_(steps, torch.tensor(1.0), alpha=1.0)
    _update_moments(group, params, grads, exp_avgs, exp_avg_sqs)
    counts = [s.item() for s in steps]
    bias_correction2_sqrt = [(1 - beta2 ** t) ** 0.5 for t in counts]
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, bias_correction2_sqrt)
    torch._foreach_add_(denom, eps)
    for rows, row_lr in row_segments(lr, params):
        step_size = [(row_lr / (1 - beta1 ** t)) * -1 for t in counts]
        torch._foreach_addcdiv_(rows_of(params, rows), rows_of(exp_avgs, rows), rows_of(denom, rows), step_size)


def _update_moments(group: dict, params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor],
                    exp_avg_sqs: list[Tensor]) -> None:
    """Adam(W)'s weight decay (decoupled: on the weights; else L2, added to the gradients) and its moment
    updates, in torch's foreach ops: the part of a step that per-tensor and per-entry step counts share."""
    lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
    if wd != 0:
        if group.get("decoupled_weight_decay"):
            for rows, row_lr in row_segments(lr, params):
                torch._foreach_mul_(rows_of(params, rows), 1 - row_lr * wd)
        else:
            grads = torch._foreach_add(grads, params, alpha=wd)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)


def _adam_step_per_entry(state, group: dict, params: list[Tensor]) -> None:
    """Adam(W) with a step count per entry (AdamGnT of shibhansh/loss-of-plasticity, lop/utils/AdamGnT.py):
    ``step`` is a float32 tensor shaped as the parameter, so zeroing some entries' ``step`` with their
    moments (a unit reset) restarts their bias correction: ``p -= lr / (1 - beta1^t) * m / (sqrt(v) /
    sqrt(1 - beta2^t) + eps)`` with t per entry (torch's placement of eps, as ``adam_step``; AdamGnT adds
    eps to sqrt(v) before the correction). The corrections are read from tables of Python floats, one per
    step count, so an entry whose step equals the tensor's gets the bits ``adam_step`` gives it, and a row
    of a stack the bits it gets alone. A per-tensor step (a state saved without this mark) becomes a
    tensor of that count; ``step_bound`` (a plain int) bounds the counts."""
    lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
    for p in params:
        s = state[p]
        if len(s) == 0:
            s["step"] = torch.zeros_like(p, dtype=torch.float32, memory_format=torch.preserve_format)
            s["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            s["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if s["step"].shape != p.shape:
            count = float(s["step"])
            s["step"] = torch.full_like(p, count, dtype=torch.float32, memory_format=torch.preserve_format)
            s["step_bound"] = int(count)
        if "step_bound" not in s:
            s["step_bound"] = int(s["step"].max()) if s["step"].numel() else 0
    grads = [p.grad for p in params]
    exp_avgs = [state[p]["exp_avg"] for p in params]
    exp_avg_sqs = [state[p]["exp_avg_sq"] for p in params]
    torch._foreach_add_([state[p]["step"] for p in params], 1.0)
    for p in params:
        state[p]["step_bound"] += 1
    _update_moments(group, params, grads, exp_avgs, exp_avg_sqs)
    segments = row_segments(lr, params)
    for p, m, v in zip(params, exp_avgs, exp_avg_sqs):
        correction1, correction2_sqrt = _bias_corrections(beta1, beta2, state[p]["step_bound"], p.device)
        t = state[p]["step"].long()
        denom = v.sqrt().div_(correction2_sqrt[t].to(v.dtype)).add_(eps)
        for rows, row_lr in segments:
            [p_rows, m_rows, t_rows, denom_rows] = rows_of([p, m, t, denom], rows)
            step_size = (row_lr / correction1[t_rows] * -1).to(p.dtype)
            p_rows.add_(m_rows.mul(step_size).div_(denom_rows))


_CORRECTIONS: dict[tuple, tuple[Tensor, Tensor]] = {}


def _bias_corrections(beta1: float, beta2: float, bound: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """float64 tables over step counts 0..(at least) ``bound``: ``1 - beta1^t`` and ``(1 - beta2^t)^0.5``,
    each entry the Python float ``adam_step`` computes for that count (grown by doubling, kept per device)."""
    key = (beta1, beta2, str(device))
    tables = _CORRECTIONS.get(key)
    if tables is None or len(tables[0]) <= bound:
        n = max(1024, 1 << (bound + 1).bit_length())
        tables = (torch.tensor([1 - beta1 ** t for t in range(n)], dtype=torch.float64, device=device),
                  torch.tensor([(1 - beta2 ** t) ** 0.5 for t in range(n)], dtype=torch.float64, device=device))
        _CORRECTIONS[key] = tables
    return tables
