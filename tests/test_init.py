"""The paper's two phase-2 conditions: a warm start begins from exactly the phase-1 model's final
weights (BatchNorm statistics included); a random start is a fresh initialisation under the same seed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from warmstart.components.datasets import DeviceData, load_prepared, load_raw, prepare_dataset
from warmstart.core.errors import SpecError
from warmstart.components.inits import InitContext, initialise
from warmstart.core.io import load_torch
from warmstart.components.models import build_model
from warmstart.jobs.seed_start import start_seed
from warmstart.jobs.train_block import run_training
from warmstart.jobs.train_runs import execute_run
from warmstart.plan.spec_checks import check_names
from warmstart.core.spec import DatasetSpec, InitSpec, ModelSpec, OptimizerSpec, RunSpec, StopSpec
from warmstart.components.splits import make_split, save_split

DATASET = DatasetSpec("mnist1d", {"num_samples": 1000})



@pytest.fixture(scope="module")
def data(tmp_path_factory) -> DeviceData:
    raw = load_raw("mnist1d", tmp_path_factory.mktemp("mnist1d"), **DATASET.options)
    return DeviceData(raw.x_train, raw.y_train, raw.x_test, raw.y_test, raw.num_classes, raw.input_shape)


@pytest.fixture(scope="module")
def split(data):
    return make_split(len(data.x_train), seed=0)


def phase1_spec(**changes) -> RunSpec:
    base = dict(dataset=DATASET, model=ModelSpec("resnet18", {"width": 4}),
                optimizer=OptimizerSpec("adam", lr=0.01), batch_size=64,
                stop=StopSpec("epochs", max_epochs=2), seed=0, train_fraction=0.5)
    base.update(changes)
    return RunSpec(**base)


def phase2_spec(parent: RunSpec, init: str) -> RunSpec:
    return parent.replace(train_fraction=1.0, init=InitSpec(init), parent=parent if init == "warm" else None)


@pytest.fixture(scope="module")
def parent(data, split):
    """A briefly trained phase-1 run: (spec, its final state dict as a detached copy, its metrics)."""
    spec = phase1_spec()
    model, result, metrics = run_training(spec, data, split, None, log=None)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return spec, state, metrics


def initial_model(spec: RunSpec, data: DeviceData, parent_state: dict | None) -> nn.Module:
    """The model a run starts training from (its seed, its init strategy, its parent)."""
    return start_seed(spec, data, make_split(len(data.x_train), spec.seed), parent_state).model


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def test_the_planner_gives_the_warm_start_its_phase1_run_as_parent_and_the_random_start_none():
    """Table 1's phase 2: each warm run starts from the phase-1 run of its seed and condition (trained on
    half the pool); each random run starts from no parent and is the table's baseline."""
    import yaml

    from warmstart.plan.experiments import plan_experiments

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    planned = plan_experiments(config, only=["table1"]).experiments["table1"]
    condition = lambda p: tuple(p.labels[k] for k in ("dataset", "model", "optimizer", "seed"))  # noqa: E731
    phase1 = {condition(p): p.spec for p in planned if p.labels["phase"] == 1}
    phase2 = [p for p in planned if p.labels["phase"] == 2]
    assert {p.labels["init"] for p in phase2} == {"warm", "random"} and len(phase2) == 2 * len(phase1)
    for p in phase2:
        s, parent = p.spec, phase1[condition(p)]
        assert parent.train_fraction == 0.5 and s.train_fraction == 1.0
        if p.labels["init"] == "warm":
            assert s.parent == parent and p.labels["baseline"] is False
        else:
            assert s.parent is None and p.labels["baseline"] is True


def test_phase1_trains_on_half_the_pool(parent, split):
    _, _, metrics = parent
    assert metrics["n_train"] == round(0.5 * len(split.pool)) and metrics["n_val"] == len(split.validation)
    assert metrics["epochs"] == 2 and metrics["stopped_by"] == "epochs"


def test_a_warm_start_begins_from_exactly_the_parents_final_weights_and_buffers(data, parent):
    spec, state, _ = parent
    child = phase2_spec(spec, "warm")
    model = initial_model(child, data, state)
    child_state = model.state_dict()
    assert states_equal(child_state, state)
    # the comparison covers trained BatchNorm statistics, not just parameters
    buffers = {k for k, _ in model.named_buffers()}
    assert any(k.endswith("running_mean") for k in buffers) and any(k.endswith("num_batches_tracked") for k in buffers)
    fresh = build_model(spec.model, data.input_shape, data.num_classes).state_dict()
    for k in buffers:
        assert not torch.equal(state[k], fresh[k]), f"{k} was not trained, so the test would not see it"
    # copied, not shared: training the child cannot alter the parent's weights
    assert all(child_state[k].data_ptr() != state[k].data_ptr() for k in state)


