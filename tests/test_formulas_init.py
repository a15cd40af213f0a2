"""Every init strategy against its written definition, on tiny models: what it keeps of the parent, what
it draws anew, what it resets, and its documented defaults. Fast (no training): `make mutate` runs these."""
from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from warmstart.core.errors import SpecError
from warmstart.components.inits import InitContext, initialise, transferred_tensors
from warmstart.components.remedy_inits import dash_scales
from warmstart.core.seeds import derived_seed


def mlp(seed: int, classes: int = 3) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, classes))


def convnet(seed: int, channels: int = 2, classes: int = 3) -> nn.Sequential:
    """A convolution, BatchNorm (buffers and affine parameters) and a linear head."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(channels, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(3 * 4 * 4, classes))


def trained(model: nn.Module) -> dict[str, torch.Tensor]:
    """A state unlike any fresh init: shifted weights and BatchNorm statistics of a forward pass."""
    model.train()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3)
        if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
            model(torch.randn(8, 2, 4, 4) * 3 + 1)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class Draws:
    """ctx.new_model: another initialisation per tag, remembered so a test can read it."""

    def __init__(self, build):
        self.build, self.models = build, {}

    def __call__(self, tag: str) -> nn.Module:
        self.models[tag] = self.build(1000 + len(self.models))
        return self.models[tag]


def ctx_for(build, parent_seed: int = 1, seed: int = 0, **kw):
    parent = trained(build(parent_seed))
    draws = Draws(build)
    ctx = InitContext(fresh=build(0), seed=seed, parent_state=parent, new_model=draws, **kw)
    return ctx, parent, draws


def params_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def buffers_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: b.detach().clone() for n, b in model.named_buffers()}


def assert_state(model: nn.Module, expected: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert state.keys() == expected.keys()
    for k in state:
        torch.testing.assert_close(state[k], expected[k], msg=k)


# -- random and warm ---------------------------------------------------------------------------------------

def test_a_random_start_is_the_runs_own_fresh_model_whatever_the_parent():
    ctx, _, draws = ctx_for(convnet)
    own = {k: v.clone() for k, v in ctx.fresh.state_dict().items()}
    model = initialise("random", {}, ctx)
    assert model is ctx.fresh and not draws.models
    assert_state(model, own)


def test_a_random_start_with_a_new_draw_is_another_initialisation_under_its_own_tag():
    ctx, _, draws = ctx_for(convnet)
    model = initialise("random", {"draw": "new"}, ctx)
    assert list(draws.models) == ["random"] and model is draws.models["random"]


def test_a_warm_start_is_the_parents_weights_and_buffers_with_a_new_optimiser_by_default():
    ctx, parent, draws = ctx_for(convnet, parent_optimizer_state={"state": {0: "adam moments"}})
    model = initialise("warm", {}, ctx)
    assert model is ctx.fresh and not draws.models
    assert_state(model, parent)  # BatchNorm's running statistics included
    assert ctx.optimizer_state is None  # reset: the paper's default


def test_a_warm_start_that_keeps_the_optimiser_hands_the_run_the_parents_state():
    kept = {"state": {0: {"step": torch.tensor(7.0)}}, "param_groups": []}
    ctx, parent, _ = ctx_for(convnet, parent_optimizer_state=kept)
    initialise("warm", {"optimizer_state": "keep"}, ctx)
    assert ctx.optimizer_state is kept
    ctx, _, _ = ctx_for(convnet)
    with pytest.raises(SpecError, match=r"^init\.options\.optimizer_state: 'keep' needs the parent's optimiser state "
                                        r"\(the planner asks the parent run to keep it\)$"):
        initialise("warm", {"optimizer_state": "keep"}, ctx)


@pytest.mark.parametrize("strategy", ["warm", "noisy_warm", "last_layer", "last_layer_then_all", "interpolate_init",
                                      "head_reset", "shrink_perturb_weights", "dash", "fire"])
def test_a_strategy_that_starts_from_the_parent_refuses_a_parent_of_another_architecture(strategy):
    """Strict loading: a parent state with a missing tensor is an error, not a partial warm start."""
    ctx, parent, _ = ctx_for(mlp, x_train=torch.randn(4, 6), y_train=torch.zeros(4, dtype=torch.long),
                             origin=params_of(mlp(5)), train=lambda model: None)
    del parent["1.bias"]
    options = {"std": 0.1} if strategy == "noisy_warm" else {}
    with pytest.raises(RuntimeError, match="Missing key"):
        initialise(strategy, options, ctx)


# -- transfer ------------------------------------------------------------------------------------------------

def test_a_transfer_start_copies_every_tensor_that_fits_and_keeps_the_fresh_head():
    """Source task with 5 classes, target with 3: the body is the parent's, the head the run's own draw."""
    parent = trained(convnet(1, classes=5))
    ctx = InitContext(fresh=convnet(0, classes=3), seed=0, parent_state=parent)
    own = {k: v.clone() for k, v in ctx.fresh.state_dict().items()}
    assert transferred_tensors(ctx.fresh, parent) == [k for k in parent if not k.startswith("4.")]
    model = initialise("transfer", {}, ctx)
    assert model is ctx.fresh
    assert_state(model, {k: own[k] if k.startswith("4.") else parent[k] for k in own})


def test_a_transfer_start_from_another_input_keeps_the_fresh_stem():
    parent = trained(convnet(1, channels=2))
    ctx = InitContext(fresh=convnet(0, channels=1), seed=0, parent_state=parent)
    own = {k: v.clone() for k, v in ctx.fresh.state_dict().items()}
    model = initialise("transfer", {}, ctx)
    assert_state(model, {k: own[k] if k == "0.weight" else parent[k] for k in own})


def test_a_transfer_start_with_nothing_in_common_is_an_error():
    ctx = InitContext(fresh=mlp(0), seed=0, parent_state={"other.weight": torch.zeros(2, 2)})
    with pytest.raises(SpecError, match=r"^init\.strategy: 'transfer' found no tensor of the parent"):
        initialise("transfer", {}, ctx)


# -- shrink-perturb, noise, interpolation, head reset ---------------------------------------------------

def test_shrink_perturb_keeps_0_4_of_the_old_weights_and_adds_0_1_of_a_new_draw_by_default():
    ctx, parent, draws = ctx_for(convnet)
    model = initialise("shrink_perturb", {}, ctx)
    new = draws.models["shrink_perturb"].state_dict()
    params = set(params_of(model))
    assert_state(model, {k: 0.4 * parent[k] + 0.1 * new[k] if k in params else new[k] for k in parent})


def test_noise_on_a_warm_start_is_a_seeded_gaussian_draw_of_std_s_on_every_parameter():
    """Each parameter of the parent plus std times a standard normal draw from the run's own generator, in
    parameter order; buffers (BatchNorm statistics) stay the parent's."""
    for seed in (0, 3):
        ctx, parent, _ = ctx_for(convnet, seed=seed)
        model = initialise("noisy_warm", {"std": 0.05}, ctx)
        g = torch.Generator().manual_seed(derived_seed(seed, "noisy_warm"))
        expected = dict(parent)
        for name, p in model.named_parameters():
            expected[name] = parent[name] + 0.05 * torch.randn(p.shape, generator=g)
        assert_state(model, expected)


