"""Every loss term's value against its written formula, per seed of a stack; EWC's Fisher on the parent's
data; what the run minimises (the cross-entropy plus every term) and what it reports (the cross-entropy
alone). Fast (no real training): `make mutate` runs these."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from warmstart.core.errors import SpecError
from warmstart.components.inits import InitContext
from warmstart.core.spec import OptimizerSpec, StopSpec
from warmstart.components.terms import TERMS, BoundTerm, TermBatch, diagonal_fisher, per_seed_sum, squared_distance
from warmstart.core.records import EPOCH_FIELDS
from warmstart.engine.loop import run_hooks, train
from warmstart.engine.objective import batch_objective
from warmstart.engine.precision import ResolvedEngine
from warmstart.engine.trainees import SingleModel

S, B, D, C = 2, 5, 4, 3  # seeds, batch, features, classes


def linear_batch(seed: int = 0):
    """Two seeds of a linear model, logits[s] = x[s] @ W[s].T, and their TermBatch."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(S, C, D, generator=g, requires_grad=True)
    b = torch.randn(S, C, generator=g, requires_grad=True)
    x = torch.randn(S, B, D, generator=g)
    y = torch.randint(0, C, (S, B), generator=g)

    def forward(inputs):
        return torch.bmm(inputs, W.transpose(1, 2)) + b.unsqueeze(1)
    logits = forward(x)
    ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(S, -1).mean(1)
    anchors = {"start": {"w": torch.randn(S, C, D, generator=g), "b": torch.randn(S, C, generator=g)},
               "origin": {"w": torch.randn(S, C, D, generator=g), "b": torch.randn(S, C, generator=g)}}
    return TermBatch(logits=logits, targets=y, inputs=x, cross_entropy=ce, params={"w": W, "b": b},
                     anchors=anchors, state={}, forward=forward)


def per_seed(fn):
    """A formula written for one seed, evaluated for each seed: [S]."""
    return torch.stack([fn(s) for s in range(S)])


def test_sums_run_over_everything_but_the_seed_dimension():
    a, b = torch.arange(24.0).view(2, 3, 4), torch.ones(2, 5)
    torch.testing.assert_close(per_seed_sum([a, b]), torch.stack([a[0].sum() + 5, a[1].sum() + 5]))
    params = {"w": a, "b": b, "extra": torch.full((2, 3), 100.0)}
    anchor = {"w": torch.ones(2, 3, 4), "b": torch.zeros(2, 5)}
    expected = torch.stack([((a[s] - 1) ** 2).sum() + (b[s] ** 2).sum() for s in range(2)])
    torch.testing.assert_close(squared_distance(params, anchor), expected)  # only what the anchor holds


@pytest.mark.parametrize("anchor", ["start", "origin"])
def test_l2_init_is_the_coefficient_times_the_squared_distance_to_its_anchor(anchor):
    batch = linear_batch()
    theta0 = batch.anchors[anchor]
    expected = per_seed(lambda s: 0.3 * sum(((batch.params[k][s] - theta0[k][s]) ** 2).sum() for k in theta0))
    torch.testing.assert_close(TERMS["l2_init"].penalty(batch, coef=0.3, anchor=anchor), expected)


def test_l2_init_anchors_at_the_first_initialisation_by_default_as_kumar_et_al():
    batch = linear_batch()
    torch.testing.assert_close(TERMS["l2_init"].penalty(batch, coef=0.3),
                               TERMS["l2_init"].penalty(batch, coef=0.3, anchor="origin"))
    assert not torch.allclose(TERMS["l2_init"].penalty(batch, coef=0.3),
                              TERMS["l2_init"].penalty(batch, coef=0.3, anchor="start"))


