"""Interventions reset units while a run trains: each against a hand computation on a tiny model from its
reference's formula (which units, their fresh incoming weights, bias 0 and zero outgoing weights, their
optimiser moments and per-entry Adam steps zeroed and no others; ReDo's last-batch score, CBP's utility,
bias compensation and restarted bias correction, SNR's exact silences, percentile threshold and
pre-activation firing), and
every registered one through planned runs: alone == stacked, an online round, and a run interrupted
between two of its calls resuming to the bits of one that was not."""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from warmstart.core.seeds import derived_seed
from warmstart.components.interventions import INTERVENTIONS, sequential_unit_layers
from warmstart.core.io import load_torch
from warmstart.components.optimizer_algorithms.adam import Adam
from warmstart.jobs.train_block import run_block
from warmstart.core.spec import InterventionSpec, ModelSpec, StopSpec, StreamSpec
from warmstart.engine.checkpoint import Checkpointing
from warmstart.engine.intervention_hook import BoundIntervention, Interventions
from warmstart.engine.loop import train_epoch
from warmstart.engine.trainees import SingleModel, StackedModels

sys.path.insert(0, str(Path(__file__).parent))
from test_same_bits import assert_same_files, inputs, spec, train  # noqa: E402,F401  (a fixture)
from test_stacks import untimed  # noqa: E402

SEED = 5

# Options under which each registered intervention resets units in a short run of a small ReLU MLP; an
# intervention added to the registry without an entry here fails the suite.
RESETTING = {
    "redo": {"tau": 0.5, "every": 7},
    "cbp": {"replacement_rate": 0.02, "maturity": 10},
    "snr": {"threshold_every": 5, "max_age": 64},
}
# Registered interventions that act on the optimiser rather than on units (they reset none), each with
# its own tests: tests/test_moment_reset.py.
OPTIMISER_REMEDIES = ("moment_reset",)