def test_a_random_start_is_a_fresh_init_and_ignores_the_parent(data, split, parent):
    spec, state, _ = parent
    child = phase2_spec(spec, "random")
    model = initial_model(child, data, None)
    assert not states_equal(model.state_dict(), state)
    params = {k for k, _ in model.named_parameters()}
    assert all(not torch.equal(model.state_dict()[k], state[k]) for k in params)
    # it is the same fresh init the parent started from (the seed fixes the initialisation) ...
    parent_start = initial_model(spec, data, None)
    assert states_equal(model.state_dict(), parent_start.state_dict())
    # ... and handing it the parent's weights changes nothing
    with_parent = initial_model(child, data, state)
    assert states_equal(with_parent.state_dict(), model.state_dict())


def test_initial_model_does_not_depend_on_the_global_rng_state(data):
    spec = phase1_spec()
    torch.manual_seed(123)
    a = initial_model(spec, data, None).state_dict()
    torch.rand(1000)
    b = initial_model(spec, data, None).state_dict()
    assert states_equal(a, b)


def test_warm_strategy_without_parent_weights_raises(data, parent):
    spec, _, _ = parent
    with pytest.raises(SpecError, match=r"^init\.strategy: 'warm'"):
        initialise("warm", {}, InitContext(fresh=nn.Linear(2, 2), seed=0))
    with pytest.raises(SpecError, match=r"^init\.strategy: "):
        initial_model(phase2_spec(spec, "warm"), data, None)


def test_warm_start_from_another_architecture_raises(data, parent):
    spec, state, _ = parent
    child = phase2_spec(spec, "warm").replace(model=ModelSpec("resnet18", {"width": 8}))
    with pytest.raises(RuntimeError, match="size mismatch"):
        initial_model(child, data, state)


def test_strategies_reject_options_they_do_not_take():
    with pytest.raises(SpecError, match=r"^init\.options: unknown option\(s\) \['scale'\]; allowed: \['draw'\]"):
        initialise("random", {"scale": 0.5}, InitContext(fresh=nn.Linear(2, 2), seed=0))
    with pytest.raises(SpecError, match=r"^init\.options\.draw: must be one of \['run_seed', 'new'\]"):
        initialise("random", {"draw": "fresh"}, InitContext(fresh=nn.Linear(2, 2), seed=0))
    with pytest.raises(SpecError, match=r"^init\.options\.optimizer_state: "):
        initialise("warm", {"optimizer_state": "sometimes"},
                   InitContext(fresh=nn.Linear(2, 2), seed=0, parent_state=nn.Linear(2, 2).state_dict()))


def test_runspec_with_warm_init_and_no_parent_raises():
    with pytest.raises(SpecError, match=r"^init\.strategy: .*'warm'.*parent"):
        check_names(phase1_spec(train_fraction=1.0, init=InitSpec("warm")))


def test_warm_child_continues_training_from_the_parent(data, split, parent):
    spec, state, _ = parent
    child = phase2_spec(spec, "warm").replace(stop=StopSpec("epochs", max_epochs=1))
    random = phase2_spec(spec, "random").replace(stop=StopSpec("epochs", max_epochs=1))
    _, warm_result, warm_metrics = run_training(child, data, split, state, log=None)
    _, random_result, _ = run_training(random, data, split, None, log=None)
    assert warm_metrics["n_train"] == len(split.pool)
    # after two epochs of phase 1 the warm model is far ahead of a fresh one after its first epoch
    assert warm_result.final["train_loss"] < random_result.final["train_loss"]


def test_files_carry_the_parents_final_weights_to_the_child(tmp_path, data, parent):
    """execute_run end to end: the parent's model.pt is the child's starting point."""
    spec, state, metrics = parent
    data_path = tmp_path / "data.pt"
    prepare_dataset(DATASET, tmp_path / "raw", False, data_path)
    loaded = load_prepared(data_path)
    assert torch.equal(loaded.x_train, data.x_train)
    split_path = tmp_path / "split.pt"
    save_split(make_split(len(loaded.x_train), spec.seed), split_path)

    parent_dir = tmp_path / spec.name
    parent_metrics = execute_run(spec, data_path, split_path, parent_dir, device="cpu", log=lambda m: None)
    assert sorted(p.name for p in parent_dir.iterdir()) == ["epochs.parquet", "metrics.json", "model.pt", "spec.json"]
    assert RunSpec.from_json((parent_dir / "spec.json").read_text()) == spec
    assert json.loads((parent_dir / "metrics.json").read_text())["run_id"] == spec.run_id
    saved = load_torch(parent_dir / "model.pt")
    # a re-run of the same spec on the same data reproduces the in-memory parent exactly
    assert parent_metrics["train_loss"] == metrics["train_loss"]
    assert states_equal(saved, state)

    child = phase2_spec(spec, "warm")
    model = initial_model(child, loaded, load_torch(parent_dir / "model.pt"))
    assert states_equal(model.state_dict(), state)
    # without the parent's file the warm child cannot start
    with pytest.raises(SpecError, match=r"^init\.strategy: "):
        execute_run(child, data_path, split_path, tmp_path / child.name, None, device="cpu", log=lambda m: None)
