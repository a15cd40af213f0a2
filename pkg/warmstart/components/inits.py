"""Initialisation strategies: how a run's starting weights are made, optionally from a parent run.

Each strategy is one registered function ``strategy(ctx, **options) -> nn.Module``. Its options come from
the config's ``inits:`` section (e.g. ``sp: {strategy: shrink_perturb, shrink: 0.4, perturb: 0.1}``) and
are checked against the function's keyword parameters. ``needs_parent`` says whether it starts from a
parent's weights; the planner gives such a strategy the phase-1 run (batch), the source run (transfer) or
the previous round (online), and the reports draw every strategy without a parent as a baseline.

The context (``InitContext``) holds what a strategy may need: the freshly built model, the parent's
weights and optimiser state, another independent initialisation, the run's (and its parent's) training
data, and a ``train`` callable for strategies that train part of the model first. What a strategy spends
(training, gradient passes) is counted in ``ctx.cost`` and reported beside the run's own training time.

This module holds the registry, the context and the paper's strategies; the remedies published since
(DASH, FIRE, head reset, ...) are entries of the same registry in ``warmstart.components.remedy_inits``
(registered by the package's ``__init__``). torch is imported inside the strategies that use it: planning
(parsing the Snakefile) reads this registry, and must not pay torch's import.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from warmstart.core.errors import SpecError
from warmstart.components.models import head_parameter_names
from warmstart.core.registry import Registry, check_options
from warmstart.core.seeds import derived_seed

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass
class InitCost:
    """Work a strategy did before the run's own training: seconds and samples processed."""

    time_s: float = 0.0
    samples: int = 0


@dataclass
class InitContext:
    fresh: nn.Module  # built under the run's seed; for a batch run with a parent, its lineage's first init
    seed: int
    parent_state: dict[str, torch.Tensor] | None = None
    parent_optimizer_state: dict | None = None  # the parent's final optimiser state, when it was kept
    x_train: torch.Tensor | None = None  # the run's training data, on the device
    y_train: torch.Tensor | None = None
    x_parent: torch.Tensor | None = None  # the data the parent trained on (None without a parent)
    y_parent: torch.Tensor | None = None
    new_model: Callable[[str], nn.Module] | None = None  # another initialisation, seeded by (seed, tag)
    # the lineage's first initialisation, a copy of its parameters taken before any strategy ran (a batch
    # run's phase-1 init; a stream's first round)
    origin: dict[str, torch.Tensor] | None = None
    train: Callable[..., Any] | None = None  # (model) -> TrainResult on the run's data, optimiser, stop rule
    cost: InitCost = field(default_factory=InitCost)
    optimizer_state: dict | None = None  # set by a strategy that hands the run an optimiser state


@dataclass(frozen=True)
class Strategy:
    name: str
    apply: Callable[..., nn.Module]
    needs_parent: bool
    # whether runs with these options stack (their initial models are built per seed, so most do)
    stackable: Callable[[Mapping[str, Any]], bool] = lambda options: True
    choices: Mapping[str, tuple] = field(default_factory=dict)  # option -> its allowed values
    # which of its parent's optional files (e.g. "optimizer", its final optimiser state) it needs, by options
    parent_files: Callable[[Mapping[str, Any]], tuple[str, ...]] = lambda options: ()
    # which parameters the run then trains: "all", or the part it trains ("head"); runs that train
    # different parts never share a stack (a stack's leaves are trainable for every row or none)
    trains: str = "all"

    def check(self, options: Mapping[str, Any], key: str) -> None:
        check_options(self.apply, options, key, choices=self.choices)


STRATEGIES: Registry[Strategy] = Registry("init strategy")


def register_strategy(name: str, needs_parent: bool, stackable: Callable[[Mapping[str, Any]], bool] | None = None,
                      choices: Mapping[str, tuple] | None = None,
                      parent_files: Callable[[Mapping[str, Any]], tuple[str, ...]] | None = None,
                      trains: str = "all", revision: int = 1):
    """Register ``fn(ctx: InitContext, **options) -> nn.Module`` as the init strategy ``name``
    (``trains``: the part of the model the run trains, when not all of it; ``revision``: ``Registry.add``)."""
    def decorate(fn):
        STRATEGIES.add(name, Strategy(name, fn, needs_parent, stackable or (lambda options: True),
                                      dict(choices or {}), parent_files or (lambda options: ()), trains),
                       revision)
        return fn
    return decorate


def initialise(strategy: str, options: Mapping[str, Any], ctx: InitContext) -> nn.Module:
    """The model a run starts training from: ``strategy`` applied to the context."""
    entry = STRATEGIES.lookup(strategy, "init.strategy")
    entry.check(options, "init.options")
    if entry.needs_parent and ctx.parent_state is None:
        raise SpecError(f"init.strategy: {strategy!r} needs the parent run's weights")
    return entry.apply(ctx, **options)


@register_strategy("random", needs_parent=False, choices={"draw": ("run_seed", "new")})
def random_init(ctx: InitContext, draw: str = "run_seed") -> nn.Module:
    """A fresh initialisation; any parent is ignored. ``draw``: ``run_seed`` (the default), the model as
    built under the run's seed, so a phase-2 random run starts from the same weights as its phase-1 run
    (the two phases differ only in their data); ``new``, another draw, seeded by the run's seed, as in the
    authors' code, which builds a new model for phase 2."""
    return ctx.fresh if draw == "run_seed" else ctx.new_model("random")