def test_interpolation_keeps_0_2_of_the_parent_and_takes_0_8_of_the_first_init_by_default():
    origin = params_of(convnet(7))
    ctx, parent, _ = ctx_for(convnet, origin=origin)
    model = initialise("interpolate_init", {}, ctx)
    assert_state(model, {k: 0.2 * parent[k] + 0.8 * origin[k] if k in origin else parent[k] for k in parent})


def test_head_reset_draws_a_new_last_layer_under_its_own_tag_and_keeps_the_rest():
    ctx, parent, draws = ctx_for(convnet)
    model = initialise("head_reset", {}, ctx)
    assert list(draws.models) == ["head_reset"]
    new = draws.models["head_reset"].state_dict()
    assert_state(model, {k: new[k] if k.startswith("4.") else parent[k] for k in parent})


def test_the_dash_papers_shrink_perturb_scales_conv_and_linear_weights_by_0_3_plus_noise_of_std_0_01():
    """``shrink * w + N(0, sigma^2)`` on each conv and linear weight (module order, a seeded generator);
    biases, BatchNorm and buffers stay the parent's."""
    for seed in (0, 2):
        ctx, parent, _ = ctx_for(convnet, seed=seed)
        model = initialise("shrink_perturb_weights", {}, ctx)
        g = torch.Generator().manual_seed(derived_seed(seed, "shrink_perturb_weights"))
        expected = dict(parent)
        for name in ("0.weight", "4.weight"):  # the convolution, then the linear head
            expected[name] = 0.3 * parent[name] + 0.01 * torch.randn(parent[name].shape, generator=g)
        assert_state(model, expected)


