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

torch is imported inside the strategies that use it: planning (parsing the Snakefile) reads this
registry, and must not pay torch's import.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .errors import SpecError
from .models import head_parameter_names
from .registry import Registry, check_options

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

    def check(self, options: Mapping[str, Any], key: str) -> None:
        check_options(self.apply, options, key, choices=self.choices)


STRATEGIES: Registry[Strategy] = Registry("init strategy")


def derived_seed(seed: int, tag: str) -> int:
    """A seed for another, independent draw of the run (e.g. shrink-perturb's fresh model), fixed by
    the run's seed and a tag, so that it is reproducible and unrelated to the run's own initialisation."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{tag}".encode()).digest()[:4], "little")


def register_strategy(name: str, needs_parent: bool, stackable: Callable[[Mapping[str, Any]], bool] | None = None,
                      choices: Mapping[str, tuple] | None = None,
                      parent_files: Callable[[Mapping[str, Any]], tuple[str, ...]] | None = None):
    """Register ``fn(ctx: InitContext, **options) -> nn.Module`` as the init strategy ``name``."""
    def decorate(fn):
        STRATEGIES.add(name, Strategy(name, fn, needs_parent, stackable or (lambda options: True),
                                      dict(choices or {}), parent_files or (lambda options: ())))
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


def _freeze_all_but_head(model: nn.Module) -> list[str]:
    head = head_parameter_names(model)
    for name, p in model.named_parameters():
        p.requires_grad_(name in head)
    return head


@register_strategy("last_layer", needs_parent=True)
def last_layer(ctx: InitContext) -> nn.Module:
    """LL (the paper's Table 4): the parent's weights, with every parameter but the last layer's frozen,
    so the run trains only the last layer."""
    ctx.fresh.load_state_dict(ctx.parent_state, strict=True)
    _freeze_all_but_head(ctx.fresh)
    return ctx.fresh


@register_strategy("last_layer_then_all", needs_parent=True)
def last_layer_then_all(ctx: InitContext) -> nn.Module:
    """LL+WS (Table 4): from the parent's weights, first train only the last layer to convergence on the
    run's data (the run's optimiser, batch size and stop rule; its time counts as init cost), then the run
    trains the whole network from there."""
    ctx.fresh.load_state_dict(ctx.parent_state, strict=True)
    _freeze_all_but_head(ctx.fresh)
    ctx.train(ctx.fresh)
    for p in ctx.fresh.parameters():
        p.requires_grad_(True)
    return ctx.fresh


# -- remedies published since (the leaderboard, warmstart.experiments.plan_remedies) ---------------------

def _weighted_layers(model: nn.Module):
    """(name, module) of every convolutional and linear layer: what the DASH paper's remedies touch
    (not BatchNorm)."""
    from torch import nn

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            yield name, module


@register_strategy("shrink_perturb_weights", needs_parent=True)
def shrink_perturb_weights(ctx: InitContext, shrink: float = 0.3, sigma: float = 0.01) -> nn.Module:
    """Shrink-perturb in the DASH paper's form: the parent's weights, and on every convolutional and
    linear weight (not biases, not BatchNorm) ``shrink * w + N(0, sigma^2)``."""
    import torch

    generator = torch.Generator().manual_seed(derived_seed(ctx.seed, "shrink_perturb_weights"))
    ctx.fresh.load_state_dict(ctx.parent_state, strict=True)
    with torch.no_grad():
        for _, layer in _weighted_layers(ctx.fresh):
            w = layer.weight
            w.mul_(shrink).add_(torch.randn(w.shape, generator=generator).to(w.device) * sigma)
    return ctx.fresh


@register_strategy("interpolate_init", needs_parent=True)
def interpolate_init(ctx: InitContext, c: float = 0.8) -> nn.Module:
    """Interpolation toward the original initialisation (the Hare & Tortoise and FIRE code bases): every
    parameter becomes ``(1 - c) * theta + c * theta_0``, with theta the parent's and theta_0 the run's
    lineage's first initialisation (for a batch run, its phase-1 run's init; online, the first round's).
    Buffers are the parent's."""
    import torch

    ctx.fresh.load_state_dict(ctx.parent_state, strict=True)
    with torch.no_grad():
        for name, p in ctx.fresh.named_parameters():
            p.mul_(1 - c).add_(c * ctx.origin[name])
    return ctx.fresh


@register_strategy("head_reset", needs_parent=True)
def head_reset(ctx: InitContext) -> nn.Module:
    """Head reset (Nikishin et al. 2022): the parent's weights with the last layer re-initialised (a new
    draw)."""
    import torch

    fresh = dict(ctx.new_model("head_reset").named_parameters())
    ctx.fresh.load_state_dict(ctx.parent_state, strict=True)
    head = set(head_parameter_names(ctx.fresh))
    with torch.no_grad():
        for name, p in ctx.fresh.named_parameters():
            if name in head:
                p.copy_(fresh[name])
    return ctx.fresh


