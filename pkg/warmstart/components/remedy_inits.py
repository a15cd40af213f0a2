"""Init strategies of the remedies published since the paper (the leaderboard,
``warmstart.plan.remedies_kind``): shrink-perturb in the DASH paper's form, interpolation toward
the first initialisation, head reset, DASH and FIRE. Entries of ``warmstart.components.inits.STRATEGIES``
like the paper's own strategies (registered by the package's ``__init__``), with the same context
(``InitContext``). torch is imported inside the strategies.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from warmstart.components.inits import InitContext, register_strategy
from warmstart.components.models import head_parameter_names
from warmstart.core.errors import SpecError
from warmstart.core.seeds import derived_seed

if TYPE_CHECKING:
    import torch
    from torch import nn


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


def fire_scale(weight: torch.Tensor, conv: str = "per_position") -> float:
    """FIRE's scale for a layer's orthogonalised weight: ``sqrt(d_out / d_in)`` for a linear (out, in) weight;
    for a convolution's (out, in, *kernel) kernel ``sqrt(c_out / c_in) / (kernel's number of entries)``,
    i.e. / (kh * kw) for a 2-D one (isaac7778/FIRE: "scale = sqrt(d_out/d_in) / kernel_size", with
    kernel_size = kh * kw), under ``conv: per_position``. Under ``conv: reshaped`` (our earlier form) the
    kernel is its (out, in * kernel) matrix and the scale that matrix's sqrt(rows / cols), i.e.
    sqrt(c_out / c_in) / k for a k x k kernel."""
    rows, cols = weight.shape[0], weight.shape[1]
    kernel = weight.numel() // (rows * cols)
    if conv == "reshaped":
        return (rows / (cols * kernel)) ** 0.5
    return (rows / cols) ** 0.5 / kernel


def fire_orthogonalise(weight: torch.Tensor, iterations: int = 10, iteration: str = "cubic",
                       conv: str = "per_position", precision: str = "float32") -> torch.Tensor:
    """FIRE's replacement of one weight (before ``alpha``): a linear (out, in) weight orthogonalised as a
    matrix; a convolution's (out, in, *kernel) kernel per kernel position (each (out, in) slice ``w[:, :,
    i, j]`` orthogonalised on its own, ``conv: per_position``, the authors') or as its (out, in * kernel)
    matrix (``conv: reshaped``); times ``fire_scale``.

    The orthogonalisation (``optimizer_algorithms.newton_schulz``, batched over kernel positions): ``X = W
    / ||W||_F``, then ``iterations`` steps of the ``cubic`` iteration ``X <- 1.5 X - 0.5 X X^T X`` (the
    authors'; it maps each singular value s of X to 1.5 s - 0.5 s^3, so it converges to the polar factor
    U V^T, but a small s grows only 1.5x a step: one that starts at 1e-3 of ||W||_F reaches 0.06 after
    10 steps), or of Muon's ``quintic`` one (our earlier form: every singular value into about [0.7,
    1.2] in 10 steps, never exactly 1). In ``precision`` float32 (the authors', the weights' own) or
    float64; returned in the weight's dtype."""
    import torch

    from warmstart.components.optimizer_algorithms.newton_schulz import CUBIC, QUINTIC, newton_schulz

    dtype = {"float32": torch.float32, "float64": torch.float64}[precision]
    coefficients = CUBIC if iteration == "cubic" else QUINTIC
    w = weight.detach().to(dtype)
    # eps 1e-30: X / ||X|| as the authors divide (a zero slice stays zero rather than becoming NaN)
    if w.dim() == 2 or conv == "reshaped":
        ortho = newton_schulz(w.flatten(1), iterations, coefficients, eps=1e-30, dtype=None).reshape(w.shape)
    else:
        slices = w.movedim((0, 1), (-2, -1))  # [*kernel, out, in]: one matrix per kernel position
        ortho = newton_schulz(slices, iterations, coefficients, eps=1e-30, dtype=None).movedim((-2, -1), (0, 1))
    return (ortho * fire_scale(weight, conv)).to(weight.dtype)


