"""The probes against their definitions, per seed of a stack: grad_norm is the L2 norm of the mean
gradient over each subset (Figure 6); init_distance the L2 distance to the starting weights and the
Pearson correlation with them (Figure 5). Fast (no training): `make mutate` runs these."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from warmstart.components.probes import PROBES, BoundProbe, ProbeContext

S, D, C, N = 2, 4, 3, 30


class Stack:
    """Two seeds of a linear model as [S, ...] leaves: the trainee interface the probes use."""

    def __init__(self, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.params = {"w": torch.randn(S, C, D, generator=g, requires_grad=True),
                       "b": torch.randn(S, C, generator=g, requires_grad=True)}

    def forward(self, x):
        return torch.bmm(x, self.params["w"].transpose(1, 2)) + self.params["b"].unsqueeze(1)

    def named_params(self):
        return self.params

    def grads(self, loss):
        return dict(zip(self.params, torch.autograd.grad(loss, list(self.params.values()))))

    def objective(self, x, y):  # summed cross-entropy per seed
        logits = self.forward(x)
        return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(S, -1).sum(1)


def data(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, D, generator=g), torch.randint(0, C, (N,), generator=g)


def context(stack: Stack, subsets, anchors=None, eval_batch_size: int = 4096) -> ProbeContext:
    x, y = data()
    return ProbeContext(model=stack, x=x, y=y, subsets=subsets, anchors=anchors or {}, objective=stack.objective,
                        eval_batch_size=eval_batch_size)


def mean_gradient_norm(stack: Stack, s: int, idx) -> float:
    """Seed s's norm of the gradient of its mean cross-entropy over the samples idx, by hand."""
    x, y = data()
    w, b = stack.params["w"][s].detach().requires_grad_(True), stack.params["b"][s].detach().requires_grad_(True)
    loss = F.cross_entropy(x[idx] @ w.T + b, y[idx])
    gw, gb = torch.autograd.grad(loss, [w, b])
    return math.sqrt((gw ** 2).sum().item() + (gb ** 2).sum().item())


def subsets():
    """Each seed its own training set (a different order and size of old and new parts)."""
    perm = [torch.randperm(N, generator=torch.Generator().manual_seed(s)) for s in range(S)]
    return {"train": torch.stack([p[:24] for p in perm]), "old": torch.stack([p[:10] for p in perm]),
            "new": torch.stack([p[10:24] for p in perm])}


def test_grad_norm_is_each_seeds_norm_of_the_mean_gradient_over_each_subset():
    stack, subs = Stack(), subsets()
    out = PROBES["grad_norm"].measure(context(stack, subs, eval_batch_size=4))  # several batches per subset
    assert set(out) == {"grad_norm_train", "grad_norm_old", "grad_norm_new"}  # all three by default
    for name, idx in subs.items():
        assert out[f"grad_norm_{name}"].shape == (S,)
        for s in range(S):
            assert out[f"grad_norm_{name}"][s].item() == pytest.approx(mean_gradient_norm(stack, s, idx[s]), rel=1e-5)


def test_grad_norm_caps_each_subset_at_its_first_samples_and_gives_nan_for_a_subset_the_run_lacks():
    stack, subs = Stack(), subsets()
    no_old = {"train": subs["train"], "new": subs["new"][:, :0]}  # no parent: no old part, an empty new one
    probe = BoundProbe(PROBES["grad_norm"], {"subsets": ["old", "new", "train"], "max_samples": 7})
    out = probe(context(stack, no_old))
    assert torch.isnan(out["grad_norm_old"]).all() and torch.isnan(out["grad_norm_new"]).all()
    assert out["grad_norm_old"].shape == (S,)
    for s in range(S):
        assert out["grad_norm_train"][s].item() == pytest.approx(
            mean_gradient_norm(stack, s, subs["train"][s, :7]), rel=1e-5)


def test_init_distance_is_the_l2_distance_to_the_start_and_the_pearson_correlation_with_it():
    stack = Stack(0)
    start = {n: p.detach() + torch.randn(p.shape, generator=torch.Generator().manual_seed(9)) * (1 + k)
             for k, (n, p) in enumerate(stack.params.items())}
    out = BoundProbe(PROBES["init_distance"], {})(context(stack, subsets(), {"start": start, "origin": {}}))
    assert set(out) == {"dist_to_start", "corr_with_start"}
    for s in range(S):
        now = np.concatenate([stack.params[n][s].detach().flatten().numpy() for n in start])
        then = np.concatenate([start[n][s].flatten().numpy() for n in start])
        assert out["dist_to_start"][s].item() == pytest.approx(np.linalg.norm(now - then), rel=1e-5)
        assert out["corr_with_start"][s].item() == pytest.approx(np.corrcoef(now, then)[0, 1], rel=1e-5)


def test_init_distance_of_unmoved_weights_is_zero_and_their_correlation_one():
    stack = Stack(0)
    start = {n: p.detach().clone() for n, p in stack.params.items()}
    out = PROBES["init_distance"].measure(context(stack, subsets(), {"start": start}))
    torch.testing.assert_close(out["dist_to_start"], torch.zeros(S))
    torch.testing.assert_close(out["corr_with_start"], torch.ones(S))
    # a shift and a scale leave the correlation at one (it is Pearson's, not the cosine)
    shifted = {n: 3 * p + 5 for n, p in start.items()}
    out = PROBES["init_distance"].measure(context(stack, subsets(), {"start": shifted}))
    torch.testing.assert_close(out["corr_with_start"], torch.ones(S))