def _keeps_optimizer(options: Mapping[str, Any]) -> bool:
    return options.get("optimizer_state") == "keep"


# A stack shares one step count, and parents stop at different epochs: carried Adam states train alone.
@register_strategy("warm", needs_parent=True, choices={"optimizer_state": ("reset", "keep")},
                   parent_files=lambda options: ("optimizer",) if _keeps_optimizer(options) else (),
                   stackable=lambda options: not _keeps_optimizer(options))
def warm_start(ctx: InitContext, optimizer_state: str = "reset") -> nn.Module:
    """Start from exactly the parent's final weights and buffers (BatchNorm statistics included).

    ``optimizer_state``: ``reset`` (a new optimiser, the paper's default) or ``keep`` (continue the
    parent's optimiser state, e.g. Adam's moments: the paper's Section 3.5)."""
    ctx.fresh.load_state_dict(ctx.parent_state, strict=True)
    if optimizer_state == "keep":
        if ctx.parent_optimizer_state is None:
            raise SpecError("init.options.optimizer_state: 'keep' needs the parent's optimiser state "
                            "(the planner asks the parent run to keep it)")
        ctx.optimizer_state = ctx.parent_optimizer_state
    return ctx.fresh


@register_strategy("transfer", needs_parent=True)
def transfer_start(ctx: InitContext) -> nn.Module:
    """A warm start from a model trained on another task: every tensor whose name and shape match the
    parent's is copied; the rest keep their fresh initialisation. With a different number of classes
    that is the final linear layer (the head); with a different number of input channels, the first
    convolution (the stem). Same-shaped models therefore get exactly a warm start."""
    model, parent_state = ctx.fresh, ctx.parent_state
    kept = transferred_tensors(model, parent_state)
    if not kept:
        raise SpecError("init.strategy: 'transfer' found no tensor of the parent that fits this model")
    state = model.state_dict()
    state.update({k: parent_state[k] for k in kept})
    model.load_state_dict(state)
    return model


def transferred_tensors(model: nn.Module, parent_state: dict) -> list[str]:
    """Names of the tensors a transfer start takes from the parent (for reports and tests)."""
    state = model.state_dict()
    return [k for k, v in parent_state.items() if k in state and state[k].shape == v.shape]


@register_strategy("shrink_perturb", needs_parent=True)
def shrink_perturb(ctx: InitContext, shrink: float = 0.4, perturb: float = 0.1) -> nn.Module:
    """Shrink-perturb in the authors' form (Ash & Adams, NeurIPS 2020): every parameter becomes
    ``shrink * old + perturb * fresh``, ``fresh`` being the same parameter of a newly initialised model
    (another draw than the run's own init), so the noise follows each layer's own init scale; BatchNorm's
    affine parameters included. Buffers (BatchNorm running statistics) are the fresh model's: reset.
    shrink 1, perturb 0 is a warm start (with reset statistics); shrink 0, perturb 1 a fresh init."""
    fresh = ctx.new_model("shrink_perturb")
    state = fresh.state_dict()
    for name, p in fresh.named_parameters():
        state[name] = shrink * ctx.parent_state[name] + perturb * p.detach()
    ctx.fresh.load_state_dict(state)
    return ctx.fresh


@register_strategy("noisy_warm", needs_parent=True)
def noisy_warm(ctx: InitContext, std: float) -> nn.Module:
    """A warm start plus Gaussian noise (the paper's Table 3): every parameter of the parent gets
    independent N(0, std^2) noise, drawn from a generator seeded by the run; buffers are kept."""
    import torch

    generator = torch.Generator().manual_seed(derived_seed(ctx.seed, "noisy_warm"))
    ctx.fresh.load_state_dict(ctx.parent_state, strict=True)
    with torch.no_grad():
        for p in ctx.fresh.parameters():
            p.add_(torch.randn(p.shape, generator=generator).to(p.device) * std)
    return ctx.fresh


def freeze_all_but_head(model: nn.Module) -> list[str]:
    head = head_parameter_names(model)
    for name, p in model.named_parameters():
        p.requires_grad_(name in head)
    return head


@register_strategy("last_layer", needs_parent=True, trains="head")
def last_layer(ctx: InitContext) -> nn.Module:
    """LL (the paper's Table 4): the parent's weights, with every parameter but the last layer's frozen,
    so the run trains only the last layer."""
    ctx.fresh.load_state_dict(ctx.parent_state, strict=True)
    freeze_all_but_head(ctx.fresh)
    return ctx.fresh


@register_strategy("last_layer_then_all", needs_parent=True)
def last_layer_then_all(ctx: InitContext) -> nn.Module:
    """LL+WS (Table 4): from the parent's weights, first train only the last layer to convergence on the
    run's data (the run's optimiser, batch size and stop rule; its time counts as init cost), then the run
    trains the whole network from there."""
    ctx.fresh.load_state_dict(ctx.parent_state, strict=True)
    freeze_all_but_head(ctx.fresh)
    ctx.train(ctx.fresh)
    for p in ctx.fresh.parameters():
        p.requires_grad_(True)
    return ctx.fresh
