"""What a run minimises and how it is measured: the autocast forward and the cross-entropy, each written
once (``forward_logits``; ``warmstart.components.terms.per_seed_cross_entropy``), and everything built on
them: a batch's objective (cross-entropy plus the hooks' loss terms), the differentiable summed
cross-entropy the probes read, and evaluation.
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import torch
from torch import nn

from warmstart.components.terms import TermBatch, per_seed_cross_entropy
from warmstart.engine.precision import ResolvedEngine
from warmstart.engine.trainees import SingleModel


def forward_logits(trainee, x: torch.Tensor, resolved: ResolvedEngine) -> torch.Tensor:
    """The one forward pass: inputs [S, B, ...] -> float32 logits [S, B, C], under the run's autocast."""
    with resolved.context(x.device):
        return trainee.forward(x).float()


def batch_objective(trainee, xb: torch.Tensor, yb: torch.Tensor, hooks: Sequence,
                    resolved: ResolvedEngine) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The one definition of what a run minimises: per seed, the mean cross-entropy of the batch plus
    each hook's ``loss`` (the run's loss terms), added in the hooks' order. Returns (objective [S],
    cross-entropy [S], logits [S, B, C]). Only this forward pass is recorded (``trainee.recording``)."""
    with trainee.recording():
        logits = forward_logits(trainee, xb, resolved)
    ce = per_seed_cross_entropy(logits, yb)
    objective = ce
    losses = [hook for hook in hooks if hook.adds_loss]
    if losses:
        batch = TermBatch(logits=logits, targets=yb, inputs=xb, cross_entropy=ce, params=trainee.named_params(),
                          anchors={}, state={}, forward=lambda x: forward_logits(trainee, x, resolved))
        for hook in losses:
            objective = objective + hook.loss(batch)
    return objective, ce, logits


def summed_cross_entropy(trainee, x: torch.Tensor, y: torch.Tensor, resolved: ResolvedEngine):
    """(inputs [S, B, ...], targets [S, B]) -> each seed's summed cross-entropy [S], differentiable."""
    def objective(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return per_seed_cross_entropy(forward_logits(trainee, xb, resolved), yb, "sum")
    return objective


@contextlib.contextmanager
def eval_mode(trainee):
    was_training = trainee.training
    trainee.train(False)
    try:
        yield
    finally:
        trainee.train(was_training)


def evaluate_rows(trainee, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, batch_size: int = 4096,
                  resolved: ResolvedEngine = ResolvedEngine()) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-seed mean cross-entropy and accuracy [S] (float64, on the device), each seed on its own indices
    ``idx[s]``, in eval mode, in large batches. The means are taken in float64 from the float32 sums, so
    the loop's evaluation and the ``validation`` probe give the same numbers to the bit."""
    s, n = idx.shape
    loss_sum = torch.zeros(s, device=x.device)
    correct = torch.zeros(s, device=x.device, dtype=torch.long)
    with eval_mode(trainee), torch.inference_mode():
        for start in range(0, n, batch_size):
            part = idx[:, start:start + batch_size]
            yb = y[part]
            logits = forward_logits(trainee, x[part], resolved)
            loss_sum += per_seed_cross_entropy(logits, yb, "sum")
            correct += (logits.argmax(-1) == yb).sum(1)
    n = max(n, 1)
    return loss_sum.double() / n, correct.double() / n


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096,
             resolved: ResolvedEngine = ResolvedEngine()) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of one model on (x, y)."""
    idx = torch.arange(len(x), device=x.device).unsqueeze(0)
    losses, accs = evaluate_rows(SingleModel(model, resolved), x, y, idx, batch_size, resolved)
    return losses.item(), accs.item()
