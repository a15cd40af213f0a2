"""Interventions reset units while a run trains: each against a hand computation on a tiny model (which
units, their fresh incoming and zero outgoing weights, their optimiser moments zeroed and no others), and
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

from warmstart.init import derived_seed
from warmstart.interventions import INTERVENTIONS, sequential_unit_layers
from warmstart.io import load_torch
from warmstart.runner import run_block
from warmstart.spec import InterventionSpec, ModelSpec, StopSpec, StreamSpec
from warmstart.train import Checkpointing, RunState, SingleModel, StackedModels, train_epoch
from warmstart.units import BoundIntervention, Interventions

sys.path.insert(0, str(Path(__file__).parent))
from test_same_bits import assert_same_files, inputs, spec, train  # noqa: E402,F401  (a fixture)

SEED = 5

# Options under which each registered intervention resets units in a short run of a small ReLU MLP; an
# intervention added to the registry without an entry here fails the suite.
RESETTING = {
    "redo": {"tau": 0.5, "every": 7},
    "cbp": {"replacement_rate": 0.02, "maturity": 10},
    "snr": {"threshold_every": 5, "max_age": 64},
}


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
    """One optimiser step (Adam) on the batch, through the engine's train_epoch; returns the trainee,
    its optimiser and the driver."""
    trainee = StackedModels([model]) if stacked else SingleModel(model)
    opt = torch.optim.Adam(trainee.optimizer_params(), lr=0.01)
    driver = Interventions(interventions, trainee, [SEED]) if interventions else None
    x, y = batch()
    order = torch.arange(8).unsqueeze(0)
    train_epoch(trainee, opt, x, y, order, 8, RunState(interventions=interventions or []), interventions=driver)
    return trainee, opt, driver


def fresh_rows(layer: nn.Linear, tag: str) -> dict[str, torch.Tensor]:
    """A new draw of ``layer``'s own initialisation under the seed a reset of the run's seed uses."""
    fresh = copy.deepcopy(layer)
    torch.manual_seed(derived_seed(SEED, f"{tag}:0"))
    fresh.reset_parameters()
    return {"weight": fresh.weight.detach(), "bias": fresh.bias.detach()}


def hidden_mean_abs(model: nn.Module) -> torch.Tensor:
    x, _ = batch()
    return model[1](model[0](x)).abs().mean(0)


def assert_reset(model, reference, trainee, opt, ref_opt, units: list[int], tag: str) -> None:
    """Units ``units`` of the hidden layer were reset after the step and nothing else changed."""
    w1, b1, w2 = (trainee.param_rows(n)[0] for n in ("0.weight", "0.bias", "2.weight"))
    others = [u for u in range(3) if u not in units]
    fresh = fresh_rows(model[0], tag)
    for u in units:
        assert torch.equal(w1[u], fresh["weight"][u]) and torch.equal(b1[u], fresh["bias"][u])
        assert torch.all(w2[:, u] == 0)
    assert torch.equal(w1[others], reference[0].weight[others]) and torch.equal(b1[others], reference[0].bias[others])
    assert torch.equal(w2[:, others], reference[2].weight[:, others])
    assert torch.equal(trainee.param_rows("2.bias")[0], reference[2].bias)
    for name, index in (("0.weight", (units,)), ("0.bias", (units,)), ("2.weight", (slice(None), units))):
        state, ref_state = opt.state[trainee.leaf(name)], ref_opt.state[dict(reference.named_parameters())[name]]
        for key in ("exp_avg", "exp_avg_sq"):
            rows = state[key] if trainee.stacked else state[key].unsqueeze(0)
            assert torch.all(rows[0][index] == 0), (name, key)
            kept = ref_state[key].clone()
            kept[index] = 0
            assert torch.equal(rows[0], kept), (name, key)  # no other moment touched
        assert float(state["step"]) == float(ref_state["step"])  # the step count is per tensor: kept


@pytest.mark.parametrize("stacked", [False, True], ids=["single", "stacked"])
def test_redo_resets_the_units_whose_normalised_activity_is_at_most_tau(stacked):
    model = tiny_model()
    reference, ref_opt, _ = one_step(copy.deepcopy(model), None)
    before = copy.deepcopy(model)
    m = hidden_mean_abs(before)
    score = m / m.mean()
    tau = float(score.detach().sort().values[1]) + 1e-6  # the dead unit and the next least active one
    expected = [u for u in range(3) if score[u] <= tau]
    assert 1 in expected and len(expected) == 2
    trainee, opt, driver = one_step(model, [BoundIntervention("redo", {"tau": tau, "every": 1})], stacked)
    ref_model = reference.model
    assert_reset(before, ref_model, trainee, opt, ref_opt, expected, "redo:0")
    assert driver.resets == [2]


def test_redo_with_tau_zero_resets_exactly_the_silent_units():
    model = tiny_model()
    reference, ref_opt, _ = one_step(copy.deepcopy(model), None)
    trainee, opt, driver = one_step(model, [BoundIntervention("redo", {"tau": 0.0, "every": 1})])
    assert_reset(tiny_model(), reference.model, trainee, opt, ref_opt, [1], "redo:0")


def test_continual_backprop_replaces_the_lowest_utility_mature_unit_when_one_is_due():
    model = tiny_model()
    reference, ref_opt, _ = one_step(copy.deepcopy(model), None)
    # after one step every unit is one step old (mature at maturity 0), its bias-corrected utility is its
    # mean |activation| times the sum of its |outgoing weights| (after the step), and 0.5 x 3 units are
    # due: one unit, the lowest in utility
    utility = hidden_mean_abs(tiny_model()) * reference.model[2].weight.detach().abs().sum(0)
    expected = [int(utility.argmin())]
    trainee, opt, driver = one_step(model, [BoundIntervention("cbp", {"replacement_rate": 0.5, "maturity": 0})])
    assert_reset(tiny_model(), reference.model, trainee, opt, ref_opt, expected, "cbp:0")
    state = driver.bound[0].state
    assert state["due0"].tolist() == [0.5]  # 1.5 due, 1 replaced, the rest carried
    assert state["age0"][0, expected[0]] == 0 and state["utility0"][0, expected[0]] == 0


def test_continual_backprop_leaves_immature_units_alone():
    trainee, opt, driver = one_step(tiny_model(), [BoundIntervention("cbp", {"replacement_rate": 0.5,
                                                                             "maturity": 1})])
    assert driver.resets == [0]


def test_snr_resets_a_unit_silent_for_as_many_samples_as_its_threshold():
    """Thresholds start at max_age; the dead unit's age grows by a batch (8 samples) per step."""
    model = tiny_model()
    bound = [BoundIntervention("snr", {"max_age": 16, "threshold_every": 1000})]
    trainee = SingleModel(model)
    opt = torch.optim.Adam(trainee.optimizer_params(), lr=0.01)
    driver = Interventions(bound, trainee, [SEED])
    x, y = batch()
    order = torch.arange(8).unsqueeze(0)
    train_epoch(trainee, opt, x, y, order, 8, RunState(interventions=bound), interventions=driver)
    assert driver.resets == [0] and bound[0].state["age0"][0].tolist() == [0.0, 8.0, 0.0]
    ref = copy.deepcopy(model)
    ref_opt = copy.deepcopy(opt.state_dict())
    train_epoch(trainee, opt, x, y, order, 8, RunState(interventions=bound), interventions=driver)
    assert driver.resets == [1] and bound[0].state["age0"][0].tolist() == [0.0, 0.0, 0.0]
    assert torch.all(model[2].weight[:, 1] == 0)
    fresh = fresh_rows(ref[0], "snr:1")
    assert torch.equal(model[0].weight[1], fresh["weight"][1])
    assert ref_opt is not None


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
    assert sorted(INTERVENTIONS) == sorted(RESETTING)


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


