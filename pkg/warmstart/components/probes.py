"""Probes: per-epoch measurements of a run, written as extra columns of its ``epochs.parquet``.

A probe is one registered function ``probe(ctx, **options) -> {column: Tensor[S]}``, called after each
epoch with the weights as they are then. Like loss terms, probes are written
over a leading seed dimension, so single runs, stacked seeds and online rounds share them. A probe only
measures: it runs in eval mode, changes no weight, buffer, optimiser state or random stream, and so is not
part of a run's identity (adding one to a config re-trains the runs that need its columns, into the same
directories). One that cannot be computed per seed in a stack says ``stackable=False``.

Subsets a probe may ask for (``ProbeContext.subsets``, each ``[S, k]`` indices into the data):
  train  the run's training set;
  old    the part of it its parent trained on (a warm start's phase-1 data; an online round's earlier
         samples); absent for a run without a parent;
  new    the rest of the training set (the data the parent never saw);
  val    the run's validation set.

The loop evaluates a run on its validation set after its last epoch only; the ``validation`` probe
evaluates it after every epoch (the learning curves of Figures 1 and 7: a report that draws them asks for
it, ``warmstart.reports.registry.Report.probes``), into the record's own ``val_loss`` and ``val_acc``.

torch is imported inside the probes: planning reads this registry and must not pay torch's import.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from warmstart.core.registry import Registry, check_options

if TYPE_CHECKING:
    import torch


@dataclass
class ProbeContext:
    model: Any  # the trainee (warmstart.engine.trainees.SingleModel or StackedModels), in eval mode during the probe
    x: torch.Tensor  # every sample of the dataset's training split, on the device
    y: torch.Tensor
    subsets: dict[str, torch.Tensor]  # name -> [S, k] indices into x (see the module docstring)
    anchors: dict[str, dict[str, torch.Tensor]]  # "start" / "origin" -> name -> [S, ...]
    objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x [S,B,..], y [S,B]) -> summed CE [S]
    eval_batch_size: int = 4096
    # idx [S, k] -> each row's mean cross-entropy and accuracy [S] on its indices, as the loop evaluates
    evaluate: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None


@dataclass(frozen=True)
class Probe:
    name: str
    measure: Callable[..., dict[str, torch.Tensor]]
    stackable: bool
    choices: Mapping[str, tuple] = field(default_factory=dict)  # option -> its allowed values

    def check(self, options: Mapping[str, Any], key: str) -> None:
        check_options(self.measure, options, key, choices=self.choices)


PROBES: Registry[Probe] = Registry("probe")


def register_probe(name: str, *, stackable: bool = True, choices: Mapping[str, tuple] | None = None):
    """Register ``fn(ctx: ProbeContext, **options) -> {column: Tensor[S]}`` as the probe ``name``."""
    def decorate(fn):
        PROBES.add(name, Probe(name, fn, stackable, dict(choices or {})))
        return fn
    return decorate


@dataclass
class BoundProbe:
    probe: Probe
    options: dict[str, Any]

    def __call__(self, ctx: ProbeContext) -> dict[str, torch.Tensor]:
        return self.probe.measure(ctx, **self.options)


# -- the probes ------------------------------------------------------------------------------------------

SUBSETS = ("train", "old", "new")


@register_probe("grad_norm", choices={"subsets": SUBSETS})
def grad_norm(ctx: ProbeContext, subsets: list[str] = list(SUBSETS), max_samples: int | None = None):
    """The L2 norm of the mean gradient of the cross-entropy over each named subset (Figure 6), in eval
    mode: ``grad_norm_<subset>``. A subset the run does not have (``old`` without a parent) gives NaN.
    ``max_samples`` caps each subset at its first samples (the subsets are already in a random order)."""
    import torch

    rows = ctx.subsets["train"].shape[0]
    out = {}
    for name in subsets:
        idx = ctx.subsets.get(name)
        if idx is None or idx.shape[1] == 0:
            out[f"grad_norm_{name}"] = torch.full((rows,), float("nan"))
            continue
        idx = idx[:, :max_samples] if max_samples else idx
        total: dict[str, torch.Tensor] = {}
        for start in range(0, idx.shape[1], ctx.eval_batch_size):
            part = idx[:, start:start + ctx.eval_batch_size]
            # the seeds' summed losses: each seed's rows of the gradient are its own
            grads = ctx.model.grads(ctx.objective(ctx.x[part], ctx.y[part]).sum())
            total = grads if not total else {k: total[k] + g for k, g in grads.items()}
        squares = sum((g / idx.shape[1]).square().flatten(1).sum(1) for g in total.values())
        out[f"grad_norm_{name}"] = squares.sqrt()
    return out


@register_probe("init_distance")
def init_distance(ctx: ProbeContext):
    """How far the weights are from where the run started (Figure 5): ``dist_to_start``, the L2 distance
    over every parameter, and ``corr_with_start``, the Pearson correlation of all weights with the
    starting weights (for a warm start, its phase-1 weights)."""
    import torch

    start = ctx.anchors["start"]
    params = ctx.model.named_params()
    now = torch.cat([params[n].detach().flatten(1) for n in start], 1)
    then = torch.cat([start[n].flatten(1) for n in start], 1)
    a, b = now - now.mean(1, keepdim=True), then - then.mean(1, keepdim=True)
    corr = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    return {"dist_to_start": (now - then).norm(dim=1), "corr_with_start": corr}


@register_probe("validation")
def validation(ctx: ProbeContext):
    """The validation loss and accuracy after every epoch, computed as the loop computes them after the
    last (``val_loss``, ``val_acc``: the record's own columns, filled in every epoch)."""
    loss, acc = ctx.evaluate(ctx.subsets["val"])
    return {"val_loss": loss, "val_acc": acc}