@pytest.mark.parametrize("options,factor,with_bias", [
    ({}, 2.0, True),  # Kumar et al.: coef ||theta - theta_0||^2, every parameter: gradient 2 coef (theta - theta_0)
    ({"halve": True}, 1.0, True),  # FIRE's comparison: coef / 2 ||theta - theta_0||^2: coef (theta - theta_0)
    ({"biases": False}, 2.0, False),  # the DASH code's: biases left out (their gradient 0)
], ids=["kumar", "halve", "no_biases"])
def test_l2_init_gradient_under_each_form(options, factor, with_bias):
    g = torch.Generator().manual_seed(11)
    shapes = {"0.weight": (S, 3, 4), "0.bias": (S, 3), "1.weight": (S, 4), "2.weight": (S, 2, 3)}
    theta = {n: torch.randn(s, generator=g, requires_grad=True) for n, s in shapes.items()}
    origin = {n: torch.randn(s, generator=g) for n, s in shapes.items()}
    batch = linear_batch()
    batch.params, batch.anchors = theta, {"origin": origin, "start": {n: o + 1 for n, o in origin.items()}}
    coef = 0.3
    value = TERMS["l2_init"].penalty(batch, coef=coef, **options)
    kept = [n for n in shapes if with_bias or n != "0.bias"]
    expected = per_seed(lambda s: factor / 2 * coef * sum(((theta[n][s] - origin[n][s]) ** 2).sum() for n in kept))
    torch.testing.assert_close(value, expected)
    grads = dict(zip(theta, torch.autograd.grad(value.sum(), list(theta.values()), allow_unused=True)))
    for n in shapes:
        want = factor * coef * (theta[n] - origin[n]) if n in kept else torch.zeros(shapes[n])
        got = grads[n] if grads[n] is not None else torch.zeros(shapes[n])
        torch.testing.assert_close(got, want, msg=n)


def test_l2_is_the_coefficient_times_the_squared_norm_of_every_parameter():
    batch = linear_batch()
    expected = per_seed(lambda s: 0.2 * ((batch.params["w"][s] ** 2).sum() + (batch.params["b"][s] ** 2).sum()))
    torch.testing.assert_close(TERMS["l2"].penalty(batch, coef=0.2), expected)


def test_the_confidence_penalty_is_minus_the_coefficient_times_each_seeds_mean_entropy():
    batch = linear_batch()
    p = torch.softmax(batch.logits.detach(), -1)
    entropy = per_seed(lambda s: -(p[s] * p[s].log()).sum(-1).mean())
    torch.testing.assert_close(TERMS["confidence"].penalty(batch, coef=0.2), -0.2 * entropy)


def test_the_adversarial_term_is_the_cross_entropy_on_fgsm_inputs_with_epsilon_0_03_by_default():
    batch = linear_batch()
    W, b, x, y = batch.params["w"].detach(), batch.params["b"].detach(), batch.inputs, batch.targets

    def expected(eps, coef):
        out = []
        for s in range(S):
            xs = x[s].clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(xs @ W[s].T + b[s], y[s]), xs)
            x_adv = x[s] + eps * grad.sign()
            out.append(coef * F.cross_entropy(x_adv @ W[s].T + b[s], y[s]))
        return torch.stack(out)
    torch.testing.assert_close(TERMS["adversarial"].penalty(batch, coef=0.5, epsilon=0.1), expected(0.1, 0.5))
    torch.testing.assert_close(TERMS["adversarial"].penalty(batch, coef=0.5), expected(0.03, 0.5))


def test_fgsm_leaves_an_input_the_loss_does_not_depend_on_where_it_is():
    """sign(0) = 0: a feature with zero weight in every class gets no perturbation."""
    batch = linear_batch()
    with torch.no_grad():
        batch.params["w"][:, :, 0] = 0.0
    seen = []
    forward = batch.forward
    batch.forward = lambda x: seen.append(x.detach()) or forward(x)
    TERMS["adversarial"].penalty(batch, coef=1.0, epsilon=0.1)
    x_adv = seen[-1]
    torch.testing.assert_close(x_adv[..., 0], batch.inputs[..., 0])
    assert ((x_adv[..., 1:] - batch.inputs[..., 1:]).abs() - 0.1).abs().max() < 1e-6


