"""Muon (Jordan et al. 2024: Keller Jordan's muon.py and ``torch.optim.Muon``'s update), written over any
number of leading batch dimensions, so one instance over S seeds' stacked ``[S, out, in]`` weights
orthogonalises each seed's matrix on its own: a per-row optimiser, which the stacked engine can use.
"""
from __future__ import annotations

import math

import torch

from warmstart.components.optimizer_algorithms.adam import adam_step
from warmstart.components.optimizer_algorithms.base import PlainOptimizer, params_with_grads, run_closure
from warmstart.components.optimizer_algorithms.newton_schulz import newton_schulz


def newton_schulz_dtype(device: torch.device) -> torch.dtype:
    """Muon's Newton-Schulz precision: bfloat16 (torch.optim.Muon's) where the device computes it natively
    (CUDA; CPUs with AVX512-BF16 or AMX), float32 elsewhere: measured on an AVX2 CPU, a bfloat16 batched
    product of 100 x 100 matrices took 5.9 ms against 0.48 ms in float32, which made a Muon epoch of the
    demo's MLP 10x slower than Adam's. So Muon's last bits depend on the machine, as bf16 autocast does."""
    from warmstart.core.hardware import cpu_has_native_bf16  # looked up per call: tests override it there

    return torch.bfloat16 if device.type == "cuda" or cpu_has_native_bf16() else torch.float32


def muon_lr(lr: float, adjust_lr_fn: str | None, rows: int, cols: int, kernel: tuple[int, ...] = ()) -> float:
    """Muon's learning rate for one orthogonalised (rows, cols) matrix; ``kernel``: the spatial sizes of a
    convolution's kernel the matrix was flattened from (() for a matrix).

    ``original``: Keller Jordan's muon.py (the one FIRE's comparison uses), ``lr * max(1, A / B)^0.5`` with
    (A, B) the parameter's last two sizes as stored: (rows, cols) for a matrix, but (kh, kw) for a 2-D
    convolution's kernel (so 1 for a square kernel, whatever its channels); a 1-D kernel, which that code
    does not flatten, takes its flattened (rows, cols). ``original_flat``: torch.optim.Muon's ``original``
    rule on the flattened (rows, cols) for every parameter. ``match_rms_adamw``: ``lr * 0.2 *
    sqrt(max(rows, cols))`` (Liu et al. 2025: the update's RMS matched to AdamW's). ``spectral_unclamped``:
    ``lr * sqrt(rows / cols)``."""
    if adjust_lr_fn == "original" and len(kernel) == 2:
        rows, cols = kernel
    if adjust_lr_fn is None or adjust_lr_fn in ("original", "original_flat"):
        return lr * math.sqrt(max(1, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    if adjust_lr_fn == "spectral_unclamped":
        return lr * math.sqrt(rows / cols)
    raise ValueError(f"unknown adjust_lr_fn {adjust_lr_fn!r}")


def muon_ns_dtype(ns_dtype: str, device: torch.device) -> torch.dtype:
    """The Newton-Schulz precision a Muon group asks for: ``bfloat16`` or ``float32``, or ``auto``
    (``newton_schulz_dtype``: bfloat16 where the device computes it natively)."""
    if ns_dtype == "auto":
        return newton_schulz_dtype(device)
    return {"bfloat16": torch.bfloat16, "float32": torch.float32}[ns_dtype]


class Muon(PlainOptimizer):
    """Muon for the groups marked ``use_muon``, AdamW (``adam_step``, decoupled weight decay) for the rest.

    A Muon group's parameters are matrices after their first ``batch_dims`` dimensions (a stack's seed
    dimension: 1; a single model: 0), a kernel of more dimensions flattened to (out, -1), and each cut into
    the group's ``row_blocks`` equal blocks of rows (default 1; 3 for a fused query/key/value projection,
    whose three matrices are then orthogonalised each on its own, as three separate layers would be). Per
    step, as Keller Jordan's muon.py and ``torch.optim.Muon``: ``B = lerp(B, g, 1 - momentum)``; ``U =
    lerp(g, B, momentum)`` (Nesterov) or ``B``; ``O = newton_schulz(U)`` (in the group's ``ns_dtype``,
    default ``auto``); ``p *= 1 - lr * weight_decay``; ``p -= muon_lr(lr) * O``, each matrix (each seed's)
    on its own, so a stack's rows are independent optimisers."""

    def __init__(self, groups: list[dict], batch_dims: int = 0):
        self.batch_dims = batch_dims
        super().__init__(groups, {})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else run_closure(closure)
        for group in self.param_groups:
            params = params_with_grads(group)
            if not group["use_muon"]:
                adam_step(self.state, group, params)
                continue
            blocks = group.get("row_blocks", 1)
            for p in params:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - group["momentum"])
                update = p.grad.lerp(buf, group["momentum"]) if group["nesterov"] else buf
                matrices = update.flatten(self.batch_dims + 1)  # [..., out, in * kernel]
                if blocks > 1:
                    matrices = matrices.unflatten(-2, (blocks, -1))  # [..., blocks, out / blocks, cols]
                ortho = newton_schulz(matrices, group["ns_steps"], tuple(group["ns_coefficients"]), group["eps"],
                                      dtype=muon_ns_dtype(group.get("ns_dtype", "auto"), p.device))
                rows, cols = matrices.shape[-2:]
                kernel = tuple(p.shape[self.batch_dims + 2:])
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(ortho.reshape(p.shape),
                       alpha=-muon_lr(group["lr"], group["adjust_lr_fn"], rows, cols, kernel))
        return loss
