"""torch.optim.Optimizer's bookkeeping (param groups, per-parameter state, torch's state-dict format) without
its dynamo-decorated methods: the base of this package's optimisers.
"""
from __future__ import annotations

import copy
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


def row_segments(lr: float | list[float], params: list[Tensor]) -> list[tuple[slice | None, float]]:
    """The rows of a stacked group (``params``) that share a learning rate, as (rows, lr) pairs: one pair
    ``(None, lr)`` (every row, the whole tensors) for a plain number; for a per-row list (``set_row_lrs``),
    each run of consecutive equal rates as a slice of rows. An elementwise update computes each entry
    from that entry alone, so stepping a slice of rows with a rate gives those rows the bits they get
    alone."""
    if not isinstance(lr, list):
        return [(None, lr)]
    if params and params[0].shape[0] != len(lr):
        raise ValueError(f"per-row learning rates: {len(lr)} rates for tensors of {params[0].shape[0]} rows")
    segments, start = [], 0
    for row in range(1, len(lr) + 1):
        if row == len(lr) or lr[row] != lr[start]:
            segments.append((slice(start, row), lr[start]))
            start = row
    return segments


def rows_of(tensors: list[Tensor], rows: slice | None) -> list[Tensor]:
    """``tensors``' views of ``rows`` (their leading seed dimension); None: the tensors themselves."""
    return tensors if rows is None else [t[rows] for t in tensors]


def set_row_lrs(optimizer: PlainOptimizer, lrs: list[float]) -> None:
    """Give each row of an elementwise optimiser over stacked tensors its own learning rate: every group's
    ``lr`` becomes the list (``row_segments``). The optimiser steps each run of rows that share a rate
    with that rate, as the runs alone would."""
    for group in optimizer.param_groups:
        rows = {p.shape[0] for p in group["params"]}
        if rows != {len(lrs)}:
            raise ValueError(f"per-row learning rates: {len(lrs)} rates for tensors of {sorted(rows)} rows")
        group["lr"] = [float(lr) for lr in lrs]


def params_with_grads(group: dict) -> list[Tensor]:
    return [p for p in group["params"] if p.grad is not None]


def run_closure(closure):
    with torch.enable_grad():
        return closure()
