"""Optimiser registry: ``build_optimizer(params, spec)`` looks an optimiser up by its ``name``.

Adding one is one decorated function here. ``elementwise`` says whether each element's update depends
only on that element's gradient and state, so that one optimiser over S seeds' stacked tensors is S
independent optimisers; ``rowwise`` that it is not elementwise but, told that its tensors are stacked
(``stacked=True``: a leading seed dimension), updates each seed's row on its own (Muon). Either lets a run
stack (``Optimizer.stackable``). ``momentum`` says whether it takes the spec's momentum. Every optimiser's
options are the fields of ``OptimizerSpec`` and its builder's own keyword-only parameters (``spec.options``,
e.g. Muon's ``adjust_lr``; string options with ``choices``), checked, names, types and values, before any
job (``Optimizer.check``, through ``Registry.check``).

The optimisers themselves are in ``warmstart.components.optimizer_algorithms`` (torch.optim's updates
and state-dict format, without the 1.5-2 s import of ``torch._dynamo`` that constructing a ``torch.optim``
optimiser costs every process). torch is imported inside the builders: planning reads this registry and
must not pay torch's import.
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from warmstart.core.errors import SpecError
from warmstart.core.registry import Registry, check_options
from warmstart.core.spec import OptimizerSpec

if TYPE_CHECKING:
    import torch
    from torch import nn


# The settings every optimiser's spec has (its fields); the rest of a config entry are the builder's options
COMMON = ("lr", "weight_decay", "momentum")
BUILD_ARGS = 4  # a builder's positional parameters (params, spec, model, stacked) before its options


@dataclass(frozen=True)
class Optimizer:
    # (params, spec, model, stacked, **spec.options) -> the optimiser; ``model``: the module whose trainable
    # parameters ``params`` are, in order (their names and layers, for an optimiser that treats layers
    # differently)
    build: Callable[..., Any]
    elementwise: bool
    momentum: bool
    rowwise: bool = False
    choices: Mapping[str, tuple] = dataclasses.field(default_factory=dict)  # option -> its allowed values

    @property
    def stackable(self) -> bool:
        """Whether one instance over S seeds' stacked tensors is S independent optimisers."""
        return self.elementwise or self.rowwise

    def option_names(self) -> list[str]:
        return list(inspect.signature(self.build).parameters)[BUILD_ARGS:]

    def check(self, options: Mapping[str, Any] | OptimizerSpec, key: str) -> None:
        """``options``: an entry's flat settings but its name (as the config gives them: the common fields
        of ``OptimizerSpec`` and the builder's own options), or the spec itself."""
        if isinstance(options, OptimizerSpec):
            options = options.settings()
        own = {k: v for k, v in options.items() if k not in COMMON}
        unknown = sorted(set(own) - set(self.option_names()))
        if unknown:
            raise SpecError(f"{key}: unknown option(s) {unknown}; allowed: {sorted([*COMMON, *self.option_names()])}")
        check_options(OptimizerSpec, {k: v for k, v in options.items() if k in COMMON}, key, skip=1)
        check_options(self.build, own, key, skip=BUILD_ARGS, choices=self.choices)
        if options.get("momentum") and not self.momentum:
            raise SpecError(f"{key}.momentum: this optimiser takes no momentum")


OPTIMIZERS: Registry[Optimizer] = Registry("optimizer")


def register_optimizer(name: str, elementwise: bool, momentum: bool = False, rowwise: bool = False,
                       choices: Mapping[str, tuple] | None = None, revision: int = 1):
    """Register ``fn(params, spec, model, stacked, *, **options)`` as the optimiser ``name``: its
    keyword-only parameters are its own options (``spec.options``); ``revision``: ``Registry.add``."""
    def decorate(fn):
        OPTIMIZERS.add(name, Optimizer(fn, elementwise, momentum, rowwise, dict(choices or {})), revision)
        return fn
    return decorate


@register_optimizer("sgd", elementwise=True, momentum=True)
def _sgd(params, o: OptimizerSpec, model=None, stacked: bool = False):
    """torch.optim.SGD's update (``optimizer_algorithms.sgd.SGD``): L2 weight decay added to the gradient,
    heavy-ball momentum without dampening."""
    from warmstart.components.optimizer_algorithms.sgd import SGD

    return SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


