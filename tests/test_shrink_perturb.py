"""Shrink-perturb (the authors' form): each parameter is shrink * old + perturb * fresh; it reduces to a
warm start and to a fresh init at the ends of its range, and works in single runs, stacks and streams."""
from __future__ import annotations

import pytest
import torch

from test_stacks import DATASET, SEEDS, assert_same, spec, splits_for
from warmstart.components.datasets import DeviceData, load_raw
from warmstart.core.errors import SpecError
from warmstart.components.inits import InitContext, initialise
from warmstart.components.models import build_model
from warmstart.core.seeds import derived_seed
from warmstart.jobs.seed_start import build_seeded, start_seed
from warmstart.jobs.train_block import run_training, run_training_stacked
from warmstart.plan.spec_checks import check_names
from warmstart.core.spec import InitSpec, ModelSpec, StopSpec, StreamSpec
from warmstart.components.splits import make_split
from warmstart.core.seeds import round_seed
from warmstart.jobs.train_streams import run_stream


def sp(shrink, perturb):
    return InitSpec("shrink_perturb", {"shrink": shrink, "perturb": perturb})


def context(model_spec, shape, classes, parent_state, seed=0):
    def build(s):
        torch.manual_seed(s)
        return build_model(model_spec, shape, classes)
    draws = {}

    def new_model(tag):
        draws[tag] = build(1000 + seed)
        return draws[tag]
    return InitContext(fresh=build(seed), seed=seed, parent_state=parent_state, new_model=new_model), draws


@pytest.fixture(scope="module")
def trained_resnet():
    torch.manual_seed(7)
    model = build_model(ModelSpec("resnet18", {"width": 4}), (3, 8, 8), 3)
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 3, 8, 8))  # BatchNorm statistics that differ from a fresh model's
        for p in model.parameters():
            p.add_(0.5)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_each_parameter_is_shrink_times_old_plus_perturb_times_a_new_draw(trained_resnet):
    ctx, draws = context(ModelSpec("resnet18", {"width": 4}), (3, 8, 8), 3, trained_resnet)
    own_init = {k: v.clone() for k, v in ctx.fresh.state_dict().items()}
    model = initialise("shrink_perturb", {"shrink": 0.4, "perturb": 0.1}, ctx)
    fresh = draws["shrink_perturb"]
    params = {n for n, _ in model.named_parameters()}
    assert any(n.endswith("bn1.weight") for n in params)  # BatchNorm's affine parameters are included
    for name, value in model.state_dict().items():
        if name in params:
            torch.testing.assert_close(value, 0.4 * trained_resnet[name] + 0.1 * fresh.state_dict()[name])
            if value.dim() > 1:  # random weights: the noise is another draw, not the run's own init
                assert not torch.equal(fresh.state_dict()[name], own_init[name]), name
        else:  # running statistics: reset to the fresh model's
            assert torch.equal(value, fresh.state_dict()[name]), name


def test_shrink_one_perturb_zero_is_a_warm_start_and_zero_one_a_fresh_init():
    torch.manual_seed(3)
    parent = build_model(ModelSpec("mlp"), (40,), 10).state_dict()
    ctx, _ = context(ModelSpec("mlp"), (40,), 10, parent)
    warm = initialise("shrink_perturb", {"shrink": 1, "perturb": 0}, ctx)
    assert all(torch.equal(v, parent[k]) for k, v in warm.state_dict().items())
    ctx, draws = context(ModelSpec("mlp"), (40,), 10, parent)
    fresh = initialise("shrink_perturb", {"shrink": 0, "perturb": 1}, ctx)
    assert all(torch.equal(v, draws["shrink_perturb"].state_dict()[k]) for k, v in fresh.state_dict().items())


def test_shrink_perturb_needs_a_parent_and_rejects_unknown_options():
    with pytest.raises(SpecError, match=r"^init\.strategy: 'shrink_perturb' needs a parent"):
        check_names(spec(0, init=sp(0.4, 0.1)))
    with pytest.raises(SpecError, match=r"^init\.options: unknown option\(s\) \['noise'\]"):
        check_names(spec(0, init=InitSpec("shrink_perturb", {"noise": 0.1}), parent=spec(0, train_fraction=0.5)))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    raw = load_raw("mnist1d", tmp_path_factory.mktemp("mnist1d"), **DATASET.options)
    return DeviceData(raw.x_train, raw.y_train, raw.x_test, raw.y_test, raw.num_classes, raw.input_shape)


def test_a_single_run_starts_from_the_shrunk_and_perturbed_parent(data):
    parent = spec(0, train_fraction=0.5, stop=StopSpec("epochs", max_epochs=3))
    split = make_split(len(data.x_train), 0)
    model, _, _ = run_training(parent, data, split, None, log=None)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    child = spec(0, init=sp(0.5, 0.2), parent=parent, stop=StopSpec("epochs", max_epochs=1))
    start = start_seed(child, data, split, state).model.state_dict()
    fresh = start_seed(child.replace(init=sp(0.0, 1.0)), data, split, state).model.state_dict()
    for k in start:
        torch.testing.assert_close(start[k], 0.5 * state[k] + 0.2 * fresh[k])
    _, result, metrics = run_training(child, data, split, state, log=None)
    assert metrics["epochs"] == 1 and result.final["train_acc"] > 0.2


def test_shrink_perturb_stacked_equals_single(data):
    parents = [spec(s, train_fraction=0.5, stop=StopSpec("converged", 0.9, 20)) for s in SEEDS]
    parent_out = run_training_stacked(parents, data, splits_for(parents, data), [None] * 3, log=None)
    states = [{k: v.clone() for k, v in m.state_dict().items()} for m, _, _ in parent_out]
    children = [spec(p.seed, init=sp(0.4, 0.1), parent=p, stop=StopSpec("converged", 0.9, 20)) for p in parents]
    splits = splits_for(children, data)
    stacked = run_training_stacked(children, data, splits, states, log=None)
    assert_same(stacked, [run_training(c, data, s, st, log=None) for c, s, st in zip(children, splits, states)])


def test_each_online_round_starts_from_the_shrunk_and_perturbed_previous_round(monkeypatch):
    from test_streams import record_round_starts, stream, toy_data

    starts, ends = record_round_starts(monkeypatch)
    template = stream(max_samples=150).round
    spec_ = StreamSpec(template, policy="random", init=sp(0.4, 0.1), round_size=50, max_samples=150)
    data = toy_data()
    run_stream(spec_, data, make_split(600, 0), log=None)
    assert len(starts) == 3
    for k in (1, 2):
        # the new draw of round k: the round's own seed, then the strategy's tag
        fresh = build_seeded(template, derived_seed(round_seed(template.seed, k), "shrink_perturb"),
                             data.input_shape, data.num_classes, "cpu").state_dict()
        for name in starts[k]:
            torch.testing.assert_close(starts[k][name], 0.4 * ends[k - 1][name] + 0.1 * fresh[name])