def dash_scales(weight: torch.Tensor, direction: torch.Tensor, shrink_min: float, per: str) -> torch.Tensor:
    """DASH's factor for each slice of a weight: the cosine between the weight and the averaged negative
    gradient, clipped to [shrink_min, 1]. Slices: a linear layer's output rows; a convolution's kernel
    slices (output, input channel) over their spatial entries (``per: kernel``, the DASH code) or whole
    output filters (``per: filter``); a bias vector is one slice."""
    import torch

    if weight.dim() == 1:
        w, g = weight.reshape(1, -1), direction.reshape(1, -1)
    elif weight.dim() == 2 or per == "filter":
        w, g = weight.flatten(1), direction.flatten(1)
    else:
        w, g = weight.flatten(2), direction.flatten(2)
    cos = torch.nn.functional.cosine_similarity(w, g, dim=-1, eps=1e-12)
    return cos.clamp(shrink_min, 1.0)


@register_strategy("dash", needs_parent=True, choices={"per": ("kernel", "filter")})
def dash(ctx: InitContext, shrink_min: float = 0.3, alpha: float = 0.3, per: str = "kernel",
         batch_size: int = 1024) -> nn.Module:
    """DASH (Shin et al., NeurIPS 2024): from the parent's weights, keep an EMA of the negative gradient
    over the run's training data (all the data seen so far) in batches on a copy in eval mode,
    ``g = (1 - alpha) g + alpha (-grad)``; then shrink each slice of every convolutional and linear
    weight and bias (``dash_scales``) by its cosine with g, clipped to [shrink_min, 1]. BatchNorm is left
    as it is. The gradient pass counts as the init's cost."""
    import time

    import torch

    ctx.fresh.load_state_dict(ctx.parent_state, strict=True)
    model = ctx.fresh
    started = time.perf_counter()
    was_training = model.training
    model.eval()
    ema = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for start in range(0, len(ctx.x_train), batch_size):
        xb, yb = ctx.x_train[start:start + batch_size], ctx.y_train[start:start + batch_size]
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        grads = torch.autograd.grad(loss, list(model.parameters()))
        for (n, _), g in zip(model.named_parameters(), grads):
            ema[n].mul_(1 - alpha).add_(-alpha * g)
    model.train(was_training)
    with torch.no_grad():
        for name, layer in _weighted_layers(model):
            for pname, p in layer.named_parameters(recurse=False):
                scale = dash_scales(p, ema[f"{name}.{pname}" if name else pname], shrink_min, per)
                p.mul_(scale.reshape(scale.shape + (1,) * (p.dim() - scale.dim())))  # one factor per slice
    ctx.cost.time_s += time.perf_counter() - started
    ctx.cost.samples += len(ctx.x_train)
    return model


def fire_scale(weight: torch.Tensor) -> float:
    """FIRE's target scale for a weight seen as its (out, in * kernel) matrix: sqrt(rows / cols). For a
    linear layer that is sqrt(d_out / d_in); for a k x k convolution sqrt(c_out / c_in) / k (the FIRE
    paper's "divided by the kernel size"), for a 1-D one sqrt(c_out / c_in) / sqrt(k): in every case
    sqrt(rows / cols), the scale at which the orthogonalised matrix's singular values are those of a
    map that keeps the size of its input per unit of fan-in (the spectral scaling Muon's updates use too)."""
    rows = weight.shape[0]
    return (rows / (weight.numel() // rows)) ** 0.5


@register_strategy("fire", needs_parent=True)
def fire(ctx: InitContext, iterations: int = 10) -> nn.Module:
    """FIRE (Han et al., ICLR 2026): from the parent's weights, the weight of every convolutional and linear
    layer (the head included), reshaped to (out, -1), is orthogonalised by ``iterations`` Newton-Schulz
    steps and rescaled by ``fire_scale``; biases, BatchNorm / LayerNorm parameters, other parameters and
    buffers stay the parent's.

    The iteration is Muon's quintic one (``warmstart.optim.newton_schulz``, in float64 here: it runs once): from
    W / ||W||_F, ``X <- a X + (b A + c A^2) X`` with A = X X^T and (a, b, c) = (3.4445, -4.7750, 2.0315).
    It keeps W's singular vectors exactly and, after enough steps, puts every singular value in about
    [0.7, 1.2] rather than at 1: it does not converge to the polar factor U V^T. It is chosen over the
    cubic iteration ``X <- 1.5 X - 0.5 X X^T X`` (which does converge to U V^T) because the cubic one
    needs many more than 10 steps for the small singular values of a trained or random matrix (it grows
    a singular value s << 1 by only 1.5x a step: from 1e-3, 10 steps reach 0.06), while the quintic one
    grows it 3.4x a step. So W W^T (or W^T W, for a tall W) is the scaled identity only up to that band."""
    import torch

    from .optim import newton_schulz

    if iterations < 1:
        raise SpecError(f"init.options.iterations: must be >= 1, got {iterations!r}")
    ctx.fresh.load_state_dict(ctx.parent_state, strict=True)
    with torch.no_grad():
        for _, layer in _weighted_layers(ctx.fresh):
            w = layer.weight
            ortho = newton_schulz(w.flatten(1), iterations, dtype=torch.float64)  # once per run: exactly
            w.copy_((ortho * fire_scale(w)).reshape(w.shape).to(w.dtype))
    return ctx.fresh