# -- training only the last layer --------------------------------------------------------------------------

def test_the_last_layer_strategy_freezes_everything_but_the_head():
    ctx, parent, _ = ctx_for(convnet)
    model = initialise("last_layer", {}, ctx)
    assert_state(model, parent)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"4.weight", "4.bias"}


def test_ll_then_ws_first_trains_the_head_alone_then_unfreezes_every_layer():
    seen = []

    def train(model):
        seen.append({n for n, p in model.named_parameters() if p.requires_grad})
        assert_state(model, parent)  # the head is trained from the parent's weights
        with torch.no_grad():
            model[4].weight.add_(1.0)
    ctx, parent, _ = ctx_for(convnet, train=train)
    model = initialise("last_layer_then_all", {}, ctx)
    assert seen == [{"4.weight", "4.bias"}]
    assert all(p.requires_grad for p in model.parameters())
    expected = dict(parent)
    expected["4.weight"] = parent["4.weight"] + 1.0  # what the head's training left
    assert_state(model, expected)


# -- DASH ------------------------------------------------------------------------------------------------------

def dash_reference(parent, build, x, y, alpha, batch_size, shrink_min, per):
    """DASH by hand: an EMA of the negative gradient over the batches in order (from zero), in eval mode,
    then each conv/linear weight and bias slice scaled by its clipped cosine with it."""
    model = build(0)
    model.load_state_dict(parent)
    model.eval()
    ema = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for start in range(0, len(x), batch_size):
        loss = nn.functional.cross_entropy(model(x[start:start + batch_size]), y[start:start + batch_size])
        for (n, p), g in zip(model.named_parameters(), torch.autograd.grad(loss, list(model.parameters()))):
            ema[n] = (1 - alpha) * ema[n] - alpha * g
    expected = dict(parent)
    for layer in ("0", "4"):  # the convolution and the linear head; not BatchNorm ("1")
        for kind in ("weight", "bias"):
            name = f"{layer}.{kind}"
            scale = dash_scales(parent[name], ema[name], shrink_min, per)
            expected[name] = parent[name] * scale.reshape(scale.shape + (1,) * (parent[name].dim() - scale.dim()))
    return expected


def dash_data(n: int, seed: int = 0):
    """Inputs and, as labels, the parent's own predictions: growing the weights lowers the loss, so the
    averaged negative gradient leans toward the weights and DASH's factors spread over (shrink_min, 1)."""
    ctx, parent, _ = ctx_for(convnet)
    x = torch.randn(n, 2, 4, 4, generator=torch.Generator().manual_seed(seed))
    model = convnet(0)
    model.load_state_dict(parent)
    model.eval()
    with torch.no_grad():
        y = model(x).argmax(1)
    ctx.x_train, ctx.y_train = x, y
    return ctx, parent, x, y


@pytest.mark.parametrize("per", ["kernel", "filter"])
def test_dash_averages_the_negative_gradient_over_every_batch_and_shrinks_each_slice_by_its_cosine(per):
    ctx, parent, x, y = dash_data(40)
    ctx.fresh.train()
    model = initialise("dash", {"alpha": 0.5, "batch_size": 16, "per": per, "shrink_min": 0.1}, ctx)
    expected = dash_reference(parent, convnet, x, y, 0.5, 16, 0.1, per)  # 3 batches, the last of 8
    assert_state(model, expected)
    assert model.training  # the gradient pass ran in eval mode, and the mode is restored
    # the test tells the batches, the slicing and the clip apart
    single = dash_reference(parent, convnet, x, y, 0.5, 40, 0.1, per)
    assert not torch.allclose(expected["0.weight"], single["0.weight"])
    other = dash_reference(parent, convnet, x, y, 0.5, 16, 0.1, "kernel" if per == "filter" else "filter")
    assert not torch.allclose(expected["0.weight"], other["0.weight"])
    factors = expected["4.weight"] / parent["4.weight"]
    assert ((factors > 0.1 + 1e-4) & (factors < 1 - 1e-4)).any()


