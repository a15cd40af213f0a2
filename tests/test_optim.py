"""The registry's optimisers (``warmstart.components.optimizer_algorithms``): SGD and Adam step for step as torch.optim's, with torch's
state-dict format both ways; Muon as FIRE's comparison runs it (Keller Jordan's muon.py, written out here)
by default, and as torch.optim.Muon on each matrix (and AdamW on the rest) under its options, per seed of a
stack as alone; and none of them imports ``torch._dynamo``."""
from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from warmstart.plan.job_blocks import stackable
from warmstart.components.models import build_model
from warmstart.components.optimizer_algorithms.newton_schulz import QUINTIC, newton_schulz
from warmstart.core.errors import SpecError
from warmstart.components.optimizers import OPTIMIZERS, build_optimizer, muon_parameter_names
from warmstart.core.spec import ModelSpec, OptimizerSpec, StopSpec
from warmstart.engine.loop import TrainData, fit
from warmstart.engine.trainees import SingleModel, StackedModels


def convnet(seed: int = 0, conv_bias: bool = True) -> nn.Module:
    """A convolution, BatchNorm and two linear layers: 4-D, 2-D and 1-D parameters."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=conv_bias), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 5 * 5, 8), nn.Tanh(), nn.Linear(8, 3))


def batches(n: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(6, 2, 5, 5, generator=g), torch.randint(0, 3, (6,), generator=g)) for _ in range(n)]


def train_steps(model: nn.Module, opt, data) -> None:
    for x, y in data:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()


def torch_optimizer(spec: OptimizerSpec, params):
    if spec.name == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)


def assert_same_state(a: dict, b: dict) -> None:
    """Two optimiser state dicts alike: groups (hyper-parameters and indices) and state, bit for bit."""
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        assert a["state"][k].keys() == b["state"][k].keys()
        for key, value in a["state"][k].items():
            assert torch.equal(value, b["state"][k][key]) and value.dtype == b["state"][k][key].dtype, (k, key)


ELEMENTWISE = [OptimizerSpec("sgd", lr=0.05), OptimizerSpec("sgd", lr=0.05, momentum=0.9, weight_decay=1e-3),
               OptimizerSpec("adam", lr=1e-2), OptimizerSpec("adam", lr=1e-2, weight_decay=1e-2)]


@pytest.mark.parametrize("spec", ELEMENTWISE, ids=lambda s: f"{s.name}-m{s.momentum}-wd{s.weight_decay}")
def test_sgd_and_adam_take_torchs_steps_bit_for_bit_and_keep_torchs_state(spec):
    ours_model, torch_model = convnet(), convnet()
    ours, reference = build_optimizer(ours_model, spec), torch_optimizer(spec, torch_model.parameters())
    assert not isinstance(ours, torch.optim.Optimizer)
    for x, y in batches(50):
        train_steps(ours_model, ours, [(x, y)])
        train_steps(torch_model, reference, [(x, y)])
    for (name, a), b in zip(ours_model.named_parameters(), torch_model.parameters()):
        assert torch.equal(a, b), name
    assert_same_state(ours.state_dict(), reference.state_dict())


@pytest.mark.parametrize("spec", ELEMENTWISE, ids=lambda s: f"{s.name}-m{s.momentum}-wd{s.weight_decay}")
def test_a_saved_state_continues_as_torchs_in_either_direction(spec):
    """20 steps, then the state dict (deep-copied, as the engine saves and hands it on) is loaded into a new
    optimiser over other tensors holding the same weights -- a resume, or a child continuing its parent's
    state (warm, optimizer_state: keep) -- and 30 more steps are taken: ours from ours, torch's from ours,
    ours from torch's, all alike bit for bit."""
    data = batches(50)
    parent, torch_parent = convnet(), convnet()
    opt, torch_opt = build_optimizer(parent, spec), torch_optimizer(spec, torch_parent.parameters())
    train_steps(parent, opt, data[:20])
    train_steps(torch_parent, torch_opt, data[:20])
    saved, torch_saved = copy.deepcopy(opt.state_dict()), copy.deepcopy(torch_opt.state_dict())
    assert_same_state(saved, torch_saved)

    results = []
    for make, state in ((lambda m: build_optimizer(m, spec), saved),
                        (lambda m: torch_optimizer(spec, m.parameters()), saved),
                        (lambda m: build_optimizer(m, spec), torch_saved)):
        child = convnet(seed=5)
        child.load_state_dict(parent.state_dict())
        child_opt = make(child)
        child_opt.load_state_dict(copy.deepcopy(state))
        train_steps(child, child_opt, data[20:])
        results.append(child)
    train_steps(parent, opt, data[20:])
    for model in results:
        for (name, a), b in zip(parent.named_parameters(), model.parameters()):
            assert torch.equal(a, b), name


