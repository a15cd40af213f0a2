"""Loss terms: what a run adds to the cross-entropy it minimises (regularisers, penalties, remedies).

A term is one registered function ``term(batch, **options) -> Tensor[S]``: its value for each of the S
seeds trained together (S = 1 for a single run), added to each seed's mean cross-entropy of the batch.
It sees what the batch and the run offer (``TermBatch``): the logits, targets and inputs, the weights as
``[S, ...]`` tensors, the weights the run started from (``anchors``), the same forward pass, and what its
``setup`` made once per seed when the run began (e.g. EWC's Fisher estimate, from the init context).

Everything here is written over a leading seed dimension, so one definition serves single runs, stacked
seeds and online rounds alike (``warmstart.train.batch_objective`` is the one caller). A term that cannot
be computed per seed in a stack says ``stackable=False`` and the planner trains its runs alone.
A term is part of a run's identity (it changes the results): ``RunSpec.terms``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

import torch

from .errors import SpecError
from .registry import Registry, check_options


@dataclass
class TermBatch:
    logits: torch.Tensor  # [S, B, C], float32
    targets: torch.Tensor  # [S, B]
    inputs: torch.Tensor  # [S, B, ...]
    cross_entropy: torch.Tensor  # [S]: each seed's mean cross-entropy on this batch
    params: dict[str, torch.Tensor]  # name -> [S, ...], differentiable: the weights being trained
    anchors: dict[str, dict[str, torch.Tensor]]  # "start" / "origin" -> name -> [S, ...] (see RunState)
    state: dict[str, torch.Tensor]  # this term's setup output, name -> [S, ...]
    forward: Callable[[torch.Tensor], torch.Tensor]  # inputs [S, B, ...] -> logits [S, B, C], same weights


@dataclass(frozen=True)
class Term:
    name: str
    penalty: Callable[..., torch.Tensor]
    setup: Callable[..., dict[str, torch.Tensor]] | None  # (init context, model, **options) -> per-seed tensors
    stackable: bool
    choices: Mapping[str, tuple] = field(default_factory=dict)  # option -> its allowed values

    def check(self, options: Mapping[str, Any], key: str) -> None:
        check_options(self.penalty, options, key, choices=self.choices)
        for name, value in options.items():
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise SpecError(f"{key}.{name}: must be a number or a name, got {value!r}")
        coef = options.get("coef")
        if coef is not None and (isinstance(coef, (str, bool)) or coef < 0):
            raise SpecError(f"{key}.coef: must be a number >= 0, got {coef!r} (write 1e-3 as 1.0e-3: "
                            "YAML reads 1e-3 as a string)")


TERMS: Registry[Term] = Registry("loss term")


def register_term(name: str, *, setup: Callable | None = None, stackable: bool = True,
                  choices: Mapping[str, tuple] | None = None):
    """Register ``fn(batch: TermBatch, **options) -> Tensor[S]`` as the loss term ``name``; ``setup(ctx,
    model, **options)`` runs once per seed when the run starts, its tensors reaching ``batch.state``."""
    def decorate(fn):
        TERMS.add(name, Term(name, fn, setup, stackable, dict(choices or {})))
        return fn
    return decorate


def per_seed_sum(tensors) -> torch.Tensor:
    """Sum over every element but the leading seed dimension, over several [S, ...] tensors: [S]."""
    return sum(t.flatten(1).sum(1) for t in tensors)


def squared_distance(params: Mapping[str, torch.Tensor], anchor: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """||theta - anchor||^2 per seed, over the parameters the anchor holds."""
    return per_seed_sum((params[n] - anchor[n]).square() for n in anchor)


@dataclass
class BoundTerm:
    """A configured term of one run (or stack): its options and the ``[S, ...]`` state its setup made."""

    term: Term
    options: dict[str, Any]
    state: dict[str, torch.Tensor] = field(default_factory=dict)

    def __call__(self, batch: TermBatch) -> torch.Tensor:
        return self.term.penalty(replace(batch, state=self.state), **self.options)


# -- the terms ---------------------------------------------------------------------------------------------

@register_term("l2_init", choices={"anchor": ("start", "origin")})
def l2_init(batch: TermBatch, coef: float, anchor: str = "start") -> torch.Tensor:
    """An L2 penalty toward initial weights, ``coef * ||theta - theta_0||^2`` over every parameter.
    ``anchor``: ``start``, the weights the run began training from (for a warm start, its parent's);
    ``origin``, its lineage's first random initialisation (Kumar et al.'s L2-init)."""
    return coef * squared_distance(batch.params, batch.anchors[anchor])