def test_dash_defaults_are_the_papers_and_its_gradient_pass_counts_as_init_cost():
    """shrink_min 0.3, alpha 0.3, per-kernel slices, batches of 1024 (here 1030 samples: two batches)."""
    ctx, parent, x, y = dash_data(1030, seed=1)
    ctx.cost.time_s, ctx.cost.samples = 5.0, 7
    ctx.fresh.eval()
    started = time.perf_counter()
    model = initialise("dash", {}, ctx)
    elapsed = time.perf_counter() - started
    assert_state(model, dash_reference(parent, convnet, x, y, 0.3, 1024, 0.3, "kernel"))
    assert not model.training
    assert ctx.cost.samples == 7 + 1030 and 5.0 < ctx.cost.time_s <= 5.0 + elapsed


def test_dash_on_a_model_that_is_one_layer():
    """A bare linear layer (its parameters have no module prefix): weight rows and bias shrunk alike."""
    torch.manual_seed(0)
    parent = {k: v + 0.5 for k, v in nn.Linear(4, 2).state_dict().items()}
    x = torch.randn(12, 4)
    ctx = InitContext(fresh=nn.Linear(4, 2), seed=0, parent_state=parent, x_train=x,
                      y_train=torch.zeros(12, dtype=torch.long))
    model = initialise("dash", {"shrink_min": 0.0, "alpha": 1.0}, ctx)
    reference = nn.Linear(4, 2)
    reference.load_state_dict(parent)
    loss = nn.functional.cross_entropy(reference(x), ctx.y_train)
    gw, gb = torch.autograd.grad(loss, [reference.weight, reference.bias])
    torch.testing.assert_close(model.weight.detach(), parent["weight"] * dash_scales(parent["weight"], -gw, 0.0,
                                                                                     "kernel").unsqueeze(1))
    torch.testing.assert_close(model.bias.detach(), parent["bias"] * dash_scales(parent["bias"], -gb, 0.0, "kernel"))


def test_dash_slices_a_linear_weight_by_output_row_and_a_convolution_by_kernel_or_filter():
    w, g = torch.randn(4, 5), torch.randn(4, 5)
    rows = torch.nn.functional.cosine_similarity(w, g, dim=1).clamp(0.2, 1.0)
    torch.testing.assert_close(dash_scales(w, g, 0.2, "kernel"), rows)
    torch.testing.assert_close(dash_scales(w, g, 0.2, "filter"), rows)
    conv, d = torch.randn(3, 2, 3, 3), torch.randn(3, 2, 3, 3)
    kernels = torch.nn.functional.cosine_similarity(conv.flatten(2), d.flatten(2), dim=2).clamp(-1.0, 1.0)
    filters = torch.nn.functional.cosine_similarity(conv.flatten(1), d.flatten(1), dim=1).clamp(-1.0, 1.0)
    torch.testing.assert_close(dash_scales(conv, d, -1.0, "kernel"), kernels)
    torch.testing.assert_close(dash_scales(conv, d, -1.0, "filter"), filters)
    # the clip: at most 1 (a weight aligned with the gradient is kept), at least shrink_min
    assert dash_scales(w, w, 0.2, "kernel").max().item() == pytest.approx(1.0)
    assert dash_scales(w, -w, 0.2, "kernel").min().item() == pytest.approx(0.2)
    # never above 1, even where rounding puts a parallel pair's cosine at 1.0000002: no weight grows
    rows = torch.randn(2000, 7, generator=torch.Generator().manual_seed(0))
    assert dash_scales(rows, 3 * rows, 0.2, "kernel").max().item() <= 1.0