def test_a_loaded_state_takes_the_saved_hyper_parameters_and_refuses_another_layout():
    """As torch does: the saved groups' lr replaces the new optimiser's; a state of other groups is refused."""
    model = convnet()
    opt = build_optimizer(model, OptimizerSpec("adam", lr=1e-2))
    train_steps(model, opt, batches(2))
    other = build_optimizer(convnet(), OptimizerSpec("adam", lr=0.5))
    other.load_state_dict(opt.state_dict())
    assert other.param_groups[0]["lr"] == 1e-2 and other.param_groups[0]["params"][0] is not model[0].weight
    fewer = build_optimizer(list(convnet().parameters())[:3], OptimizerSpec("adam", lr=1e-2))
    with pytest.raises(ValueError, match="doesn't match the size"):
        fewer.load_state_dict(opt.state_dict())


def test_zero_grad_clears_the_gradients():
    model = convnet()
    opt = build_optimizer(model, OptimizerSpec("sgd", lr=0.1))
    F.cross_entropy(model(batches(1)[0][0]), batches(1)[0][1]).backward()
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_building_and_stepping_every_optimiser_imports_no_dynamo():
    """What the own classes are for: torch.optim's constructor imports torch._dynamo (1.5-2 s a process)."""
    code = """
import sys, torch
import torch.nn.functional as F
from warmstart.components.optimizers import OPTIMIZERS, build_optimizer
from warmstart.core.spec import OptimizerSpec
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
for name in OPTIMIZERS:
    opt = build_optimizer(model, OptimizerSpec(name, lr=0.01))
    F.cross_entropy(model(torch.randn(5, 4)), torch.zeros(5, dtype=torch.long)).backward()
    opt.step(); opt.zero_grad(); opt.load_state_dict(opt.state_dict())
assert "torch._dynamo" not in sys.modules, "an optimiser imported torch._dynamo"
torch.optim.SGD(model.parameters(), lr=0.1)
assert "torch._dynamo" in sys.modules  # the check can fail: torch's own optimiser does import it
"""
    subprocess.run([sys.executable, "-c", code], check=True)


# -- Muon ----------------------------------------------------------------------------------------------------

def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelSpec("mlp", {"hidden": 12}), (10,), 3)


def test_muon_updates_every_hidden_layers_weight_and_leaves_the_head_biases_norms_and_embeddings_to_adamw():
    assert muon_parameter_names(convnet()) == ["0.weight", "4.weight"]  # not the head 6.weight, nor BatchNorm
    resnet = build_model(ModelSpec("resnet18", {"width": 4}), (3, 8, 8), 10)
    names = muon_parameter_names(resnet)
    assert len(names) == 20 and "fc.weight" not in names and not any("bn" in n or "bias" in n for n in names)
    vit = build_model(ModelSpec("vit", {"dim": 16, "depth": 2, "heads": 2}), (3, 8, 8), 10)
    names = muon_parameter_names(vit)
    assert "patch_embed.weight" in names and "blocks.1.fc2.weight" in names and "blocks.0.attn.qkv.weight" in names
    assert not {"head.weight", "pos_embed", "cls_token", "norm.weight", "blocks.0.norm1.weight"} & set(names)
    opt = build_optimizer(convnet(), OptimizerSpec("muon", lr=0.01))
    muon_group, adamw_group = opt.param_groups
    assert muon_group["use_muon"] and not adamw_group["use_muon"]
    assert len(muon_group["params"]) == 2 and len(adamw_group["params"]) == 6


