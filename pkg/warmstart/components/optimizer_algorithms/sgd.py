"""torch.optim.SGD's update, bitwise on the CPU, without torch.optim's dynamo import.
"""
from __future__ import annotations

import torch

from warmstart.components.optimizer_algorithms.base import (PlainOptimizer, params_with_grads, row_segments, rows_of,
                                                            run_closure)


class SGD(PlainOptimizer):
    """torch.optim.SGD's update: ``g = grad + weight_decay * p``; with momentum ``b = momentum * b +
    (1 - dampening) * g`` (the first buffer: g itself), ``g = b`` (Nesterov: ``g + momentum * b``);
    ``p -= lr * g``. ``lr`` may be a per-row list (``base.set_row_lrs``)."""

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
        loss = None if closure is None else run_closure(closure)
        for group in self.param_groups:
            params = params_with_grads(group)
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
            for rows, row_lr in row_segments(lr, params):
                torch._foreach_add_(rows_of(params, rows), rows_of(grads, rows), alpha=-row_lr)
        return loss