def fire_targets(model: nn.Module, layers: str = "auto") -> list[tuple[str, torch.Tensor]]:
    """(name, weight) of what FIRE orthogonalises, each a view of a layer's weight (one matrix or kernel).

    ``layers``: ``all``, every convolutional and linear layer's weight, the head's included (the authors'
    code on ResNet-18 and VGG-16: every ``nn.Linear`` and ``nn.Conv2d``; biases, norm layers and other
    parameters untouched), an attention layer's fused query/key/value weight as its three (dim, dim)
    matrices; ``attention_qk``, only the query and key projections of every attention layer (the authors'
    code on its ViT, ``is_vit``: ``to_q`` and ``to_k``); ``auto`` (the default), ``attention_qk`` on a model
    with attention layers, ``all`` on any other: the authors' choice per architecture."""
    from torch import nn

    from warmstart.components.nets import Attention

    attention = {name: m for name, m in model.named_modules() if isinstance(m, Attention)}
    if layers == "auto":
        layers = "attention_qk" if attention else "all"
    fused = {f"{name}.qkv" if name else "qkv": m.qkv for name, m in attention.items()}
    parts = ("q", "k") if layers == "attention_qk" else ("q", "k", "v")
    targets = []
    for name, module in model.named_modules():
        if name in fused:
            w = module.weight
            dim = w.shape[0] // 3
            targets += [(f"{name}.weight[{part}]", w[i * dim:(i + 1) * dim])
                        for i, part in enumerate(("q", "k", "v")) if part in parts]
        elif layers == "all" and isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            targets.append((f"{name}.weight" if name else "weight", module.weight))
    return targets


@register_strategy("fire", needs_parent=True, revision=2,
                   choices={"iteration": ("cubic", "quintic"), "conv": ("per_position", "reshaped"),
                            "layers": ("auto", "all", "attention_qk"), "precision": ("float32", "float64")})
def fire(ctx: InitContext, iterations: int = 10, iteration: str = "cubic", conv: str = "per_position",
         layers: str = "auto", alpha: float = 1.0, precision: str = "float32") -> nn.Module:
    """FIRE (Han et al., ICLR 2026), as its authors' code does it (isaac7778/FIRE, vision/interventions/
    fire.py and the README's ``fire``): from the parent's weights, each weight ``fire_targets`` names is
    replaced by ``alpha * fire_orthogonalise(W) + (1 - alpha) * W``; biases, BatchNorm / LayerNorm
    parameters, other parameters and buffers stay the parent's. The defaults are the authors': 10 cubic
    Newton-Schulz steps from W / ||W||_F, a convolution per kernel position scaled by sqrt(c_out / c_in) /
    (kh * kw), every conv and linear layer (the head included) but on a ViT only the query and key
    projections, alpha 1 (their vision code's interpolation toward the old weights, which its scripts do
    not use), in float32.

    Our earlier FIRE is ``iteration: quintic, conv: reshaped, layers: all`` (in float64); ``layers: all``
    splits a fused query/key/value weight into its three matrices, as three layers would be (the earlier
    one orthogonalised it whole). A 1-D convolution is orthogonalised per kernel tap and scaled by
    sqrt(c_out / c_in) / k (the authors' 2-D rule on one spatial dimension)."""
    import torch

    if not (isinstance(iterations, int) and iterations >= 1):
        raise SpecError(f"init.options.iterations: must be >= 1, got {iterations!r}")
    if not 0 <= alpha <= 1:
        raise SpecError(f"init.options.alpha: must be in [0, 1], got {alpha!r}")
    ctx.fresh.load_state_dict(ctx.parent_state, strict=True)
    with torch.no_grad():
        for _, w in fire_targets(ctx.fresh, layers):
            new = fire_orthogonalise(w, iterations, iteration, conv, precision)
            w.copy_(alpha * new + (1 - alpha) * w if alpha != 1 else new)
    return ctx.fresh