def test_muon_needs_the_model_to_tell_its_matrices_and_the_model_must_fit_the_tensors():
    model = convnet()
    with pytest.raises(ValueError, match="needs the model"):
        build_optimizer(list(model.parameters()), OptimizerSpec("muon", lr=0.01))
    stacked = [torch.stack([p.detach()] * 2).requires_grad_() for p in model.parameters()]
    with pytest.raises(ValueError, match="not the model's trainable parameters"):
        build_optimizer(stacked, OptimizerSpec("muon", lr=0.01), model=model)  # stacked, but not said so


def test_muon_defaults_are_fire_comparisons_settings():
    """Muon at the spec's lr (the comparison: 10x Adam's), AdamW at a tenth of it with betas (0.9, 0.95) and
    eps 1e-10; momentum 0.95, Nesterov, 5 quintic steps, Keller Jordan's ``original`` lr scaling."""
    opt = build_optimizer(convnet(), OptimizerSpec("muon", lr=0.01))
    muon_group, adamw_group = opt.param_groups
    assert (muon_group["lr"], muon_group["adjust_lr_fn"], muon_group["momentum"], muon_group["nesterov"],
            muon_group["ns_steps"], muon_group["ns_dtype"]) == (0.01, "original", 0.95, True, 5, "auto")
    assert adamw_group["lr"] == pytest.approx(0.001) and adamw_group["betas"] == (0.9, 0.95)
    assert adamw_group["eps"] == 1e-10 and adamw_group["weight_decay"] == 0.0
    spec = OptimizerSpec.from_settings("muon", {"lr": 0.01, "adjust_lr": "match_rms_adamw", "adamw_lr_ratio": 1.0,
                                                "adamw_betas": [0.9, 0.999]})
    muon_group, adamw_group = build_optimizer(convnet(), spec).param_groups
    assert muon_group["adjust_lr_fn"] == "match_rms_adamw" and adamw_group["lr"] == 0.01
    assert adamw_group["betas"] == (0.9, 0.999)


def test_muons_options_are_checked_by_the_registry():
    muon, adam = OPTIMIZERS["muon"], OPTIMIZERS["adam"]
    muon.check({"lr": 0.01, "adjust_lr": "original", "qkv": "fused", "adamw_betas": [0.9, 0.95]}, "optimizers.muon")
    with pytest.raises(SpecError, match=r"^optimizers\.muon\.adjust_lr: must be one of \['original', "):
        muon.check({"lr": 0.01, "adjust_lr": "keller"}, "optimizers.muon")
    with pytest.raises(SpecError, match=r"^optimizers\.muon: unknown option\(s\) \['betas'\]; allowed: \["):
        muon.check({"lr": 0.01, "betas": [0.9, 0.95]}, "optimizers.muon")
    with pytest.raises(SpecError, match=r"^optimizers\.adam: unknown option\(s\) \['adjust_lr'\]"):
        adam.check({"lr": 0.01, "adjust_lr": "original"}, "optimizers.adam")
    with pytest.raises(SpecError, match=r"^optimizers\.muon\.adamw_lr_ratio: must be float"):
        muon.check({"lr": 0.01, "adamw_lr_ratio": "0.1"}, "optimizers.muon")