@register_optimizer("adam", elementwise=True)
def _adam(params, o: OptimizerSpec, model=None, stacked: bool = False):
    """torch.optim.Adam's update with its defaults (betas 0.9 / 0.999, eps 1e-8), weight decay as L2 on
    the gradient (``warmstart.components.optimizer_algorithms.adam.Adam``)."""
    from warmstart.components.optimizer_algorithms.adam import Adam

    return Adam(params, lr=o.lr, weight_decay=o.weight_decay)


# Muon's settings that are not options: Keller Jordan's muon.py's (SingleDeviceMuonWithAuxAdam, which FIRE's
# comparison uses) and torch.optim.Muon's defaults alike
MUON_MOMENTUM = 0.95
MUON_NESTEROV = True
MUON_NS_STEPS = 5
MUON_EPS = 1e-7  # added to each matrix's Frobenius norm before Newton-Schulz
# How Muon scales each matrix's orthogonalised step (``optimizer_algorithms.muon.muon_lr``): its ``adjust_lr`` option
MUON_ADJUST_LR = ("original", "original_flat", "match_rms_adamw", "spectral_unclamped")


def muon_parameter_names(model: nn.Module) -> list[str]:
    """The parameters Muon updates: the weight of every convolutional and linear layer (a convolution's
    kernel as an (out, in * kernel) matrix) but the head's (the last linear layer). Everything else --
    biases, normalisation weights, the head, embeddings that are no layer's weight (a ViT's position
    embedding and class token) -- is AdamW's. That is FIRE's comparison's split (its models are a backbone
    and a head: the backbone's weights of two or more dimensions to Muon, the head's layers, biases and
    gains to AdamW): on ResNet-18 and VGG-16 the convolutions (stem and shortcuts included), their
    classifier being the head; on the ViT the patch embedding, the attention and MLP projections; on an
    MLP (which it does not run) every hidden layer's weight, the first included, as Jordan et al.'s
    advice reads (hidden weight matrices to Muon)."""
    from torch import nn

    from warmstart.components.models import head_parameter_names

    head = set(head_parameter_names(model))
    names = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            weight = f"{name}.weight" if name else "weight"
            if weight not in head and module.weight.requires_grad:
                names.append(weight)
    return names


def fused_qkv_names(model: nn.Module) -> set[str]:
    """The weights that hold an attention layer's query, key and value projections as one matrix (the ViT's
    ``qkv``): three (dim, dim) matrices stacked by rows."""
    from warmstart.components.nets import Attention

    return {f"{name}.qkv.weight" for name, module in model.named_modules() if isinstance(module, Attention)}


@register_optimizer("muon", elementwise=False, rowwise=True, revision=2,
                    choices={"adjust_lr": MUON_ADJUST_LR, "ns_dtype": ("auto", "bfloat16", "float32"),
                             "qkv": ("split", "fused")})
