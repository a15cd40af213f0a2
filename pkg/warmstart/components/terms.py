"""Loss terms: what a run adds to the cross-entropy it minimises (regularisers, penalties, remedies).

A term is one registered function ``term(batch, **options) -> Tensor[S]``: its value for each of the S
seeds trained together (S = 1 for a single run), added to each seed's mean cross-entropy of the batch.
It sees what the batch and the run offer (``TermBatch``): the logits, targets and inputs, the weights as
``[S, ...]`` tensors, the weights the run started from (``anchors``), the same forward pass, and what its
``setup`` made once per seed when the run began (e.g. EWC's Fisher estimate, from the init context).

Everything here is written over a leading seed dimension, so one definition serves single runs, stacked
seeds and online rounds alike (``warmstart.engine.objective.batch_objective`` is the one caller, through
the run's ``warmstart.engine.hooks.TermHook``s). A term that cannot
be computed per seed in a stack says ``stackable=False`` and the planner trains its runs alone.
A term is part of a run's identity (it changes the results): ``RunSpec.terms``. torch is imported
inside the terms that call it: planning reads this registry and must not pay torch's import.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from warmstart.core.errors import SpecError
from warmstart.core.registry import Registry, check_options

if TYPE_CHECKING:
    import torch


@dataclass
class TermBatch:
    logits: torch.Tensor  # [S, B, C], float32
    targets: torch.Tensor  # [S, B]
    inputs: torch.Tensor  # [S, B, ...]
    cross_entropy: torch.Tensor  # [S]: each seed's mean cross-entropy on this batch
    params: dict[str, torch.Tensor]  # name -> [S, ...], differentiable: the weights being trained
    anchors: dict[str, dict[str, torch.Tensor]]  # "start" / "origin" -> name -> [S, ...] (engine.hooks.Anchors)
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
        """The options are the penalty's keyword parameters (``check_options``); a coefficient is >= 0."""
        coef = options.get("coef", 0)
        if isinstance(coef, bool) or not isinstance(coef, (int, float)) or coef < 0:
            raise SpecError(f"{key}.coef: must be a number >= 0, got {coef!r} (write 1e-3 as 1.0e-3: "
                            "YAML reads 1e-3 as a string)")
        check_options(self.penalty, options, key, choices=self.choices)


TERMS: Registry[Term] = Registry("loss term")


def register_term(name: str, *, setup: Callable | None = None, stackable: bool = True,
                  choices: Mapping[str, tuple] | None = None, revision: int = 1):
    """Register ``fn(batch: TermBatch, **options) -> Tensor[S]`` as the loss term ``name``; ``setup(ctx,
    model, **options)`` runs once per seed when the run starts, its tensors reaching ``batch.state``
    (``revision``: ``Registry.add``)."""
    def decorate(fn):
        TERMS.add(name, Term(name, fn, setup, stackable, dict(choices or {})), revision)
        return fn
    return decorate