def tall_convnet(seed: int = 0) -> nn.Module:
    """A 1x1 convolution with more outputs than inputs (8 > 2 * 1 * 1: the flattened rule's sqrt(4) against
    Keller Jordan's kh / kw = 1), a wide and a tall (18 x 6: sqrt(3)) hidden matrix, a head."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 8, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 5 * 5, 6),
                         nn.Tanh(), nn.Linear(6, 18), nn.Tanh(), nn.Linear(18, 3))


def keller_orthogonalise(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    a, b, c = QUINTIC
    x = g.float()
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x = x / (torch.sqrt((x * x).sum()) + 1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


class KellerMuonWithAuxAdam:
    """Keller Jordan's SingleDeviceMuonWithAuxAdam (KellerJordan/Muon muon.py), which FIRE's comparison
    builds, written out from its update rule (in float32, as ours with ``ns_dtype: float32``): Muon groups
    ``B = lerp(B, g, 0.05)``, ``U = lerp(g, B, 0.95)``, a 4-D U viewed (out, -1), orthogonalised, scaled by
    ``max(1, g.size(-2) / g.size(-1))^0.5`` of the gradient as stored, ``p -= lr * that``; the others
    ``m = lerp(m, g, 1 - b1)``, ``v = lerp(v, g^2, 1 - b2)``, ``p -= lr * m_hat / (sqrt(v_hat) + eps)``."""

    def __init__(self, muon, adam, lr_muon, lr_adam, betas=(0.9, 0.95), eps=1e-10):
        self.muon, self.adam, self.lr_muon, self.lr_adam, self.betas, self.eps = muon, adam, lr_muon, lr_adam, betas, eps
        self.buf = {id(p): torch.zeros_like(p) for p in muon}
        self.m = {id(p): torch.zeros_like(p) for p in adam}
        self.v = {id(p): torch.zeros_like(p) for p in adam}
        self.t = 0

    def zero_grad(self, set_to_none: bool = True):
        for p in [*self.muon, *self.adam]:
            p.grad = None

    @torch.no_grad()
    def step(self):
        self.t += 1
        for p in self.muon:
            g, buf = p.grad, self.buf[id(p)]
            buf.copy_(0.95 * buf + 0.05 * g)
            u = 0.05 * g + 0.95 * buf
            o = keller_orthogonalise(u.reshape(len(u), -1) if u.dim() == 4 else u)
            p.sub_(self.lr_muon * max(1, g.shape[-2] / g.shape[-1]) ** 0.5 * o.reshape(p.shape))
        b1, b2 = self.betas
        for p in self.adam:
            g, m, v = p.grad, self.m[id(p)], self.v[id(p)]
            m.copy_(b1 * m + (1 - b1) * g)
            v.copy_(b2 * v + (1 - b2) * g * g)
            p.sub_(self.lr_adam * (m / (1 - b1 ** self.t)) / ((v / (1 - b2 ** self.t)).sqrt() + self.eps))


def test_muon_by_default_takes_keller_jordans_steps_with_the_original_scaling_and_adamws_betas():
    """10 steps of ours against the written-out reference (both Newton-Schulz in float32): the default
    ``original`` scaling is Keller Jordan's (the 1x1 convolution's kernel scaled by kh / kw = 1, the tall
    hidden matrix by sqrt(3)), AdamW at a tenth of Muon's lr with betas (0.9, 0.95) and eps 1e-10. (The
    convolution has no bias: before BatchNorm its gradient is rounding noise, which Adam's eps of 1e-10
    turns into steps of order lr.)"""
    x0 = batches(1)[0][0]
    model, reference = tall_convnet(), tall_convnet()
    ours = build_optimizer(model, OptimizerSpec.from_settings("muon", {"lr": 0.02, "ns_dtype": "float32"}))
    names = set(muon_parameter_names(reference))
    assert names == {"0.weight", "4.weight", "6.weight"}
    keller = KellerMuonWithAuxAdam([p for n, p in reference.named_parameters() if n in names],
                                   [p for n, p in reference.named_parameters() if n not in names], 0.02, 0.002)
    for x, y in batches(10):
        train_steps(model, ours, [(x, y)])
        train_steps(reference, keller, [(x, y)])
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")
    assert not torch.allclose(model(x0), tall_convnet()(x0))


def test_muons_flattened_scaling_differs_from_keller_jordans_only_on_a_kernel_with_more_outputs_than_inputs():
    """``original_flat`` scales the 1x1 convolution (8, 2) by sqrt(8 / 2) = 2 where ``original`` reads kh / kw
    = 1; every other step the same (one step from the same weights)."""
    steps = {}
    for adjust_lr in ("original", "original_flat"):
        model = tall_convnet()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt = build_optimizer(model, OptimizerSpec.from_settings("muon", {"lr": 0.02, "ns_dtype": "float32",
                                                                          "adjust_lr": adjust_lr}))
        train_steps(model, opt, batches(1))
        steps[adjust_lr] = {n: p.detach() - before[n] for n, p in model.named_parameters()}
    for name, step in steps["original"].items():
        factor = 2.0 if name == "0.weight" else 1.0
        torch.testing.assert_close(steps["original_flat"][name], factor * step, rtol=1e-5, atol=1e-7, msg=name)


def test_muon_orthogonalises_a_vits_query_key_and_value_each_on_its_own():
    """The fused qkv weight (3 dim, dim) goes to a Muon group that cuts it into three (dim, dim) matrices
    (``row_blocks`` 3): one step moves each block by -lr * its own orthogonalised gradient (the first step's
    Nesterov update is a multiple of the gradient; sqrt(max(1, dim / dim)) = 1), not by the fused
    matrix's; ``qkv: fused`` keeps it whole."""
    vit = build_model(ModelSpec("vit", {"dim": 8, "depth": 1, "heads": 2}), (3, 8, 8), 5)
    opt = build_optimizer(vit, OptimizerSpec.from_settings("muon", {"lr": 0.1, "ns_dtype": "float32"}))
    qkv = vit.blocks[0].attn.qkv.weight
    (group,) = [g for g in opt.param_groups if any(p is qkv for p in g["params"])]
    assert group["row_blocks"] == 3 and group["params"] == [qkv] and group["use_muon"]
    before = qkv.detach().clone()
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))
    opt.zero_grad()
    F.cross_entropy(vit(x), y).backward()
    grad = qkv.grad.clone()
    opt.step()
    step = qkv.detach() - before
    for i in range(3):
        torch.testing.assert_close(step[8 * i:8 * (i + 1)], -0.1 * keller_orthogonalise(grad[8 * i:8 * (i + 1)]),
                                   rtol=1e-4, atol=1e-5)
    fused = build_optimizer(vit, OptimizerSpec.from_settings("muon", {"lr": 0.1, "qkv": "fused"}))
    assert all(g.get("row_blocks", 1) == 1 for g in fused.param_groups)