def test_ewc_is_half_the_coefficient_times_the_fisher_weighted_squared_distance_to_the_start():
    batch = linear_batch()
    g = torch.Generator().manual_seed(3)
    fisher = {"w": torch.rand(S, C, D, generator=g), "b": torch.rand(S, C, generator=g)}
    term = BoundTerm(TERMS["ewc"], {"coef": 0.4}, fisher)
    start = batch.anchors["start"]
    expected = per_seed(lambda s: 0.4 / 2 * sum((fisher[k][s] * (batch.params[k][s] - start[k][s]) ** 2).sum()
                                                 for k in fisher))
    torch.testing.assert_close(term(batch), expected)  # the bound term hands the penalty its own state


def test_parseval_sums_each_layers_gram_distance_from_the_scaled_identity_and_a_norm_layers_gains():
    """coef * (||W W^T - s I||^2 for a linear weight, for a conv kernel as its (out, -1) matrix, and
    ||w^2 - s||^2 for a norm layer's 1-D weight); biases and a position embedding left out; per seed."""
    g = torch.Generator().manual_seed(5)
    params = {"0.weight": torch.randn(S, 3, 2, 3, 3, generator=g), "0.bias": torch.randn(S, 3, generator=g),
              "1.weight": torch.randn(S, 3, generator=g), "1.bias": torch.randn(S, 3, generator=g),
              "4.weight": torch.randn(S, C, 5, generator=g), "pos_embed": torch.randn(S, 1, 4, 5, generator=g)}
    batch = linear_batch()
    batch.params = params

    def formula(s, scale):
        conv = params["0.weight"][s].reshape(3, 18)
        head = params["4.weight"][s]
        return (((conv @ conv.T - scale * torch.eye(3)) ** 2).sum() + ((head @ head.T - scale * torch.eye(C)) ** 2).sum()
                + ((params["1.weight"][s] ** 2 - scale) ** 2).sum())
    torch.testing.assert_close(TERMS["parseval"].penalty(batch, coef=0.3, scale=2.0), per_seed(lambda s: 0.3 * formula(s, 2.0)))
    torch.testing.assert_close(TERMS["parseval"].penalty(batch, coef=0.3), per_seed(lambda s: 0.3 * formula(s, 1.0)))
    # an orthonormal layer costs nothing
    q = torch.linalg.qr(torch.randn(S, 5, 3, generator=g)).Q.transpose(1, 2)  # [S, 3, 5], orthonormal rows
    batch.params = {"0.weight": q, "0.bias": torch.randn(S, 3, generator=g)}
    torch.testing.assert_close(TERMS["parseval"].penalty(batch, coef=1.0), torch.zeros(S), atol=1e-5, rtol=0)


def test_parseval_on_the_vit_counts_query_key_and_value_as_three_matrices_at_the_vits_coefficient():
    """FIRE's comparison's ViT setting (coef 1e-5): its ViT has separate query, key and value layers, so
    our fused qkv weight (3 dim, dim) enters as three (dim, dim) Grams; ``qkv: fused`` as one 3 dim x 3 dim
    Gram. Every other weight, the head's included, as its own matrix; LayerNorm gains as ||w^2 - 1||^2;
    the position embedding and class token left out. The names are the ViT's own."""
    from warmstart.components.models import build_model
    from warmstart.core.spec import ModelSpec

    torch.manual_seed(0)
    vit = build_model(ModelSpec("vit", {"dim": 8, "depth": 1, "heads": 2}), (3, 8, 8), 5)
    g = torch.Generator().manual_seed(3)
    params = {n: torch.randn(S, *p.shape, generator=g) for n, p in vit.named_parameters()}
    batch = linear_batch()
    batch.params = params
    coef, d = 1.0e-5, 8
    assert params["blocks.0.attn.qkv.weight"].shape == (S, 3 * d, d)

    def gram_distance(w):
        return ((w @ w.T - torch.eye(len(w))) ** 2).sum()

    def formula(s, split):
        total = 0.0
        for n, p in params.items():
            if not n.endswith("weight"):
                continue
            w = p[s]
            if w.dim() == 1:
                total = total + ((w ** 2 - 1) ** 2).sum()
            elif n.endswith("qkv.weight") and split:
                total = total + sum(gram_distance(w[i * d:(i + 1) * d]) for i in range(3))
            else:
                total = total + gram_distance(w.reshape(len(w), -1))
        return coef * total
    torch.testing.assert_close(TERMS["parseval"].penalty(batch, coef=coef), per_seed(lambda s: formula(s, True)))
    torch.testing.assert_close(TERMS["parseval"].penalty(batch, coef=coef, qkv="fused"),
                               per_seed(lambda s: formula(s, False)))
    # three orthogonal projections cost nothing split, and at least 2 dim fused (a rank-dim 3 dim x 3 dim Gram)
    q = torch.linalg.qr(torch.randn(S * 3, d, d, generator=g)).Q.reshape(S, 3 * d, d)
    batch.params = {"blocks.0.attn.qkv.weight": q}
    torch.testing.assert_close(TERMS["parseval"].penalty(batch, coef=1.0), torch.zeros(S), atol=1e-4, rtol=0)
    assert (TERMS["parseval"].penalty(batch, coef=1.0, qkv="fused") >= 2 * d - 1e-3).all()