def per_seed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The one definition of the cross-entropy a run minimises and reports: logits [S, B, C] (float32),
    targets [S, B] -> each seed's mean (``reduction="mean"``) or summed (``"sum"``) cross-entropy, [S].
    Per sample, then per seed: one reduction for a single model and a stack alike."""
    import torch

    s = logits.shape[0]
    per_sample = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
    return per_sample.view(s, -1).mean(1) if reduction == "mean" else per_sample.view(s, -1).sum(1)


def per_seed_sum(tensors) -> torch.Tensor:
    """Sum over every element but the leading seed dimension, over several [S, ...] tensors: [S]."""
    return sum(t.flatten(1).sum(1) for t in tensors)


def squared_distance(params: Mapping[str, torch.Tensor], anchor: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """||theta - anchor||^2 per seed, over the parameters the anchor holds."""
    return per_seed_sum((params[n] - anchor[n]).square() for n in anchor)


# The options in which the rows of one stack may differ: the coefficient, which every term multiplies
# its value by. A float for a single run; a float32 [S] tensor for a stack whose rows have their own,
# where ``coef * value`` gives each row the product its run alone computes (the float is rounded to
# float32 either way: the stacked engine's weights and terms are float32)
ROW_OPTIONS = ("coef",)


@dataclass
class BoundTerm:
    """A configured term of one run (or stack): its options, those each row has its own (``ROW_OPTIONS``;
    [S] tensors, kept with the rows) and the ``[S, ...]`` state its setup made."""

    term: Term
    options: dict[str, Any]
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    row_options: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def of_rows(cls, term: Term, options: Sequence[Mapping[str, Any]], state: dict[str, torch.Tensor],
                device=None) -> "BoundTerm":
        """The term of a stack whose rows have these ``options``: equal in all but ``ROW_OPTIONS``
        (``plan.job_blocks.stack_key``); an option whose rows differ becomes an [S] tensor on ``device``
        (the weights')."""
        import torch

        shared = dict(options[0])
        rows = {}
        for name in ROW_OPTIONS:
            values = [o.get(name) for o in options]
            if len(set(values)) > 1:
                rows[name] = torch.tensor(values, dtype=torch.float32, device=device)
                shared.pop(name)
        if any({k: v for k, v in o.items() if k not in rows} != shared for o in options):
            raise ValueError(f"term {term.name}: the rows of a stack differ in options other than {ROW_OPTIONS}")
        return cls(term, shared, state, rows)

    def __call__(self, batch: TermBatch) -> torch.Tensor:
        return self.term.penalty(replace(batch, state=self.state), **self.options, **self.row_options)


# -- the terms ---------------------------------------------------------------------------------------------

@register_term("l2_init", revision=2, choices={"anchor": ("start", "origin")})
def l2_init(batch: TermBatch, coef: float, anchor: str = "origin", halve: bool = False,
            biases: bool = True) -> torch.Tensor:
    """L2-init (Kumar et al. 2023): an L2 penalty toward initial weights, ``coef * ||theta - theta_0||^2``
    over every parameter (biases and norm layers' included). ``anchor``: ``origin`` (the default, Kumar et
    al.'s theta_0), the lineage's first random initialisation (a batch run's phase-1 init; a stream's first
    round's), or ``start``, the weights the run began training from (for a warm start, its parent's: an
    L2-SP-like pull toward the phase-1 solution). ``halve``: ``coef / 2 * ||theta - theta_0||^2`` instead,
    the form of FIRE's comparison (isaac7778/FIRE vision/train.py, its ``regen`` term, over all parameters,
    anchored at the first init), so its coefficients mean what they mean there. ``biases: false`` leaves
    the biases out (the DASH code's form)."""
    anchor_params = batch.anchors[anchor]
    if not biases:
        anchor_params = {n: a for n, a in anchor_params.items() if n.rsplit(".", 1)[-1] != "bias"}
    return (coef / 2 if halve else coef) * squared_distance(batch.params, anchor_params)


@register_term("l2")
def l2(batch: TermBatch, coef: float) -> torch.Tensor:
    """A plain L2 weight penalty (Krogh & Hertz), ``coef * ||theta||^2`` over every parameter (Table 2)."""
    return coef * per_seed_sum(p.square() for p in batch.params.values())


@register_term("confidence")
def confidence(batch: TermBatch, coef: float) -> torch.Tensor:
    """The confidence penalty (Pereyra et al. 2017): minus ``coef`` times the mean entropy of the
    predicted distribution, so that minimising the loss keeps predictions from becoming over-confident."""
    import torch

    log_p = torch.log_softmax(batch.logits, dim=-1)
    entropy = -(log_p.exp() * log_p).sum(-1).mean(-1)  # [S]
    return -coef * entropy


@register_term("adversarial")
def adversarial(batch: TermBatch, coef: float, epsilon: float = 0.03) -> torch.Tensor:
    """Adversarial training with FGSM examples (Goodfellow et al.): ``coef`` times the cross-entropy on
    ``x + epsilon * sign(grad_x CE)``, the gradient taken on the batch as it is (in normalised input
    units: images lie in [-1, 1]). The adversarial inputs are constants: the term's gradient flows only
    through the second forward pass."""
    import torch

    x = batch.inputs.detach().requires_grad_(True)
    # the seeds' summed losses: each seed's inputs are its own rows, so this is per-seed input gradients
    (grad,) = torch.autograd.grad(per_seed_cross_entropy(batch.forward(x), batch.targets, "sum").sum(), x)
    x_adv = (batch.inputs + epsilon * grad.sign()).detach()
    return coef * per_seed_cross_entropy(batch.forward(x_adv), batch.targets)


def diagonal_fisher(model, x: torch.Tensor, y: torch.Tensor, samples: int | None = None,
                    chunk: int = 256) -> dict[str, torch.Tensor]:
    """The empirical diagonal Fisher information of ``model`` (eval mode) on (x, y): the mean over samples
    of the squared per-sample gradient of log p(y | x), per parameter. ``samples`` caps the data at its
    first samples (a random order already)."""
    import torch
    from torch.func import functional_call, grad, vmap

    if samples:
        x, y = x[:samples], y[:samples]
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    was_training = model.training
    model.eval()

    def nll(p, xi, yi):
        out = functional_call(model, (p, buffers), (xi.unsqueeze(0),))  # [1, C]: one seed, one sample
        return per_seed_cross_entropy(out.unsqueeze(0), yi.view(1, 1))[0]
    per_sample = vmap(grad(nll), in_dims=(None, 0, 0))
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for start in range(0, len(x), chunk):
        grads = per_sample(params, x[start:start + chunk], y[start:start + chunk])
        for n in total:
            total[n] += grads[n].square().sum(0)
    model.train(was_training)
    return {n: t / max(len(x), 1) for n, t in total.items()}


def _ewc_setup(ctx, model, coef: float, samples: int | None = None) -> dict[str, torch.Tensor]:
    if ctx.x_parent is None:
        raise SpecError("terms.ewc: needs a parent run's training data (a warm start) to estimate the Fisher")
    return diagonal_fisher(model, ctx.x_parent, ctx.y_parent, samples)


@register_term("ewc", setup=_ewc_setup)
def ewc(batch: TermBatch, coef: float, samples: int | None = None) -> torch.Tensor:
    """Elastic weight consolidation (Kirkpatrick et al.) toward the weights the run started from (a warm
    start's phase-1 weights): ``coef / 2 * sum F (theta - theta_start)^2``, with F the diagonal Fisher
    of the starting model on the parent's training data (the phase-1 data), estimated once when the run
    begins (``samples`` caps the data it is estimated on)."""
    anchor = batch.anchors["start"]
    return coef / 2 * per_seed_sum(batch.state[n] * (batch.params[n] - anchor[n]).square() for n in batch.state)


def _is_weight(name: str) -> bool:
    return name.rsplit(".", 1)[-1] == "weight"


def _is_fused_qkv(name: str) -> bool:
    """A ViT attention layer's query, key and value projections held as one weight (``warmstart.components.nets``)."""
    return name == "qkv.weight" or name.endswith(".qkv.weight")


@register_term("parseval", revision=2, choices={"qkv": ("split", "fused")})
def parseval(batch: TermBatch, coef: float, scale: float = 1.0, qkv: str = "split") -> torch.Tensor:
    """Parseval regularisation (Cisse et al. 2017; as a plasticity remedy, Chung et al. 2024), as FIRE's
    comparison computes it (isaac7778/FIRE vision/interventions/parseval.py, ``parseval_loss(model,
    scale=1)``): ``coef * sum ||W W^T - scale I||_F^2`` over the weight of every layer, the head's
    included, W reshaped to (out, -1) (a convolution's kernel too), plus ``||w^2 - scale||^2`` for the 1-D
    weight of a normalisation layer (its diagonal map's W W^T); a sum, not a mean. Which tensors are
    weights is read from their names, the one thing a term sees of the model: a parameter called
    ``...weight`` (torch's name for a layer's weight), matrices when they have two or more dimensions per
    seed, a norm layer's otherwise. Biases, and parameters that are no layer's weight (a ViT's position
    embedding and class token), are excluded, as there. ``qkv``: a ViT's fused query/key/value weight
    (3 dim, dim) counts as its three (dim, dim) matrices (``split``, the default: the comparison's ViT has
    three projection layers) or as one matrix (``fused``, whose 3 dim x 3 dim Gram cannot reach the
    identity: it has rank dim). Per seed: [S]."""
    import torch

    total = None
    for name, p in batch.params.items():
        if not _is_weight(name):
            continue
        if p.dim() >= 3:  # [S, out, ...]: each seed's (out, -1) matrix
            w = p.flatten(2)
            if qkv == "split" and _is_fused_qkv(name):
                w = w.unflatten(1, (3, -1)).flatten(0, 1)  # [S * 3, dim, dim]
            gram = torch.bmm(w, w.transpose(1, 2))
            eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
            value = (gram - scale * eye).square().sum((1, 2)).view(p.shape[0], -1).sum(1)
        else:  # [S, features]: a normalisation layer's gains
            value = (p.flatten(1).square() - scale).square().sum(1)
        total = value if total is None else total + value
    if total is None:
        return batch.cross_entropy.new_zeros(batch.cross_entropy.shape)
    return coef * total
