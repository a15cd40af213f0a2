"""A run's identity is a pure function of everything that changes its results, and nothing else.

The workflow puts ``run_id`` in each run's output directory, so these properties are what make results
content-addressed: an unchanged condition finds its old directory, a changed one never reuses it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from warmstart.core.errors import SpecError
from warmstart.plan.spec_checks import check_names
from warmstart.core.spec import (DatasetSpec, InitSpec, InterventionSpec, ModelSpec, OptimizerSpec, ProbeSpec, RunSpec,
                            StopSpec, StreamSpec, TermSpec)


def make_spec(**changes) -> RunSpec:
    base = dict(
        dataset=DatasetSpec("mnist1d", {"num_samples": 1000, "seed": 3}),
        model=ModelSpec("resnet18", {"width": 16}),
        optimizer=OptimizerSpec("sgd", lr=0.001),
        batch_size=128,
        stop=StopSpec("converged", threshold=0.99, max_epochs=500),
        seed=0,
        train_fraction=0.5,
    )
    base.update(changes)
    return RunSpec(**base)


def warm_child(parent: RunSpec) -> RunSpec:
    return parent.replace(train_fraction=1.0, init=InitSpec("warm"), parent=parent)


def test_run_id_is_a_pure_function_of_the_content():
    a = make_spec(dataset=DatasetSpec("mnist1d", {"num_samples": 1000, "seed": 3}),
                  model=ModelSpec("mlp", {"hidden": 100, "depth": 3, "activation": "tanh"}))
    b = make_spec(dataset=DatasetSpec("mnist1d", {"seed": 3, "num_samples": 1000}),
                  model=ModelSpec("mlp", {"activation": "tanh", "depth": 3, "hidden": 100}))
    assert a is not b and a == b
    assert a.run_id == b.run_id and a.name == b.name
    assert len(a.run_id) == 12 and all(c in "0123456789abcdef" for c in a.run_id)
    assert warm_child(a).run_id == warm_child(b).run_id


def test_run_id_is_the_same_in_another_process_with_another_hash_seed():
    # Python's str hash is salted per process; an id built on it would change between workflow jobs.
    spec = warm_child(make_spec())
    code = ("import sys; from warmstart.core.spec import RunSpec; "
            "print(RunSpec.from_json(sys.stdin.read()).run_id)")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], input=spec.to_json(), capture_output=True,
                         text=True, env=env, check=True)
    assert out.stdout.strip() == spec.run_id


RESULT_CHANGES = {
    "lr": dict(optimizer=OptimizerSpec("sgd", lr=0.01)),
    "optimizer name": dict(optimizer=OptimizerSpec("adam", lr=0.001)),
    "weight_decay": dict(optimizer=OptimizerSpec("sgd", lr=0.001, weight_decay=5e-4)),
    "momentum": dict(optimizer=OptimizerSpec("sgd", lr=0.001, momentum=0.9)),
    "seed": dict(seed=1),
    "train_fraction": dict(train_fraction=1.0),
    "validation_fraction": dict(validation_fraction=0.2),
    "batch_size": dict(batch_size=64),
    "model option": dict(model=ModelSpec("resnet18", {"width": 64})),
    "arch": dict(model=ModelSpec("mlp")),
    "dataset option": dict(dataset=DatasetSpec("mnist1d", {"num_samples": 1000, "seed": 4})),
    "dataset": dict(dataset=DatasetSpec("cifar10")),
    "threshold": dict(stop=StopSpec("converged", threshold=0.9, max_epochs=500)),
    "max_epochs": dict(stop=StopSpec("converged", threshold=0.99, max_epochs=100)),
    "stop rule": dict(stop=StopSpec("epochs", max_epochs=500)),
    "loss term": dict(terms=(TermSpec("l2", {"coef": 0.01}),)),
    "loss term option": dict(terms=(TermSpec("l2", {"coef": 0.001}),)),
    "init option": dict(init=InitSpec("random", {"scale": 0.5})),
}


def test_every_field_that_affects_results_changes_the_id():
    base = make_spec()
    ids = {"base": base.run_id}
    for label, change in RESULT_CHANGES.items():
        ids[label] = make_spec(**change).run_id
    # a parent (with the warm init it requires) and the init strategy alone
    ids["parent"] = make_spec(init=InitSpec("warm"), parent=make_spec(train_fraction=0.25)).run_id
    ids["random init with a parent"] = make_spec(parent=make_spec(train_fraction=0.25)).run_id
    assert len(set(ids.values())) == len(ids), ids


def test_what_only_measures_or_keeps_files_does_not_change_the_id():
    base = make_spec(stop=StopSpec("converged", 0.99, max_epochs=50))
    measured = base.replace(probes=(ProbeSpec("grad_norm", {"subsets": ["train"]}),), checkpoints=(5, 10),
                            keep_optimizer=True)
    assert measured.run_id == base.run_id and measured.name == base.name
    # ... but it is in the spec a job reads, and survives the round trip
    back = RunSpec.from_json(measured.to_json())
    assert back == measured and back.probes == measured.probes and back.checkpoints == (5, 10)


def test_a_child_of_a_checkpoint_is_another_run_than_the_child_of_the_final_weights():
    parent = make_spec(stop=StopSpec("converged", 0.99, max_epochs=50), checkpoints=(5, 10))
    final = warm_child(parent)
    at5, at10 = final.replace(parent_epoch=5), final.replace(parent_epoch=10)
    assert len({final.run_id, at5.run_id, at10.run_id}) == 3
    assert RunSpec.from_json(at5.to_json()) == at5


def test_runs_made_before_terms_probes_and_checkpoints_existed_keep_their_ids():
    # Pinned from the spine's first runs: a new field enters the identity only when it is set.
    spec = make_spec()
    assert set(spec.canonical()) == {"dataset", "model", "optimizer", "batch_size", "stop", "seed",
                                     "train_fraction", "validation_fraction", "init", "parent"}


@pytest.mark.parametrize("registry, revise", [
    ("init", lambda s: s.replace(init=InitSpec("fire"), parent=make_spec())),
    ("term", lambda s: s.replace(terms=(TermSpec("parseval", {"coef": 1e-3}),))),
    ("intervention", lambda s: s.replace(interventions=(InterventionSpec("redo", {"tau": 0.5}),))),
    ("optimizer", lambda s: s.replace(optimizer=OptimizerSpec("muon", lr=0.01))),
])
def test_a_revised_method_gives_its_runs_new_ids_and_leaves_the_others_theirs(registry, revise, monkeypatch):
    # A method whose computation was corrected must not find the earlier code's results under its old id
    from warmstart.core.identity import method_registries

    methods = method_registries()[registry]
    spec, plain = revise(make_spec()), make_spec()
    name = {"init": lambda: spec.init.strategy, "term": lambda: spec.terms[0].name,
            "intervention": lambda: spec.interventions[0].name, "optimizer": lambda: spec.optimizer.name}[registry]()
    before, plain_before = spec.run_id, plain.run_id
    monkeypatch.setitem(methods._revisions, name, methods.revision(name) + 1)
    again, plain_again = revise(make_spec()), make_spec()  # fresh specs: ids are cached per object
    assert again.run_id != before
    assert plain_again.run_id == plain_before


def test_a_revised_init_gives_its_streams_new_ids_and_a_stored_spec_of_it_reads_back():
    from warmstart.core.identity import method_registries

    stream = lambda: StreamSpec(make_spec(), init=InitSpec("fire"))  # noqa: E731
    before = stream()
    assert RunSpec.from_json(before.round.to_json()) == before.round
    assert StreamSpec.from_dict(json.loads(json.dumps(before.to_dict()))).stream_id == before.stream_id
    strategies = method_registries()["init"]
    old = strategies.revision("fire")
    strategies._revisions["fire"] = old + 1
    try:
        assert stream().stream_id != before.stream_id
    finally:
        strategies._revisions["fire"] = old


def test_methods_never_revised_add_nothing_to_an_identity():
    spec = make_spec(terms=(TermSpec("l2", {"coef": 0.1}),))
    assert "revision" not in spec.canonical()["init"] and "revision" not in spec.canonical()["terms"][0]
    assert "revision" not in spec.canonical()["optimizer"]


def test_a_stream_round_template_carries_its_terms_into_the_stream_id():
    template = make_spec(train_fraction=1.0)
    plain = StreamSpec(template, init=InitSpec("warm"))
    penalised = StreamSpec(template.replace(terms=(TermSpec("l2", {"coef": 0.01}),)), init=InitSpec("warm"))
    probed = StreamSpec(template.replace(probes=(ProbeSpec("grad_norm"),)), init=InitSpec("warm"))
    assert plain.stream_id != penalised.stream_id
    assert plain.stream_id == probed.stream_id
    assert StreamSpec.from_dict(penalised.to_dict()) == penalised


def test_a_fixed_epochs_run_ignores_the_threshold():
    a = make_spec(stop=StopSpec("epochs", threshold=0.99, max_epochs=350))
    b = make_spec(stop=StopSpec("epochs", threshold=0.5, max_epochs=350))
    assert a.run_id == b.run_id
    # ... but a converged run's threshold is part of what it did
    c = make_spec(stop=StopSpec("converged", threshold=0.99, max_epochs=350))
    d = make_spec(stop=StopSpec("converged", threshold=0.5, max_epochs=350))
    assert c.run_id != d.run_id


def test_a_childs_id_changes_when_its_parent_changes():
    parent = make_spec()
    other_parent = make_spec(optimizer=OptimizerSpec("sgd", lr=0.01))
    child = warm_child(parent)
    # the same child fields, started from another parent
    moved = child.replace(parent=other_parent)
    assert moved.optimizer == child.optimizer and moved.train_fraction == child.train_fraction
    assert moved.run_id != child.run_id
    # and the change propagates through a chain (grandparent -> parent -> child)
    assert warm_child(moved).run_id != warm_child(child).run_id


@pytest.mark.parametrize("spec", [
    make_spec(),
    warm_child(make_spec()),
    make_spec(stop=StopSpec("epochs", threshold=0.5, max_epochs=350), init=InitSpec("random"),
              optimizer=OptimizerSpec("adam", lr=3e-4, weight_decay=1e-5)),
], ids=["plain", "warm-child", "fixed-epochs"])
def test_json_round_trip_gives_an_equal_spec_with_the_same_id(spec):
    text = spec.to_json()
    back = RunSpec.from_json(text)
    assert back == spec and back.run_id == spec.run_id and back.name == spec.name
    assert back.parent == spec.parent
    assert back.stop == spec.stop  # the full stop rule survives, threshold included
    assert json.loads(text)["run_id"] == spec.run_id
    assert back.to_json() == text


def test_from_dict_rejects_a_tampered_run_id():
    child = warm_child(make_spec())
    d = json.loads(child.to_json())
    d["run_id"] = "0" * 12
    with pytest.raises(SpecError, match=r"^run_id: "):
        RunSpec.from_dict(d)

    # changing the content but keeping the stored id is caught too ...
    d = json.loads(child.to_json())
    d["optimizer"]["lr"] = 0.5
    with pytest.raises(SpecError, match=r"^run_id: "):
        RunSpec.from_dict(d)
    # ... also when the edit is in the parent's record
    d = json.loads(child.to_json())
    d["parent"]["optimizer"]["lr"] = 0.5
    with pytest.raises(SpecError, match=r"^run_id: "):
        RunSpec.from_dict(d)


INVALID = [
    ("optimizer.lr", dict(optimizer=OptimizerSpec("sgd", lr=0.0))),
    ("optimizer.lr", dict(optimizer=OptimizerSpec("sgd", lr=-0.1))),
    ("optimizer.lr", dict(optimizer=OptimizerSpec("sgd", lr=float("nan")))),
    ("optimizer.lr", dict(optimizer=OptimizerSpec("sgd", lr=float("inf")))),
    ("optimizer.weight_decay", dict(optimizer=OptimizerSpec("sgd", lr=0.1, weight_decay=-1.0))),
    ("optimizer.momentum", dict(optimizer=OptimizerSpec("sgd", lr=0.1, momentum=1.0))),
    ("batch_size", dict(batch_size=0)),
    ("batch_size", dict(batch_size=12.5)),
    ("seed", dict(seed=-1)),
    ("seed", dict(seed=1.0)),
    ("train_fraction", dict(train_fraction=0.0)),
    ("train_fraction", dict(train_fraction=1.5)),
    ("validation_fraction", dict(validation_fraction=0.0)),
    ("validation_fraction", dict(validation_fraction=1.0)),
    ("stop.rule", dict(stop=StopSpec("forever"))),
    ("stop.threshold", dict(stop=StopSpec(threshold=0.0))),
    ("stop.threshold", dict(stop=StopSpec(threshold=1.01))),
    ("stop.max_epochs", dict(stop=StopSpec(max_epochs=0))),
    ("stop.max_epochs", dict(stop=StopSpec(max_epochs=10.0))),
    ("parent.seed", dict(init=InitSpec("warm"), parent="seed-1 parent")),
    ("parent_epoch", dict(init=InitSpec("warm"), parent="seed-1 parent", parent_epoch=3)),
    ("checkpoints", dict(checkpoints=(0,))),
    ("terms", dict(terms=(TermSpec("l2"), TermSpec("l2")))),
]

# Names that refer to a registry are checked against it where they are used (check_names, the planner)
UNKNOWN_NAMES = [
    ("optimizer.name", dict(optimizer=OptimizerSpec("rmsprop", lr=0.1))),
    ("optimizer.momentum", dict(optimizer=OptimizerSpec("adam", lr=0.1, momentum=0.9))),
    ("model.arch", dict(model=ModelSpec("resnet34"))),
    ("init.strategy", dict(init=InitSpec("bogus"))),
    ("init.strategy", dict(init=InitSpec("warm"))),  # warm with no parent
    ("init.options", dict(init=InitSpec("random", {"shrink": 0.5}))),
    ("terms", dict(terms=(TermSpec("no_such_term"),))),
    ("probes", dict(probes=(ProbeSpec("no_such_probe"),))),
]


@pytest.mark.parametrize("key, change", UNKNOWN_NAMES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(UNKNOWN_NAMES)])
def test_unknown_registry_names_and_options_are_rejected_naming_the_key_and_the_known_names(key, change):
    spec = make_spec(**change)  # structurally valid: the spec module knows no registry
    with pytest.raises(SpecError) as info:
        check_names(spec)
    assert str(info.value).startswith(f"{key}: "), str(info.value)
    if "unknown option" in str(info.value):
        assert "allowed: " in str(info.value)
    elif "unknown" in str(info.value):
        assert "known: [" in str(info.value)


@pytest.mark.parametrize("key, change", INVALID, ids=[f"{k}-{i}" for i, (k, _) in enumerate(INVALID)])
def test_invalid_values_raise_spec_error_starting_with_the_key(key, change):
    if change.get("parent") == "seed-1 parent":
        change = {**change, "parent": make_spec(seed=1)}
        if "parent_epoch" in change:
            change["seed"] = 1
    with pytest.raises(SpecError) as info:
        make_spec(**change)
    assert str(info.value).startswith(f"{key}: "), str(info.value)


@pytest.mark.parametrize("key, build", [
    ("optimizer.lr", lambda: make_spec(optimizer=OptimizerSpec("sgd", lr="0.1"))),
    ("train_fraction", lambda: make_spec(train_fraction="0.5")),
    ("stop.threshold", lambda: make_spec(stop=StopSpec(threshold="0.9"))),
])
def test_non_numeric_values_raise_spec_error_starting_with_the_key(key, build):
    with pytest.raises(SpecError) as info:
        build()
    assert str(info.value).startswith(f"{key}: ")


def test_equal_specs_have_equal_ids_whether_a_number_is_written_as_int_or_float():
    a = make_spec(optimizer=OptimizerSpec("sgd", lr=1), train_fraction=1,
                  stop=StopSpec("converged", threshold=1, max_epochs=500))
    b = make_spec(optimizer=OptimizerSpec("sgd", lr=1.0), train_fraction=1.0,
                  stop=StopSpec("converged", threshold=1.0, max_epochs=500))
    assert a == b
    assert a.run_id == b.run_id