# -- EWC's Fisher --------------------------------------------------------------------------------------------

def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.5), nn.Tanh(), nn.Linear(6, 3))


def fisher_by_hand(model: nn.Module, x, y) -> dict[str, torch.Tensor]:
    """The mean over samples of the squared gradient of each sample's log-likelihood, in eval mode."""
    model.eval()
    total = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(len(x)):
        grads = torch.autograd.grad(F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]), list(model.parameters()))
        for (n, _), g in zip(model.named_parameters(), grads):
            total[n] += g ** 2
    return {n: t / len(x) for n, t in total.items()}


def test_the_diagonal_fisher_is_the_mean_squared_per_sample_gradient_in_eval_mode():
    model = net()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(11, 4, generator=g), torch.randint(0, 3, (11,), generator=g)
    model.train()
    fisher = diagonal_fisher(model, x, y, chunk=4)  # chunks of 4, 4 and 3 samples
    assert model.training  # its mode is restored
    expected = fisher_by_hand(net(), x, y)
    assert fisher.keys() == expected.keys()
    for n in expected:
        torch.testing.assert_close(fisher[n], expected[n])
    capped = diagonal_fisher(model, x, y, samples=5)  # the first 5 samples only
    for n, value in fisher_by_hand(net(), x[:5], y[:5]).items():
        torch.testing.assert_close(capped[n], value)
    one = diagonal_fisher(model, x[:1], y[:1])  # one sample: its squared gradient
    for n, value in fisher_by_hand(net(), x[:1], y[:1]).items():
        torch.testing.assert_close(one[n], value)


def test_ewc_estimates_its_fisher_on_the_parents_data_not_the_runs():
    g = torch.Generator().manual_seed(1)
    x_parent, y_parent = torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)
    x_train, y_train = torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
    model = net()
    ctx = InitContext(fresh=model, seed=0, x_train=x_train, y_train=y_train, x_parent=x_parent, y_parent=y_parent)
    setup = TERMS["ewc"].setup
    for samples, n in ((None, 8), (3, 3)):
        options = {"coef": 1.0} if samples is None else {"coef": 1.0, "samples": samples}
        state = setup(ctx, model, **options)
        for name, value in fisher_by_hand(net(), x_parent[:n], y_parent[:n]).items():
            torch.testing.assert_close(state[name], value)
    no_parent = InitContext(fresh=model, seed=0, x_train=x_train, y_train=y_train)
    with pytest.raises(SpecError, match=r"^terms\.ewc: needs a parent run's training data \(a warm start\) to "
                                        r"estimate the Fisher$"):
        setup(no_parent, model, coef=1.0)


# -- what the run minimises, and what it reports ----------------------------------------------------------