def test_dash_takes_the_cosine_of_a_tiny_slice_too():
    """eps 1e-12: a slice of weights of size 1e-9 still gets its cosine, not a shrunk one."""
    w = torch.tensor([[1e-9, 0.0], [0.0, 1e-9]])
    g = torch.tensor([[1.0, 0.0], [0.0, -1.0]])
    torch.testing.assert_close(dash_scales(w, g, -1.0, "kernel"), torch.tensor([1.0, -1.0]))


# -- FIRE ------------------------------------------------------------------------------------------------------
# The authors' operator (isaac7778/FIRE vision/interventions/fire.py), written out here on its own: X = W / ||W||_F
# on the tall orientation, 10 times X <- 1.5 X - 0.5 X (X^T X); a kernel per kernel position; scaled by
# sqrt(out / in), / (kh * kw) for a kernel.

def cubic_newton_schulz(w: torch.Tensor, steps: int = 10) -> torch.Tensor:
    """The cubic iteration as a loop over matrix products, in float64, on the tall orientation."""
    x = w.double()
    wide = x.shape[1] > x.shape[0]
    if wide:
        x = x.T
    x = x / torch.sqrt((x * x).sum())
    for _ in range(steps):
        x = 1.5 * x - 0.5 * x @ (x.T @ x)
    return x.T if wide else x


def test_fire_orthogonalises_a_kernel_per_position_and_scales_it_by_the_authors_factor():
    """The 3 x 2 x 3 x 3 kernel: each of its 9 (3, 2) slices by the cubic iteration, times sqrt(3 / 2) / 9
    (not / 3, the reshaped matrix's sqrt(3 / 18)); the head (3, 48) as one matrix times sqrt(3 / 48).
    Biases, BatchNorm's affine parameters and statistics are the parent's."""
    ctx, parent, draws = ctx_for(convnet)
    model = initialise("fire", {}, ctx)
    assert not draws.models
    state = model.state_dict()
    kernel = parent["0.weight"].double()
    expected = torch.zeros_like(kernel)
    for i in range(3):
        for j in range(3):
            expected[:, :, i, j] = cubic_newton_schulz(kernel[:, :, i, j]) * (3 / 2) ** 0.5 / 9
    torch.testing.assert_close(state["0.weight"].double(), expected, rtol=1e-5, atol=1e-6)
    head = cubic_newton_schulz(parent["4.weight"]) * (3 / 48) ** 0.5
    torch.testing.assert_close(state["4.weight"].double(), head, rtol=1e-5, atol=1e-6)
    # per position nearly orthogonal columns (3 x 2: S^T S = scale^2 I), not as one (3, 18) matrix
    for i in range(3):
        m = state["0.weight"][:, :, i, 0].double() / ((3 / 2) ** 0.5 / 9)
        torch.testing.assert_close(m.T @ m, torch.eye(2, dtype=torch.float64), atol=2e-2, rtol=0)
    assert_state(model, {k: state[k] if k in ("0.weight", "4.weight") else parent[k] for k in parent})


def spectrum_matrix(singular_values: torch.Tensor, seed: int = 0) -> torch.Tensor:
    n = len(singular_values)
    g = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64)).Q
    return u @ torch.diag(singular_values) @ v.T


def test_fire_leaves_a_tiny_singular_value_small_as_the_cubic_iteration_does():
    """A 100 x 100 weight with singular values from 1 down to 1e-3: FIRE's singular values are the scalar
    cubic map 1.5 s - 0.5 s^3 applied 10 times to s / ||W||_F (||W||_F = the 2-norm of the spectrum);
    the smallest stays small (about 1e-3 / ||W||_F * 1.5^10), where Muon's quintic lifts it above 0.6."""
    sv = torch.logspace(0, -3, 100, dtype=torch.float64)
    w = spectrum_matrix(sv)
    layer = nn.Linear(100, 100)
    parent = {"weight": w.float(), "bias": torch.zeros(100)}
    model = initialise("fire", {}, InitContext(fresh=layer, seed=0, parent_state=parent))
    x = sv / sv.norm()
    for _ in range(10):
        x = 1.5 * x - 0.5 * x ** 3
    got = torch.linalg.svdvals(model.weight.detach().double())
    torch.testing.assert_close(got, x, rtol=1e-4, atol=1e-6)
    assert got.min() < 0.05  # 1e-3 / ||W||_F grown 1.5x a step: 0.021
    quintic = initialise("fire", {"iteration": "quintic"},
                         InitContext(fresh=nn.Linear(100, 100), seed=0, parent_state=parent))
    assert torch.linalg.svdvals(quintic.weight.detach().double()).min() > 0.6