def tiny_model() -> nn.Sequential:
    """4 inputs -> 3 ReLU units -> 2 classes; unit 1 never fires (its bias is far below zero)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        model[0].bias[1] = -100.0
        model[0].bias[0] = 2.0
        model[0].bias[2] = 0.1
    return model


def batch():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 4, generator=g)
    y = torch.randint(0, 2, (8,), generator=g)
    return x, y


def one_step(model: nn.Module, interventions: list[BoundIntervention] | None, stacked: bool = False):
    """One optimiser step (our Adam, torch's bit for bit) on the batch, through the engine's train_epoch
    with the optimiser as ``fit`` builds it; returns the trainee, its optimiser and the driver."""
    trainee = StackedModels([model]) if stacked else SingleModel(model)
    driver = started(interventions, trainee) if interventions else None
    opt = Adam(trainee.optimizer_params(), lr=0.01)
    if driver is not None:
        driver.configure_optimizer(opt)
    x, y = batch()
    order = torch.arange(8).unsqueeze(0)
    train_epoch(trainee, opt, x, y, order, 8, [driver] if driver else [])
    return trainee, opt, driver


def started(bound: list[BoundIntervention], trainee) -> Interventions:
    """The run's interventions hook, started on ``trainee`` (one row, seed SEED) as ``fit`` starts it."""
    driver = Interventions(bound)
    driver.start(trainee, [SEED])
    return driver


def fresh_rows(layer: nn.Linear, tag: str) -> dict[str, torch.Tensor]:
    """A new draw of ``layer``'s own initialisation under the seed a reset of the run's seed uses."""
    fresh = copy.deepcopy(layer)
    torch.manual_seed(derived_seed(SEED, f"{tag}:0"))
    fresh.reset_parameters()
    return {"weight": fresh.weight.detach(), "bias": fresh.bias.detach()}


def hidden_mean_abs(model: nn.Module, x: torch.Tensor | None = None) -> torch.Tensor:
    x = batch()[0] if x is None else x
    return model[1](model[0](x)).abs().mean(0)


def assert_reset(model, reference, trainee, opt, ref_opt, units: list[int], tag: str, *, bias: str = "zero",
                 bias_moments: str = "zero", per_entry_step: bool = False) -> None:
    """Units ``units`` of the hidden layer were reset after the step and nothing else changed: fresh
    incoming weights, bias 0 (or the fresh draw), outgoing weights 0, their Adam moments (and per-entry
    steps) 0 and no others; the bias's moments zeroed or kept as ``bias_moments`` says."""
    w1, b1, w2 = (trainee.param_rows(n)[0] for n in ("0.weight", "0.bias", "2.weight"))
    others = [u for u in range(3) if u not in units]
    fresh = fresh_rows(model[0], tag)
    for u in units:
        assert torch.equal(w1[u], fresh["weight"][u])
        assert float(b1[u].detach()) == (0.0 if bias == "zero" else float(fresh["bias"][u]))
        assert torch.all(w2[:, u] == 0)
    assert torch.equal(w1[others], reference[0].weight[others]) and torch.equal(b1[others], reference[0].bias[others])
    assert torch.equal(w2[:, others], reference[2].weight[:, others])
    assert torch.equal(trainee.param_rows("2.bias")[0], reference[2].bias)
    nothing = (slice(0, 0),)
    zeroed = [("0.weight", (units,)), ("2.weight", (slice(None), units)), ("2.bias", nothing),
              ("0.bias", (units,) if bias_moments == "zero" else nothing)]
    for name, index in zeroed:
        state, ref_state = opt.state[trainee.leaf(name)], ref_opt.state[dict(reference.named_parameters())[name]]
        for key in ("exp_avg", "exp_avg_sq") + (("step",) if per_entry_step else ()):
            rows = state[key] if trainee.stacked else state[key].unsqueeze(0)
            assert torch.all(rows[0][index] == 0), (name, key)
            kept = ref_state[key].clone() if key != "step" else torch.ones_like(rows[0])
            kept[index] = 0
            assert torch.equal(rows[0], kept), (name, key)  # no other entry touched
        if not per_entry_step:
            assert state["step"].dim() == 0 and float(state["step"]) == float(ref_state["step"])


@pytest.mark.parametrize("stacked", [False, True], ids=["single", "stacked"])
def test_redo_resets_the_units_whose_normalised_activity_is_at_most_tau(stacked):
    model = tiny_model()
    reference, ref_opt, _ = one_step(copy.deepcopy(model), None)
    before = copy.deepcopy(model)
    m = hidden_mean_abs(before)  # the batch of the step it is called after, scored with the weights it ran with
    score = m / (m.mean() + 1e-9)
    tau = float(score.detach().sort().values[1]) + 1e-6  # the dead unit and the next least active one
    expected = [u for u in range(3) if score[u] <= tau]
    assert 1 in expected and len(expected) == 2
    trainee, opt, driver = one_step(model, [BoundIntervention("redo", {"tau": tau, "every": 1})], stacked)
    ref_model = reference.model
    # the reference's reset: bias 0, the bias's Adam moments kept
    assert_reset(before, ref_model, trainee, opt, ref_opt, expected, "redo:0", bias_moments="keep")
    assert driver.resets == [2]


def test_redo_with_tau_zero_resets_exactly_the_silent_units_and_its_variants_draw_the_bias():
    model = tiny_model()
    reference, ref_opt, _ = one_step(copy.deepcopy(model), None)
    trainee, opt, driver = one_step(model, [BoundIntervention("redo", {"tau": 0.0, "every": 1})])
    assert_reset(tiny_model(), reference.model, trainee, opt, ref_opt, [1], "redo:0", bias_moments="keep")
    variant = {"tau": 0.0, "every": 1, "reset_bias": "init", "bias_moments": "zero"}
    trainee, opt, driver = one_step(tiny_model(), [BoundIntervention("redo", variant)])
    assert_reset(tiny_model(), reference.model, trainee, opt, ref_opt, [1], "redo:0", bias="init")


def test_redo_normalises_a_units_mean_activity_by_its_layers_mean():
    """Unit 2's mean |activation| is below tau but its score (divided by the layer's mean) is not: only
    the silent unit 1 is reset."""
    m = hidden_mean_abs(tiny_model()).detach()
    score = m / (m.mean() + 1e-9)
    assert m[2] < score[2]
    tau = float(m[2] + score[2]) / 2
    trainee, opt, driver = one_step(tiny_model(), [BoundIntervention("redo", {"tau": tau, "every": 1})])
    assert driver.resets == [1] and float(trainee.model[0].bias[1].detach()) == 0.0


def two_batch_model() -> nn.Sequential:
    """4 -> 3 ReLU -> 2: unit 0 always fires (bias 2), unit 1 never (bias -100), unit 2 = relu(10 x_0)."""
    model = tiny_model()
    with torch.no_grad():
        model[0].weight[2] = torch.tensor([10.0, 0.0, 0.0, 0.0])
        model[0].bias[2] = 0.0
    return model


def two_batches() -> tuple[torch.Tensor, torch.Tensor]:
    """8 samples, two batches of 4: x_0 = +1 in the first, -1 in the second (unit 2 silent there)."""
    x, y = batch()
    x = x.clone()
    x[:4, 0], x[4:, 0] = 1.0, -1.0
    return x, y


def test_redo_scores_the_last_batch_only_and_records_nothing_on_the_other_steps():
    """Unit 2 is dormant only in the second batch: reset under the default (scored on the batch of the
    step ReDo runs after), not under ``since_last_call`` (the mean over both batches)."""
    x, y = two_batches()
    for score_on, expected in (("last_batch", [1, 2]), ("since_last_call", [1])):
        model = two_batch_model()
        trainee = SingleModel(model)
        bound = [BoundIntervention("redo", {"tau": 0.1, "every": 2, "score_on": score_on})]
        driver = started(bound, trainee)
        opt = Adam(trainee.optimizer_params(), lr=0.01)
        recorded = []
        add = driver.recorders[0].add
        driver.recorders[0].add = lambda *a: (recorded.append(driver.steps + 1), add(*a))
        # what the scores are by hand: the second batch's forward runs with the weights after step 1
        after_one = two_batch_model()
        opt1 = Adam(after_one.parameters(), lr=0.01)
        loss = nn.functional.cross_entropy(after_one(x[:4]), y[:4])
        loss.backward()
        opt1.step()
        both = (hidden_mean_abs(two_batch_model(), x[:4]) + hidden_mean_abs(after_one, x[4:])) / 2
        last = hidden_mean_abs(after_one, x[4:])
        m = last if score_on == "last_batch" else both
        assert [u for u in range(3) if m[u] / (m.mean() + 1e-9) <= 0.1] == expected
        train_epoch(trainee, opt, x, y, torch.arange(8).unsqueeze(0), 4, [driver])
        assert driver.resets == [len(expected)]
        assert recorded == ([2] if score_on == "last_batch" else [1, 2])  # one unit layer: one add per batch
        assert all(float(model[0].bias[u].detach()) == 0.0 for u in expected)  # the reference's bias: 0
        assert all(torch.all(model[2].weight[:, u] == 0) for u in expected)
        assert float(model[0].bias[0].detach()) != 0.0


def utility_model() -> nn.Sequential:
    """4 -> 3 ReLU -> 2, every unit firing; unit 0 the least active but with large outgoing weights, so
    its utility (mean |activation| x mean |outgoing weight|) is not the lowest."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.1, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]))
        model[0].bias.copy_(torch.tensor([1.0, 3.0, 3.0]))
        model[2].weight.copy_(torch.tensor([[5.0, 0.1, 0.2], [-5.0, 0.2, -0.1]]))
        model[2].bias.copy_(torch.tensor([0.3, -0.2]))
    return model


@pytest.mark.parametrize("stacked", [False, True], ids=["single", "stacked"])
def test_continual_backprop_replaces_the_lowest_utility_unit_not_the_least_active(stacked):
    model = utility_model()
    reference, ref_opt, _ = one_step(copy.deepcopy(model), None)
    # after one step every unit is one step old (mature at maturity 0); its bias-corrected utility is
    # (1 - d) u / (1 - d^1) = mean |activation| (this batch) x mean |outgoing weight| (after the step);
    # 0.5 x 3 eligible units are due: one unit, the lowest in utility, is replaced, 0.5 carried
    activity = hidden_mean_abs(utility_model())
    utility = activity * reference.model[2].weight.detach().abs().mean(0)
    expected = [int(utility.argmin())]
    assert int(activity.argmin()) == 0 and expected != [0]
    trainee, opt, driver = one_step(model, [BoundIntervention("cbp", {"replacement_rate": 0.5, "maturity": 0})],
                                    stacked)
    assert_reset(utility_model(), reference.model, trainee, opt, ref_opt, expected, "cbp:0", per_entry_step=True)
    state = driver.bound[0].state
    assert state["due0"].tolist() == [0.5]
    assert state["age0"][0, expected[0]] == 0 and state["utility0"][0, expected[0]] == 0
    others = [u for u in range(3) if u not in expected]
    assert torch.allclose(state["utility0"][0, others] / (1 - 0.99), utility[others], rtol=1e-5)


def test_continual_backprop_leaves_immature_units_alone():
    trainee, opt, driver = one_step(tiny_model(), [BoundIntervention("cbp", {"replacement_rate": 0.5,
                                                                             "maturity": 1})])
    assert driver.resets == [0]


def test_continual_backprop_bias_compensation_adds_outgoing_weight_times_mean_activation():
    """Under ``bias_compensation: mean_activation`` the next layer's bias after a replacement is the old
    bias + w_out x the unit's bias-corrected running mean activation (after one step: the batch's mean
    activation); under the default (the reference as it runs: gnt.py zeroes the mean first) it is kept."""
    x, _ = batch()
    reference, _, _ = one_step(utility_model(), None)
    options = {"replacement_rate": 0.5, "maturity": 0}
    trainee, _, driver = one_step(utility_model(), [BoundIntervention("cbp", options)])
    (unit,) = [u for u in range(3) if float(trainee.model[0].bias[u].detach()) == 0.0]
    assert torch.equal(trainee.model[2].bias, reference.model[2].bias)
    trainee, _, driver = one_step(utility_model(), [BoundIntervention("cbp", {**options,
                                                                              "bias_compensation": "mean_activation"})])
    model = utility_model()
    mean = model[1](model[0](x)).mean(0)[unit]  # the forward of step 1 ran with the initial weights
    expected = reference.model[2].bias + reference.model[2].weight[:, unit] * mean
    assert torch.allclose(trainee.model[2].bias, expected, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(trainee.model[2].bias, reference.model[2].bias)
    assert float(driver.bound[0].state["mean_activation0"][0, unit]) == 0.0


@pytest.mark.parametrize("stacked", [False, True], ids=["single", "stacked"])
def test_continual_backprop_restarts_adams_bias_correction_of_exactly_the_replaced_entries(stacked):
    """AdamGnT: the replaced entries' step counts are 0 after the reset, so their next update uses step 1
    (m / (1 - b1), v / (1 - b2)); every other entry's uses step 2. ``adam_step: per_tensor`` keeps one
    count per tensor (and the next update uses step 2 everywhere)."""
    for adam_step in ("per_entry", "per_tensor"):
        options = {"replacement_rate": 0.5, "maturity": 0, "adam_step": adam_step}
        trainee, opt, driver = one_step(utility_model(), [BoundIntervention("cbp", options)], stacked)
        (unit,) = [u for u in range(3) if float(trainee.param_rows("0.bias")[0, u].detach()) == 0.0]
        leaf = trainee.leaf("2.weight")
        state = opt.state[leaf]
        if adam_step == "per_tensor":
            assert state["step"].dim() == 0 and float(state["step"]) == 1.0
        else:
            step = state["step"] if stacked else state["step"].unsqueeze(0)
            expected = torch.ones_like(step)
            expected[0, :, unit] = 0
            assert torch.equal(step, expected)
        # a second step with a known gradient
        grad = torch.linspace(-1.0, 1.0, leaf.numel()).reshape(leaf.shape)
        m0, v0 = state["exp_avg"].clone(), state["exp_avg_sq"].clone()
        before = leaf.detach().clone()
        opt.zero_grad()
        for p in trainee.optimizer_params():
            p.grad = grad if p is leaf else torch.zeros_like(p)
        opt.step()
        b1, b2, lr, eps = 0.9, 0.999, 0.01, 1e-8
        m, v = b1 * m0 + (1 - b1) * grad, b2 * v0 + (1 - b2) * grad * grad
        t = torch.full_like(leaf, 2.0)
        if adam_step == "per_entry":
            (t if stacked else t.unsqueeze(0))[0, :, unit] = 1.0
        expected = before - lr / (1 - b1 ** t) * m / (v.sqrt() / (1 - b2 ** t).sqrt() + eps)
        assert torch.allclose(leaf.detach() - before, expected - before, rtol=1e-4, atol=1e-9)
        step_one = (leaf.detach() - before if stacked else (leaf.detach() - before).unsqueeze(0))[0, :, unit]
        g = (grad if stacked else grad.unsqueeze(0))[0, :, unit]
        if adam_step == "per_entry":  # a fresh entry's first update: -lr g / (|g| + eps)
            assert torch.allclose(step_one, -lr * g / (g.abs() + eps), rtol=1e-5)
        else:
            assert not torch.allclose(step_one, -lr * g / (g.abs() + eps), rtol=1e-3)


def snr_batches(pattern: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of 4 per character: unit 2 of ``two_batch_model`` fires in a batch marked 'f' (x_0 =
    +1 for its samples) and is silent (x_0 = -1, pre-activation -10) in one marked '.'."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4 * len(pattern), 4, generator=g)
    y = torch.randint(0, 2, (4 * len(pattern),), generator=g)
    for i, c in enumerate(pattern):
        x[4 * i:4 * i + 4, 0] = 1.0 if c == "f" else -1.0
    return x, y


def run_snr(model: nn.Module, pattern: str, options: dict, bound=None, driver=None, trainee=None, opt=None):
    x, y = snr_batches(pattern)
    trainee = trainee or SingleModel(model)
    bound = bound or [BoundIntervention("snr", options)]
    driver = driver or started(bound, trainee)
    opt = opt or Adam(trainee.optimizer_params(), lr=1e-4)
    train_epoch(trainee, opt, x, y, torch.arange(len(x)).unsqueeze(0), 4, [driver])
    return bound, driver, trainee, opt


def test_snr_threshold_is_the_percentile_of_exact_silences_recorded_since_the_last_update():
    """Unit 2 fires in batches 1, 3 and 7 (of 4 samples): silences of 4 and 12 samples end at steps 3
    and 7 (the firing at step 1 ends none: zero-length, not recorded). At step 7 the thresholds update:
    unit 2's to the 0.99 percentile of {4, 12} (12; 0.5: 4), lower than the initial max_age 64. Unit 0
    fires every batch and unit 1 never, so neither ends a silence: their record is empty and their
    thresholds go to 1, then up to the batch size, 4. The record is cleared: when unit 2 then fires in
    every batch, its threshold goes to 4 at the next update; kept, it would stay 12 and grow to 24."""
    for percentile, expected in ((0.99, 12.0), (0.5, 4.0)):
        options = {"percentile": percentile, "threshold_every": 7, "max_age": 64}
        bound, driver, trainee, opt = run_snr(two_batch_model(), "f.f...f", options)
        state = bound[0].state
        assert state["threshold0"][0].tolist() == [4.0, 4.0, expected]
        assert driver.resets == [0] and state["age0"][0].tolist() == [0.0, 28.0, 0.0]
    run_snr(None, "fffffff", options, bound, driver, trainee, opt)
    assert state["threshold0"][0, 2] == 4.0
    assert driver.resets == [1]  # unit 1, silent for 32 samples >= its threshold 4, at step 8


def test_snr_fires_on_the_pre_activation_and_resets_a_silent_tanh_unit():
    """tanh(-100) = -1 is never 0, so a unit whose pre-activation is never > 0 is silent: with max_age 8
    (the initial threshold), its age reaches 8 samples after two batches of 4 and it is reset then."""
    model = two_batch_model()
    model[1] = nn.Tanh()
    bound, driver, trainee, _ = run_snr(model, "ff", {"max_age": 8, "threshold_every": 1000})
    assert driver.resets == [1]
    assert float(model[0].bias[1].detach()) == 0.0 and torch.all(model[2].weight[:, 1] == 0)
    fresh = fresh_rows(two_batch_model()[0], "snr:1")
    assert torch.equal(model[0].weight[1], fresh["weight"][1])
    assert bound[0].state["age0"][0].tolist() == [0.0, 0.0, 0.0]


def test_the_sequential_chain_finds_linear_units_and_conv_channels_through_norms_and_pooling():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 5), nn.Tanh(), nn.Linear(5, 2))
    assert [(u.producer, u.activation, u.consumer) for u in sequential_unit_layers(mlp)] == [
        ("1", "2", "3"), ("3", "4", "5")]
    conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(4 * 2 * 2, 3))
    (layer,) = sequential_unit_layers(conv)
    assert (layer.producer, layer.norm, layer.activation, layer.consumer, layer.span, layer.channels_first) == (
        "0", "1", "2", "5", 4, True)


# -- every registered intervention, through planned runs ---------------------------------------------------

def test_every_registered_intervention_has_resetting_settings_here():
    assert sorted(INTERVENTIONS) == sorted([*RESETTING, *OPTIMISER_REMEDIES])


def relu_spec(seed: int, name: str, **fields):
    return spec(seed, max_epochs=fields.pop("max_epochs", 8), interventions=(InterventionSpec(name, RESETTING[name]),),
                **fields).replace(model=ModelSpec("mlp", {"hidden": 32, "activation": "relu"}))


@pytest.mark.parametrize("name", sorted(RESETTING))
def test_an_intervention_resets_units_with_the_same_bits_alone_and_in_a_stack(inputs, tmp_path, name):
    alone = train(inputs, [relu_spec(1, name)], tmp_path / "alone")[0]
    stacked = train(inputs, [relu_spec(s, name) for s in range(3)], tmp_path / "stack")
    assert_same_files(alone, stacked[1])
    assert json.loads((alone / "metrics.json").read_text())["units_reset"] > 0
    without = train(inputs, [relu_spec(1, name).replace(interventions=())], tmp_path / "without")[0]
    a, b = load_torch(alone / "model.pt"), load_torch(without / "model.pt")
    assert not all(torch.equal(a[k], b[k]) for k in a)  # it acted


class Interrupted(Exception):
    pass


def interrupted_and_resumed(specs, inputs, tmp_path, stop_epoch):
    """Trains the block whole, then killed after `stop_epoch` and resumed; checks the two end the same.

    Returns (whole, the resume file as the kill left it, resumed)."""
    from warmstart.components.datasets import load_prepared
    from warmstart.components.splits import load_split

    data = load_prepared(inputs / "data.pt", torch.device("cpu"))
    splits = [load_split(inputs / f"split{s.seed}.pt") for s in specs]

    def trained(on_epoch=None, path=tmp_path / "resume.pt"):
        return run_block(specs, data, splits, [None] * len(specs), log=None, on_epoch=on_epoch,
                         checkpointing=Checkpointing(path, every_s=0, tag="t"))

    whole = trained(path=tmp_path / "whole.pt")

    def stop(i, record):
        if record["epoch"] == stop_epoch:
            raise Interrupted
    with pytest.raises(Interrupted):
        trained(stop)
    saved = load_torch(tmp_path / "resume.pt")
    resumed = trained()
    for (m1, r1, _), (m2, r2, _) in zip(whole, resumed):
        assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
        assert untimed(r1.history) == untimed(r2.history)
    return whole, saved, resumed


@pytest.mark.parametrize("name", sorted(RESETTING))
def test_a_run_interrupted_between_two_interventions_resumes_to_the_same_bits(inputs, tmp_path, name):
    whole, saved, resumed = interrupted_and_resumed([relu_spec(s, name) for s in range(2)], inputs, tmp_path, 5)
    assert len(saved["histories"][0]) == 4 and saved["hooks"][-1]["steps"] > 0  # the interventions' hook
    for (_, r1, _), (_, r2, _) in zip(whole, resumed):
        assert r1.units_reset == r2.units_reset > 0


@pytest.mark.parametrize("name", sorted(RESETTING))
def test_an_intervention_acts_in_every_round_of_an_online_stream(inputs, name):
    from warmstart.components.datasets import load_prepared
    from warmstart.components.splits import load_split
    from warmstart.core.spec import InitSpec
    from warmstart.jobs.train_streams import run_stream

    data = load_prepared(inputs / "data.pt", torch.device("cpu"))
    split = load_split(inputs / "split0.pt")
    template = relu_spec(0, name, max_epochs=6)
    rounds = [run_stream(StreamSpec(t, init=InitSpec("warm"), round_size=200, max_samples=400), data, split)
              for t in (template, template.replace(interventions=()))]
    assert len(rounds[0]) == 2
    assert [r["val_acc"] for r in rounds[0]] != [r["val_acc"] for r in rounds[1]]


# Small options of every registered model, for an intervention's planned run; a model added to the
# registry without an entry fails the suite (None: the model has no unit layers, with the reason).
SMALL_MODELS = {
    "mlp": {"hidden": 16, "activation": "relu"},
    "logreg": None,  # no hidden layer: its only units are the classes, never reset
    "resnet18": {"width": 4},
    "vgg16": {"width": 4},
    "vit": {"dim": 16, "depth": 2, "heads": 2, "patch": 8},
    "torchvision": None,  # torchvision's modules declare no unit layers: refused when the job starts
    "python": None,  # the user's module: unit layers if it is an nn.Sequential chain or says unit_layers()
}


def test_every_registered_model_says_whether_interventions_reach_it():
    from warmstart.components.models import MODELS

    assert sorted(MODELS) == sorted(SMALL_MODELS)


@pytest.mark.parametrize("arch", sorted(a for a, o in SMALL_MODELS.items() if o))
def test_redo_resets_units_of_every_architecture_in_a_planned_run(inputs, tmp_path, arch):
    """Linear units (MLP), conv channels (ResNet-18's inner block channels, VGG-16), a ViT's MLP units."""
    run = spec(0, max_epochs=1, interventions=(InterventionSpec("redo", {"tau": 0.9, "every": 3}),)).replace(
        model=ModelSpec(arch, SMALL_MODELS[arch]))
    out = train(inputs, [run], tmp_path)[0]
    assert json.loads((out / "metrics.json").read_text())["units_reset"] > 0