@pytest.mark.parametrize("name", sorted(RESETTING))
def test_a_run_interrupted_between_two_interventions_resumes_to_the_same_bits(inputs, tmp_path, name):
    from warmstart.datasets import load_prepared
    from warmstart.splits import load_split

    data = load_prepared(inputs / "data.pt", torch.device("cpu"))
    specs = [relu_spec(s, name) for s in range(2)]
    splits = [load_split(inputs / f"split{s.seed}.pt") for s in specs]

    def trained(on_epoch=None, path=tmp_path / "resume.pt"):
        return run_block(specs, data, splits, [None, None], log=None, on_epoch=on_epoch,
                         checkpointing=Checkpointing(path, every_s=0, tag="t"))

    whole = trained(path=tmp_path / "whole.pt")

    def stop_after_epoch_5(i, record):
        if record["epoch"] == 5:
            raise Interrupted
    with pytest.raises(Interrupted):
        trained(stop_after_epoch_5)
    saved = load_torch(tmp_path / "resume.pt")
    assert len(saved["histories"][0]) == 4 and saved["interventions"]["steps"] > 0
    resumed = trained()
    for (m1, r1, x1), (m2, r2, x2) in zip(whole, resumed):
        assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
        assert [{k: v for k, v in e.items() if k != "epoch_time_s"} for e in r1.history] == \
               [{k: v for k, v in e.items() if k != "epoch_time_s"} for e in r2.history]
        assert r1.units_reset == r2.units_reset > 0


@pytest.mark.parametrize("name", sorted(RESETTING))
def test_an_intervention_acts_in_every_round_of_an_online_stream(inputs, name):
    from warmstart.datasets import load_prepared
    from warmstart.splits import load_split
    from warmstart.spec import InitSpec
    from warmstart.streams import run_stream

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
    from warmstart.models import MODELS

    assert sorted(MODELS) == sorted(SMALL_MODELS)


@pytest.mark.parametrize("arch", sorted(a for a, o in SMALL_MODELS.items() if o))
def test_redo_resets_units_of_every_architecture_in_a_planned_run(inputs, tmp_path, arch):
    """Linear units (MLP), conv channels (ResNet-18's inner block channels, VGG-16), a ViT's MLP units."""
    run = spec(0, max_epochs=1, interventions=(InterventionSpec("redo", {"tau": 0.9, "every": 3}),)).replace(
        model=ModelSpec(arch, SMALL_MODELS[arch]))
    out = train(inputs, [run], tmp_path)[0]
    assert json.loads((out / "metrics.json").read_text())["units_reset"] > 0