def test_the_objective_is_the_cross_entropy_plus_every_term_and_the_cross_entropy_is_returned_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    g = torch.Generator().manual_seed(2)
    xb, yb = torch.randn(1, 6, 4, generator=g), torch.randint(0, 3, (1, 6), generator=g)
    start = {n: torch.zeros(1, *p.shape) for n, p in model.named_parameters()}
    seen = []

    def spy(batch, coef):
        seen.append(batch)
        return torch.full((1,), coef)
    from warmstart.components.terms import Term
    terms = [BoundTerm(TERMS["l2"], {"coef": 0.1}), BoundTerm(TERMS["l2_init"], {"coef": 0.7}),
             BoundTerm(Term("spy", spy, None, True), {"coef": 5.0}, {"kept": torch.ones(1)})]
    anchors = {"start": start, "origin": start}
    trainee = SingleModel(model)
    objective, ce, logits = batch_objective(trainee, xb, yb, run_hooks(terms=terms, anchors=anchors), ResolvedEngine())
    torch.testing.assert_close(logits, model(xb[0]).unsqueeze(0))
    torch.testing.assert_close(ce, F.cross_entropy(model(xb[0]), yb[0]).unsqueeze(0))
    squares = sum((p ** 2).sum() for p in model.parameters())
    torch.testing.assert_close(objective, ce + 0.1 * squares + 0.7 * squares + 5.0)  # every term counts
    (batch,) = seen  # what a term sees: this batch, its logits, the weights, the anchors, its own state
    assert batch.logits is logits and batch.targets is yb and batch.inputs is xb and batch.anchors is anchors
    torch.testing.assert_close(batch.cross_entropy, ce)
    assert batch.state == {"kept": torch.ones(1)}
    torch.testing.assert_close(batch.forward(xb), logits)
    plain, plain_ce, _ = batch_objective(trainee, xb, yb, run_hooks(), ResolvedEngine())
    torch.testing.assert_close(plain, plain_ce)
    torch.testing.assert_close(plain_ce, ce)


def test_under_bf16_autocast_the_objective_and_the_terms_forward_run_in_bf16_and_return_float32():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3))
    xb, yb = torch.randn(1, 32, 16), torch.randint(0, 3, (1, 32))
    seen = []

    def spy(batch):
        seen.append(batch.forward(xb))
        return torch.zeros(1)
    from warmstart.components.terms import Term
    hooks = run_hooks(terms=[BoundTerm(Term("spy", spy, None, True), {})])
    _, _, logits = batch_objective(SingleModel(model), xb, yb, hooks, ResolvedEngine(autocast=torch.bfloat16))
    exact = model(xb[0]).unsqueeze(0)
    for out in (logits, seen[0]):
        assert out.dtype == torch.float32
        assert not torch.equal(out, exact)  # bf16 rounding: it did run in bf16
        torch.testing.assert_close(out, exact, rtol=0.05, atol=0.05)


def test_the_reported_training_loss_is_the_cross_entropy_without_the_terms():
    """One batch per epoch: epoch 1's train_loss and train_acc describe the starting model on the training
    set, computed before its first step. A large term (L2 toward a far anchor) does not enter it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(30, 4, generator=g), torch.randint(0, 3, (30,), generator=g)
    with torch.no_grad():
        logits = model(x)
        expected_loss = F.cross_entropy(logits, y).item()
        expected_acc = (logits.argmax(1) == y).float().mean().item()
    far = {n: torch.full((1, *p.shape), 10.0) for n, p in model.named_parameters()}
    hooks = run_hooks(terms=[BoundTerm(TERMS["l2_init"], {"coef": 1.0})], anchors={"start": far, "origin": far})
    result = train(model, OptimizerSpec("sgd", lr=0.1), x, y, x[:5], y[:5], batch_size=30,
                   stop=StopSpec("epochs", max_epochs=2), seed=0, log=None, hooks=hooks)
    first = result.history[0]
    assert first["train_loss"] == pytest.approx(expected_loss, rel=1e-6)
    assert first["train_acc"] == pytest.approx(expected_acc)
    assert [r["samples_seen"] for r in result.history] == [30, 60] and [r["epoch"] for r in result.history] == [1, 2]
    assert all(set(r) == set(EPOCH_FIELDS) for r in result.history)
    assert result.train_time_s == pytest.approx(sum(r["epoch_time_s"] for r in result.history))
    # the last record's validation numbers are the final model's
    with torch.no_grad():
        val_logits = model(x[:5])
    assert result.final["val_loss"] == pytest.approx(F.cross_entropy(val_logits, y[:5]).item(), rel=1e-6)
    assert result.final["val_acc"] == pytest.approx((val_logits.argmax(1) == y[:5]).float().mean().item())