def test_fire_on_a_trained_size_linear_layer_keeps_its_smallest_singular_value_small():
    """The measurement behind the change: a default-initialised 100 x 100 layer (torch's uniform init) keeps
    a smallest singular value of about 0.02 under the authors' FIRE; Muon's quintic lifted it to about 0.7."""
    torch.manual_seed(0)
    parent = {k: v.clone() for k, v in nn.Linear(100, 100).state_dict().items()}
    smallest = {}
    for iteration in ("cubic", "quintic"):
        model = initialise("fire", {"iteration": iteration},
                           InitContext(fresh=nn.Linear(100, 100), seed=0, parent_state=parent))
        smallest[iteration] = torch.linalg.svdvals(model.weight.detach().double()).min().item()
    assert smallest["cubic"] < 0.1 < 0.6 < smallest["quintic"], smallest


def vit(seed: int):
    from warmstart.components.models import build_model
    from warmstart.core.spec import ModelSpec

    torch.manual_seed(seed)
    return build_model(ModelSpec("vit", {"dim": 8, "depth": 2, "heads": 2}), (3, 8, 8), 5)


def test_fire_on_a_vit_orthogonalises_only_the_query_and_key_rows_of_qkv():
    """On a ViT the authors orthogonalise only ``to_q`` and ``to_k``: here the first two (8, 8) blocks of
    rows of each fused qkv weight, each on its own (scale sqrt(8 / 8) = 1); the value rows, the qkv bias,
    the patch embedding, projections, MLP, head, norms and embeddings stay the parent's. ``layers: all``
    takes every layer, the value rows too."""
    ctx, parent, _ = ctx_for(vit)
    model = initialise("fire", {}, ctx)
    state = model.state_dict()
    expected = dict(parent)
    for b in range(2):
        name = f"blocks.{b}.attn.qkv.weight"
        qkv = parent[name].clone()
        qkv[:8] = cubic_newton_schulz(parent[name][:8]).float()
        qkv[8:16] = cubic_newton_schulz(parent[name][8:16]).float()
        expected[name] = qkv
    assert_state(model, expected)
    assert not torch.allclose(state["blocks.0.attn.qkv.weight"][:16], parent["blocks.0.attn.qkv.weight"][:16])
    ctx, parent, _ = ctx_for(vit)
    state = initialise("fire", {"layers": "all"}, ctx).state_dict()
    changed = {k for k in parent if not torch.equal(state[k], parent[k])}
    assert changed == {k for k in parent if k.endswith("weight") and parent[k].dim() >= 2}
    torch.testing.assert_close(state["blocks.1.attn.qkv.weight"][16:].double(),
                               cubic_newton_schulz(parent["blocks.1.attn.qkv.weight"][16:]), rtol=1e-5, atol=1e-6)


def test_fire_alpha_interpolates_toward_the_parent_and_a_1d_kernel_goes_per_tap():
    torch.manual_seed(0)
    conv = nn.Conv1d(3, 4, 5)
    parent = {k: v.clone() * 2 for k, v in conv.state_dict().items()}
    full = initialise("fire", {}, InitContext(fresh=nn.Conv1d(3, 4, 5), seed=0, parent_state=parent)).weight.detach()
    for tap in range(5):
        torch.testing.assert_close(full[:, :, tap].double(),
                                   cubic_newton_schulz(parent["weight"][:, :, tap]) * (4 / 3) ** 0.5 / 5,
                                   rtol=1e-5, atol=1e-6)
    half = initialise("fire", {"alpha": 0.25}, InitContext(fresh=nn.Conv1d(3, 4, 5), seed=0, parent_state=parent))
    torch.testing.assert_close(half.weight.detach(), 0.25 * full + 0.75 * parent["weight"])