@pytest.mark.parametrize("adjust_lr", ["match_rms_adamw", "original_flat"])
def test_single_model_muon_is_torch_optim_muon_on_each_matrix_and_adamw_on_the_rest(monkeypatch, adjust_lr):
    """Under options that make it torch's (AdamW at the spec's lr with torch's betas and eps): the same
    gradients through ours and through torch.optim.Muon (each kernel as its (out, -1) matrix, torch's Muon
    taking 2-D tensors only; its ``original`` is our ``original_flat``) plus torch.optim.AdamW: 10 steps,
    close (Newton-Schulz in bfloat16 as torch's; torch clamps the norm where Keller Jordan's code, and
    ours, adds eps to it; the same ops in another order for the kernel's flattening)."""
    spec = OptimizerSpec.from_settings("muon", {"lr": 0.02, "weight_decay": 0.1, "adjust_lr": adjust_lr,
                                                "adamw_lr_ratio": 1.0, "adamw_betas": [0.9, 0.999],
                                                "adamw_eps": 1e-8, "ns_dtype": "bfloat16"})
    model, reference = convnet(), convnet()
    ours = build_optimizer(model, spec)
    muon_names = set(muon_parameter_names(reference))
    named = dict(reference.named_parameters())
    matrices = {n: nn.Parameter(named[n].detach().flatten(1).clone()) for n in muon_names}
    others = [p for n, p in reference.named_parameters() if n not in muon_names]
    torch_muon = torch.optim.Muon(list(matrices.values()), lr=spec.lr, weight_decay=spec.weight_decay,
                                  momentum=0.95, nesterov=True, ns_coefficients=QUINTIC, ns_steps=5,
                                  adjust_lr_fn="original" if adjust_lr == "original_flat" else adjust_lr)
    torch_adamw = torch.optim.AdamW(others, lr=spec.lr, weight_decay=spec.weight_decay)
    for x, y in batches(10):
        train_steps(model, ours, [(x, y)])
        reference.zero_grad(set_to_none=True)
        F.cross_entropy(reference(x), y).backward()
        for n, m in matrices.items():
            m.grad = named[n].grad.flatten(1)
        torch_muon.step()
        torch_adamw.step()
        with torch.no_grad():
            for n, m in matrices.items():
                named[n].copy_(m.view_as(named[n]))
    moved = False
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")
        moved |= not torch.allclose(a, convnet().state_dict()[name])
    assert moved


def stacked_rows(models):
    return [torch.stack([p.detach() for p in ps]).requires_grad_() for ps in zip(*(m.parameters() for m in models))]


