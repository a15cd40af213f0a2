"""Optimiser registry: ``build_optimizer(params, spec)`` looks an optimiser up by its ``name``.

Adding one is one decorated function here. ``elementwise`` says whether each element's update depends
only on that element's gradient and state, so that one optimiser over S seeds' stacked tensors is S
independent optimisers; ``rowwise`` that it is not elementwise but, told that its tensors are stacked
(``stacked=True``: a leading seed dimension), updates each seed's row on its own (Muon). Either lets a run
stack (``Optimizer.stackable``). ``momentum`` says whether it takes the spec's momentum. Every optimiser's
options are the fields of ``OptimizerSpec`` (checked, names and types, before any job).

The optimisers themselves are ``warmstart.optim``'s (torch.optim's updates and state-dict format, without
the 1.5-2 s import of ``torch._dynamo`` that constructing a ``torch.optim`` optimiser costs every
process). torch is imported inside the builders: planning reads this registry and must not pay torch's
import.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .errors import SpecError
from .registry import Registry, check_options
from .spec import OptimizerSpec

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class Optimizer:
    # (params, spec, model, stacked) -> the optimiser; ``model``: the module whose trainable parameters
    # ``params`` are, in order (their names and layers, for an optimiser that treats layers differently)
    build: Callable[..., Any]
    elementwise: bool
    momentum: bool
    rowwise: bool = False

    @property
    def stackable(self) -> bool:
        """Whether one instance over S seeds' stacked tensors is S independent optimisers."""
        return self.elementwise or self.rowwise

    def check(self, options: Mapping[str, Any] | OptimizerSpec, key: str) -> None:
        """``options``: the fields of an ``OptimizerSpec`` but its name (as the config gives them), or the
        spec itself."""
        if isinstance(options, OptimizerSpec):
            options = {k: v for k, v in dataclasses.asdict(options).items() if k != "name"}
        check_options(OptimizerSpec, options, key, skip=1)
        if options.get("momentum") and not self.momentum:
            raise SpecError(f"{key}.momentum: this optimiser takes no momentum")


OPTIMIZERS: Registry[Optimizer] = Registry("optimizer")


def register_optimizer(name: str, elementwise: bool, momentum: bool = False, rowwise: bool = False):
    """Register ``fn(params, spec, model, stacked)`` as the optimiser ``name``."""
    def decorate(fn):
        OPTIMIZERS.add(name, Optimizer(fn, elementwise, momentum, rowwise))
        return fn
    return decorate


@register_optimizer("sgd", elementwise=True, momentum=True)
def _sgd(params, o: OptimizerSpec, model=None, stacked: bool = False):
    """torch.optim.SGD's update (``warmstart.optim.SGD``): L2 weight decay added to the gradient, heavy-ball
    momentum without dampening."""
    from .optim import SGD

    return SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


@register_optimizer("adam", elementwise=True)
def _adam(params, o: OptimizerSpec, model=None, stacked: bool = False):
    """torch.optim.Adam's update with its defaults (betas 0.9 / 0.999, eps 1e-8), weight decay as L2 on
    the gradient (``warmstart.optim.Adam``)."""
    from .optim import Adam

    return Adam(params, lr=o.lr, weight_decay=o.weight_decay)


# Muon's settings that the spec does not carry (torch.optim.Muon's defaults but the lr adjustment).
MUON_MOMENTUM = 0.95
MUON_NS_STEPS = 5
# The spec has one lr for both groups. "match_rms_adamw" (Liu et al. 2025, "Muon is scalable") scales each
# matrix's orthogonalised update to AdamW's typical RMS (lr * 0.2 * sqrt(max(out, in))), so the lr an Adam
# run uses serves the Muon group and the AdamW group alike; torch's default ("original") would need a
# Muon lr some 20-50x larger than the AdamW group's.
MUON_ADJUST_LR = "match_rms_adamw"


def muon_parameter_names(model: nn.Module) -> list[str]:
    """The parameters Muon updates: the weight of every convolutional and linear layer (a convolution's
    kernel as an (out, in * kernel) matrix) but the head's (the last linear layer). Everything else --
    biases, normalisation weights, the head, embeddings that are no layer's weight (a ViT's position
    embedding and class token) -- is AdamW's: Muon orthogonalises matrices that map one hidden
    representation to another (Jordan et al.'s advice), and the first layer's weight is such a matrix
    here too."""
    from torch import nn

    from .models import head_parameter_names

    head = set(head_parameter_names(model))
    names = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            weight = f"{name}.weight" if name else "weight"
            if weight not in head and module.weight.requires_grad:
                names.append(weight)
    return names


@register_optimizer("muon", elementwise=False, rowwise=True)
def _muon(params, o: OptimizerSpec, model=None, stacked: bool = False):
    """Muon (``warmstart.optim.Muon``) on ``muon_parameter_names``, AdamW on the rest; lr and (decoupled)
    weight decay from the spec for both; Muon's momentum 0.95 (Nesterov), 5 quintic Newton-Schulz steps in
    bfloat16, ``MUON_ADJUST_LR``; AdamW's betas 0.9 / 0.999, eps 1e-8. Stacked, each seed's matrix is
    orthogonalised on its own (a per-row optimiser)."""
    from .optim import QUINTIC, Muon

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
    muon = {"params": [p for (n, _), p in zip(named, params) if n in use_muon], "use_muon": True, "lr": o.lr,
            "weight_decay": o.weight_decay, "momentum": MUON_MOMENTUM, "nesterov": True,
            "ns_coefficients": QUINTIC, "eps": 1e-7, "ns_steps": MUON_NS_STEPS, "adjust_lr_fn": MUON_ADJUST_LR}
    adamw = {"params": [p for (n, _), p in zip(named, params) if n not in use_muon], "use_muon": False,
             "lr": o.lr, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": o.weight_decay,
             "decoupled_weight_decay": True}
    return Muon([g for g in (muon, adamw) if g["params"]], batch_dims=lead)


def build_optimizer(params, spec: OptimizerSpec, model: nn.Module | None = None, stacked: bool = False):
    """A fresh optimiser per run: the paper resets Adam's state between rounds (its Section 3.5).

    ``params``: the tensors to train, or a module (its trainable parameters, and itself as ``model``).
    ``model``: the module whose trainable parameters ``params`` are, in order (a stack: each seed's
    module); ``stacked``: whether ``params`` carry a leading seed dimension. Elementwise optimisers need
    neither; Muon needs both (which tensors are hidden matrices, and where each seed's matrix is)."""
    from torch import nn

    if isinstance(params, nn.Module):
        model = params if model is None else model
        params = [p for p in params.parameters() if p.requires_grad]
    return OPTIMIZERS.lookup(spec.name, "optimizer.name").build(params, spec, model, stacked)
