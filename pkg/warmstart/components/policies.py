"""Selection policies for online streams: which samples of the unlabelled pool arrive next.

A policy is one registered function ``policy(ctx, k) -> positions``: ``k`` distinct pool positions that
are still available. Positions index the split's training pool, which is already in a seeded random
order, so "the next k available positions" is a uniformly random draw without replacement. torch is
imported inside the policies: planning reads this registry and must not pay torch's import.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from warmstart.core.registry import Registry, takes_options

if TYPE_CHECKING:
    import torch
    from torch import nn

# A policy takes no options from the config (checking them refuses any).
POLICIES: Registry[Callable[["SelectionContext", int], torch.Tensor]] = Registry("selection policy",
                                                                               check=takes_options(skip=2))


def register_policy(name: str):
    def decorate(fn):
        POLICIES.add(name, fn)
        return fn
    return decorate


@dataclass
class SelectionContext:
    x_pool: torch.Tensor  # the whole training pool, on the device, in the split's seeded order
    available: torch.Tensor  # bool mask over pool positions: not yet added to the training set
    model: nn.Module | None = None  # the previous round's trained model (None in the first round)
    eval_batch_size: int = 4096
    cache: dict = field(default_factory=dict)  # per-stream memo (e.g. the principal-component order)

    def first_available(self, order: torch.Tensor, k: int) -> torch.Tensor:
        """The first ``k`` positions of ``order`` that are still available."""
        ordered_available = order[self.available[order]]
        return ordered_available[:k]


@register_policy("random")
def random_policy(ctx: SelectionContext, k: int) -> torch.Tensor:
    """Uniformly at random without replacement (Figure 2): the pool's own seeded order."""
    import torch

    return ctx.first_available(torch.arange(len(ctx.available), device=ctx.available.device), k)


def margins(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Difference between the largest and second-largest predicted probability, per sample."""
    import torch

    was_training = model.training
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            probs = torch.softmax(model(x[start:start + batch_size]).float(), dim=1)
            top2 = probs.topk(2, dim=1).values
            out.append(top2[:, 0] - top2[:, 1])
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, device=x.device)


@register_policy("margin")
def margin_policy(ctx: SelectionContext, k: int) -> torch.Tensor:
    """Active learning by margin (Figure 9): the available samples the previous model is least sure
    of (smallest top-two probability gap). The first round has no model and draws at random."""
    import torch

    if ctx.model is None:
        return random_policy(ctx, k)
    candidates = ctx.available.nonzero().squeeze(1)
    gaps = margins(ctx.model, ctx.x_pool[candidates], ctx.eval_batch_size)
    # stable sort: ties go to the earlier (randomly ordered) position, so the choice is deterministic
    order = torch.sort(gaps, stable=True).indices
    return candidates[order[:k]]


def first_principal_component_scores(x: torch.Tensor) -> torch.Tensor:
    """Projection of each sample on the first principal component of ``x`` (flattened, centred).

    Exact (eigendecomposition of the covariance, in float64) and so deterministic; the component's sign
    is fixed so that its largest-magnitude entry is positive."""
    import torch

    flat = x.reshape(len(x), -1).double()
    flat = flat - flat.mean(0, keepdim=True)
    _, vectors = torch.linalg.eigh(flat.T @ flat)
    component = vectors[:, -1]
    component = component * torch.sign(component[component.abs().argmax()])
    return flat @ component


@register_policy("pc1_order")
def pc1_order_policy(ctx: SelectionContext, k: int) -> torch.Tensor:
    """Domain shift (Figure 8): the pool sorted by its first principal component, supplied in order."""
    import torch

    if "pc1_order" not in ctx.cache:
        scores = first_principal_component_scores(ctx.x_pool)
        ctx.cache["pc1_order"] = torch.sort(scores, stable=True).indices
    return ctx.first_available(ctx.cache["pc1_order"], k)