# The band the quintic Newton-Schulz iteration leaves the singular values of W / ||W||_F in after 10 steps,
# from any start >= 1e-4 (measured over a fine grid: [0.6818, 1.1344]); it never reaches 1 everywhere.
FIRE_BAND = (0.68, 1.135)
EARLIER_FIRE = {"iteration": "quintic", "conv": "reshaped", "layers": "all", "precision": "float64"}


def test_our_earlier_fire_as_options_makes_each_reshaped_weight_a_scaled_near_orthogonal_matrix():
    """``iteration: quintic, conv: reshaped``: each weight W as its (out, -1) matrix M, scale sqrt(rows /
    cols) (sqrt(3 / 18) for the 3x2x3x3 kernel, sqrt(3 / 48) for the head), has the smaller Gram matrix
    within the band of the scaled identity, and M keeps W's singular vectors (M^T W symmetric positive
    semi-definite). Biases, BatchNorm and its statistics are the parent's."""
    ctx, parent, draws = ctx_for(convnet)
    model = initialise("fire", EARLIER_FIRE, ctx)
    state = model.state_dict()
    for name, rows, cols in (("0.weight", 3, 18), ("4.weight", 3, 48)):
        m, w = state[name].double().flatten(1), parent[name].double().flatten(1)
        gram = m @ m.T if rows <= cols else m.T @ m
        eig = torch.linalg.eigvalsh(gram / (rows / cols))
        lo, hi = FIRE_BAND
        assert lo ** 2 <= eig.min() and eig.max() <= hi ** 2, (name, eig)
        assert not torch.allclose(eig, torch.ones_like(eig), atol=1e-2)  # the quintic does not converge
        cross = m.T @ w
        torch.testing.assert_close(cross, cross.T, atol=1e-6, rtol=1e-6)
        assert torch.linalg.eigvalsh(cross).min() > -1e-6
    assert_state(model, {k: state[k] if k in ("0.weight", "4.weight") else parent[k] for k in parent})


def test_fire_on_a_tall_matrix_and_more_iterations_and_its_options_checked():
    torch.manual_seed(0)
    parent = {k: v * 3 for k, v in nn.Linear(4, 9).state_dict().items()}  # 9 x 4: tall, W^T W is the 4 x 4 Gram
    ctx = InitContext(fresh=nn.Linear(4, 9), seed=0, parent_state=parent)
    model = initialise("fire", {**EARLIER_FIRE, "iterations": 30}, ctx)
    eig = torch.linalg.eigvalsh(model.weight.detach().double().T @ model.weight.detach().double() / (9 / 4))
    assert FIRE_BAND[0] ** 2 <= eig.min() and eig.max() <= FIRE_BAND[1] ** 2
    torch.testing.assert_close(model.bias.detach(), parent["bias"])
    # the cubic iteration converges: 30 steps from a well-conditioned start reach U V^T
    model = initialise("fire", {"iterations": 30}, InitContext(fresh=nn.Linear(4, 9), seed=0, parent_state=parent))
    gram = model.weight.detach().double().T @ model.weight.detach().double() / (9 / 4)
    torch.testing.assert_close(gram, torch.eye(4, dtype=torch.float64), atol=1e-5, rtol=0)
    with pytest.raises(SpecError, match=r"^init\.options\.iterations: must be >= 1"):
        initialise("fire", {"iterations": 0}, InitContext(fresh=nn.Linear(4, 9), seed=0, parent_state=parent))
    with pytest.raises(SpecError, match=r"^init\.options\.iteration: must be one of \['cubic', 'quintic'\]"):
        initialise("fire", {"iteration": "septic"}, InitContext(fresh=nn.Linear(4, 9), seed=0, parent_state=parent))
    with pytest.raises(SpecError, match=r"^init\.options\.layers: must be one of"):
        initialise("fire", {"layers": "head"}, InitContext(fresh=nn.Linear(4, 9), seed=0, parent_state=parent))