def _muon(params, o: OptimizerSpec, model=None, stacked: bool = False, *, adjust_lr: str = "original",
          adamw_lr_ratio: float = 0.1, adamw_betas: tuple[float, float] = (0.9, 0.95), adamw_eps: float = 1e-10,
          ns_dtype: str = "auto", qkv: str = "split"):
    """Muon (``optimizer_algorithms.muon.Muon``) on ``muon_parameter_names``, AdamW on the rest, as FIRE's
    warm-start comparison runs it (isaac7778/FIRE vision/train.py, Keller Jordan's SingleDeviceMuonWithAuxAdam):
    the Muon group at the spec's lr, momentum 0.95 (Nesterov), 5 quintic Newton-Schulz steps; the AdamW
    group at ``adamw_lr_ratio`` times it (the comparison's ``adam_lr_ratio`` 0.1: Muon at 10x Adam's lr),
    betas ``adamw_betas`` (0.9, 0.95), eps ``adamw_eps`` (1e-10); the spec's (decoupled) weight decay for
    both (the comparison's: 0).

    Options (defaults: the comparison's): ``adjust_lr``, how each matrix's step is scaled
    (``optimizer_algorithms.muon.muon_lr``): ``original`` (Keller Jordan's ``max(1, rows / cols)^0.5``), or
    ``original_flat``, ``match_rms_adamw`` (Liu et al.: one lr, Adam's, serves both groups; with
    ``adamw_lr_ratio`` 1 this was our earlier default), ``spectral_unclamped``. ``ns_dtype``: the
    Newton-Schulz precision, ``auto`` (bfloat16, the reference's, on a GPU and on CPUs that compute it
    natively; float32 on other CPUs, where bfloat16 is 10x slower), ``bfloat16``, ``float32``. ``qkv``:
    a ViT's fused query/key/value weight as three matrices each orthogonalised alone (``split``, as the
    comparison's ViT, whose projections are three layers) or as one (``fused``). Stacked, each seed's
    matrix is orthogonalised on its own (a per-row optimiser)."""
    from warmstart.components.optimizer_algorithms.muon import Muon
    from warmstart.components.optimizer_algorithms.newton_schulz import QUINTIC

    if model is None:
        raise ValueError("muon: needs the model (which parameters are hidden weight matrices): "
                         "build_optimizer(params, spec, model=...)")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = list(params)
    lead = 1 if stacked else 0
    if len(named) != len(params) or any(tuple(p.shape[lead:]) != tuple(q.shape) for (_, q), p in zip(named, params)):
        raise ValueError(f"muon: the parameters are not the model's trainable parameters in order "
                         f"({'stacked' if stacked else 'unstacked'})")
    use_muon = set(muon_parameter_names(model))
    split = fused_qkv_names(model) & use_muon if qkv == "split" else set()
    settings = {"use_muon": True, "lr": o.lr, "weight_decay": o.weight_decay, "momentum": MUON_MOMENTUM,
                "nesterov": MUON_NESTEROV, "ns_coefficients": QUINTIC, "eps": MUON_EPS, "ns_steps": MUON_NS_STEPS,
                "adjust_lr_fn": adjust_lr, "ns_dtype": ns_dtype}
    muon = {"params": [p for (n, _), p in zip(named, params) if n in use_muon - split], **settings}
    fused = {"params": [p for (n, _), p in zip(named, params) if n in split], **settings, "row_blocks": 3}
    adamw = {"params": [p for (n, _), p in zip(named, params) if n not in use_muon], "use_muon": False,
             "lr": o.lr * adamw_lr_ratio, "betas": tuple(adamw_betas), "eps": adamw_eps,
             "weight_decay": o.weight_decay, "decoupled_weight_decay": True}
    return Muon([g for g in (muon, fused, adamw) if g["params"]], batch_dims=lead)


def row_settings(name: str) -> tuple[str, ...]:
    """The settings of optimiser ``name`` in which the rows of one stack may differ: the learning rate of
    an elementwise optimiser (each row steps with its own, ``build_optimizer(row_lrs=...)``); none of a
    per-row one (Muon scales each matrix's step by the rate: its rows share it)."""
    return ("lr",) if OPTIMIZERS[name].elementwise else ()


def build_optimizer(params, spec: OptimizerSpec, model: nn.Module | None = None, stacked: bool = False,
                    row_lrs: Sequence[float] | None = None):
    """A fresh optimiser per run: the paper resets Adam's state between rounds (its Section 3.5).

    ``params``: the tensors to train, or a module (its trainable parameters, and itself as ``model``).
    ``model``: the module whose trainable parameters ``params`` are, in order (a stack: each seed's
    module); ``stacked``: whether ``params`` carry a leading seed dimension. Elementwise optimisers need
    neither; Muon needs both (which tensors are hidden matrices, and where each seed's matrix is).
    ``row_lrs``: each row's learning rate, for stacked rows whose runs differ in it (``row_settings``);
    rows that all share ``spec.lr`` step as one."""
    from torch import nn

    from warmstart.components.optimizer_algorithms.base import set_row_lrs

    if isinstance(params, nn.Module):
        model = params if model is None else model
        params = [p for p in params.parameters() if p.requires_grad]
    optimizer = OPTIMIZERS.lookup(spec.name, "optimizer.name")
    built = optimizer.build(params, spec, model, stacked, **spec.options)
    if row_lrs is not None and set(row_lrs) != {spec.lr}:
        if not (stacked and "lr" in row_settings(spec.name)):
            raise ValueError(f"optimizer {spec.name!r}: per-row learning rates need an elementwise optimiser "
                             f"over stacked tensors (got row_lrs {list(row_lrs)})")
        set_row_lrs(built, list(row_lrs))
    return built