@pytest.mark.parametrize("dtype,steps", [(torch.bfloat16, 5), (torch.float32, 10)], ids=["bf16", "fp32"])
def test_stacked_muon_updates_each_seeds_row_as_that_seeds_own_muon_would(monkeypatch, dtype, steps):
    """Three seeds' tensors stacked [S, ...], each row with its own gradients: every row after a few steps
    is the seed's model trained alone (close: the batched Newton-Schulz multiplies in bmm, not mm). The
    convolution has no bias: before BatchNorm a bias's gradient is rounding noise, and AdamW (eps 1e-10)
    turns a change of that noise into a step of order lr. In float32 bmm's and mm's roundings stay within
    1e-7 for 10 steps; in bfloat16 one of them rounds the other way after about 6 (a change of one bfloat16
    unit of the update, 4e-5, which then grows), so that case is checked after 5."""
    from warmstart.components.optimizer_algorithms import muon

    monkeypatch.setattr(muon, "newton_schulz_dtype", lambda device: dtype)
    models = [convnet(seed, conv_bias=False) for seed in range(3)]
    spec = OptimizerSpec("muon", lr=0.02, weight_decay=0.05)
    rows = stacked_rows(models)
    stacked = build_optimizer(rows, spec, model=models[0], stacked=True)
    alone = [build_optimizer(m, spec) for m in models]
    for step in range(steps):
        loss = 0
        for s, model in enumerate(models):
            x, y = batches(1, seed=100 * s + step)[0]
            train_steps(model, alone[s], [(x, y)])
            params = dict(zip((n for n, _ in model.named_parameters()), (r[s] for r in rows)))
            loss = loss + F.cross_entropy(torch.func.functional_call(model, params, (x,)), y)
        stacked.zero_grad()
        loss.backward()
        stacked.step()
    for s, model in enumerate(models):
        for (name, p), row in zip(model.named_parameters(), rows):
            torch.testing.assert_close(row[s], p, rtol=1e-4, atol=1e-5, msg=lambda m: f"seed {s}, {name}: {m}")
    # rows differ: the test would see a row mixed with another
    assert not torch.allclose(rows[0][0], rows[0][1])


def test_muon_without_the_batch_dimension_would_mix_the_seeds():
    """The stacked test can fail: one Newton-Schulz over a seed-stacked matrix is not each seed's."""
    g = torch.randn(2, 6, 5)
    per_row = newton_schulz(g, 5)
    assert not torch.allclose(newton_schulz(g.flatten(1), 5).view_as(g).float(), per_row.float(), atol=1e-2)
    torch.testing.assert_close(per_row[1], newton_schulz(g[1], 5), rtol=2e-2, atol=2e-2)


def test_a_muon_run_stacks_and_a_stack_trains_each_seed_as_alone():
    """Through the engine: a Muon run is stackable, and fit over a stack of two MLPs gives each seed the
    weights it gets trained alone (the call site hands the optimiser the model and the stacking)."""
    from warmstart.core.spec import DatasetSpec, RunSpec

    spec = RunSpec(DatasetSpec("mnist1d"), ModelSpec("mlp"), OptimizerSpec("muon", lr=0.01), batch_size=16,
                   stop=StopSpec("epochs", max_epochs=2), seed=0)
    assert stackable(spec)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 10, generator=g), torch.randint(0, 3, (64,), generator=g)
    idx = torch.stack([torch.randperm(64, generator=g) for _ in range(2)])
    data = TrainData(x, y, idx[:, :48], idx[:, 48:])
    stop, opt = StopSpec("epochs", max_epochs=2), OptimizerSpec("muon", lr=0.01)
    stack = StackedModels([mlp(0), mlp(1)])
    fit(stack, opt, data, [0, 1], batch_size=16, stop=stop, log=None)
    for row, seed in enumerate((0, 1)):
        alone = mlp(seed)
        fit(SingleModel(alone), opt, data.rows(torch.tensor([row])), [seed], batch_size=16, stop=stop, log=None)
        for name, p in alone.named_parameters():
            torch.testing.assert_close(stack.models()[row].state_dict()[name], p.detach(), rtol=1e-4, atol=1e-5,
                                       msg=lambda m: f"seed {seed}, {name}: {m}")


def test_muon_orthogonalises_in_bfloat16_only_where_the_machine_computes_it_natively(monkeypatch):
    from warmstart.components.optimizer_algorithms import muon
    from warmstart.core import hardware

    assert muon.newton_schulz_dtype(torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    assert muon.newton_schulz_dtype(torch.device("cpu")) == torch.float32
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    assert muon.newton_schulz_dtype(torch.device("cpu")) == torch.bfloat16
