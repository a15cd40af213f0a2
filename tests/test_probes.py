"""Probes: each measures what its definition says on a tiny model, changes nothing it measures, and
works the same in a single run, in a stack of seeds and in an online stream."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from torch import nn

from test_stacks import DATASET, SEEDS, assert_same, spec, splits_for
from warmstart.components.datasets import DeviceData, load_raw
from warmstart.core.errors import SpecError
from warmstart.components.probes import PROBES, ProbeContext
from warmstart.jobs.train_block import run_training, run_training_stacked
from warmstart.plan.spec_checks import check_names
from warmstart.core.spec import InitSpec, OptimizerSpec, ProbeSpec, StopSpec
from warmstart.components.splits import make_split
from warmstart.jobs.train_streams import run_stream
from warmstart.engine.objective import summed_cross_entropy
from warmstart.engine.precision import ResolvedEngine
from warmstart.engine.trainees import SingleModel

GRAD_NORM = ProbeSpec("grad_norm", {"subsets": ["train", "old", "new"]})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    raw = load_raw("mnist1d", tmp_path_factory.mktemp("mnist1d"), **DATASET.options)
    return DeviceData(raw.x_train, raw.y_train, raw.x_test, raw.y_test, raw.num_classes, raw.input_shape)


# -- grad_norm -------------------------------------------------------------------------------------------

def test_grad_norm_is_the_norm_of_the_mean_gradient_over_each_subset():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 3))
    x, y = torch.randn(40, 5), torch.randint(0, 3, (40,))
    old, new = torch.arange(0, 25).unsqueeze(0), torch.arange(25, 40).unsqueeze(0)
    trainee = SingleModel(model)
    ctx = ProbeContext(model=trainee, x=x, y=y, subsets={"train": torch.arange(40).unsqueeze(0), "old": old,
                                                        "new": new},
                       anchors={}, objective=summed_cross_entropy(trainee, x, y, ResolvedEngine()),
                       eval_batch_size=7)  # several batches per subset
    out = PROBES["grad_norm"].measure(ctx, subsets=["old", "new", "train"])
    for name, idx in (("old", old[0]), ("new", new[0]), ("train", torch.arange(40))):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()  # the mean gradient, by hand
        expected = math.sqrt(sum((p.grad ** 2).sum().item() for p in model.parameters()))
        assert out[f"grad_norm_{name}"].item() == pytest.approx(expected, rel=1e-5)
    # a subset the run does not have is NaN, and capping takes the first samples
    no_old = PROBES["grad_norm"].measure(ProbeContext(trainee, x, y, {"train": torch.arange(40).unsqueeze(0)}, {},
                                                      ctx.objective), subsets=["old"])
    assert math.isnan(no_old["grad_norm_old"].item())
    capped = PROBES["grad_norm"].measure(ctx, subsets=["train"], max_samples=25)
    assert capped["grad_norm_train"].item() == pytest.approx(out["grad_norm_old"].item(), rel=1e-6)


def test_grad_norm_options_are_checked_naming_the_key():
    with pytest.raises(SpecError, match=r"^probes\.grad_norm\.subsets: must be one of \['train', 'old', 'new'\]"):
        check_names(spec(0, probes=(ProbeSpec("grad_norm", {"subsets": ["validation"]}),)))


def warm_pair(data, probes=(GRAD_NORM,), stop=StopSpec("epochs", max_epochs=3)):
    parent = spec(0, train_fraction=0.5, stop=StopSpec("converged", 0.99, 60))
    split = make_split(len(data.x_train), 0)
    model, _, _ = run_training(parent, data, split, None, log=None)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    # phase 2 at lr 1e-5, as the paper's Figure 6 does "to zoom in"
    child = spec(0, init=InitSpec("warm"), parent=parent, stop=stop, probes=probes,
                 optimizer=OptimizerSpec("adam", 1e-5))
    return child, split, state


def test_a_warm_start_has_larger_gradients_on_the_new_half_than_on_the_old(data):
    """The paper's Figure 6 observation, on MNIST-1D: the phase-1 model fits its own data, so the new
    half's mean gradient is far larger at the start of phase 2 (and the probe does not change training)."""
    child, split, state = warm_pair(data)
    _, result, _ = run_training(child, data, split, state, log=None)
    first = result.history[0]
    assert first["grad_norm_new"] > 3 * first["grad_norm_old"]
    assert not math.isnan(first["grad_norm_train"])
    _, unprobed, _ = run_training(child.replace(probes=()), data, split, state, log=None)
    drop = ["epoch_time_s", "grad_norm_train", "grad_norm_old", "grad_norm_new"]
    assert pd.DataFrame(result.history).drop(columns=drop).equals(
        pd.DataFrame(unprobed.history).drop(columns=drop, errors="ignore"))  # NaN where NaN


def test_grad_norm_in_an_online_stream_measures_the_earlier_and_the_new_samples_of_each_round():
    from test_streams import stream, toy_data

    plain = stream(init="warm", max_samples=150)
    probed = plain.__class__(plain.round.replace(probes=(GRAD_NORM,)), policy="random", init=InitSpec("warm"),
                             round_size=50, max_samples=150)
    rows = pd.DataFrame(run_stream(probed, toy_data(), make_split(600, 0), log=None))
    # round 1 starts from no parent: no earlier samples, so neither an old nor a new part
    assert rows["grad_norm_old"].isna().tolist() == rows["grad_norm_new"].isna().tolist() == [True, False, False]
    assert rows["grad_norm_train"].notna().all()


# -- every probe; validation ------------------------------------------------------------------------------

VALIDATION = ProbeSpec("validation", {})


@pytest.fixture(scope="module")
def warm_children(data):
    """Three warm starts (a stack's rows; Figure 6's children, to the threshold or 10 epochs) from phase-1
    runs of their own, with their splits and parents."""
    parents = [spec(s, train_fraction=0.5, stop=StopSpec("converged", 0.9, 20)) for s in SEEDS]
    parent_out = run_training_stacked(parents, data, splits_for(parents, data), [None] * 3, log=None)
    states = [{k: v.clone() for k, v in m.state_dict().items()} for m, _, _ in parent_out]
    children = [spec(p.seed, init=InitSpec("warm"), parent=p, stop=StopSpec("converged", 0.95, 10)) for p in parents]
    return children, splits_for(children, data), states


@pytest.mark.parametrize("name", PROBES.names())
def test_every_probe_measures_the_same_in_a_stack_as_alone_and_changes_no_training(data, warm_children, name):
    children, splits, states = warm_children
    probed = [c.replace(probes=(ProbeSpec(name, {}),)) for c in children]
    stacked = run_training_stacked(probed, data, splits, states, log=None)
    single = [run_training(c, data, sp, st, log=None) for c, sp, st in zip(probed, splits, states)]
    unprobed = run_training_stacked(children, data, splits, states, log=None)
    assert_same(stacked, single)
    for (m1, r1, _), (m2, r2, _), (m0, r0, _) in zip(stacked, single, unprobed, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m0.state_dict().values()))
        assert [e["train_loss"] for e in r1.history] == [e["train_loss"] for e in r0.history]
        assert r1.final["val_acc"] == r0.final["val_acc"] and r1.final["val_loss"] == r0.final["val_loss"]
        assert r1.probe_columns == r2.probe_columns and r1.probe_columns[0]
        for column in r1.probe_columns[0]:
            measured = [e[column] for e in r1.history]
            assert not any(math.isnan(v) for v in measured), (name, column)
            assert measured == pytest.approx([e[column] for e in r2.history], rel=1e-4)


@pytest.mark.parametrize("name", PROBES.names())
def test_every_probe_measures_each_round_of_an_online_stream_and_changes_none(name):
    from test_streams import stream, toy_data

    plain = stream(init="warm", max_samples=150)
    probed = plain.__class__(plain.round.replace(probes=(ProbeSpec(name, {}),)), policy="random",
                             init=InitSpec("warm"), round_size=50, max_samples=150)
    rows, plain_rows = (pd.DataFrame(run_stream(s, toy_data(), make_split(600, 0), log=None)) for s in (probed, plain))
    same = ["round", "n_samples", "epochs", "train_loss", "train_acc", "val_loss", "val_acc", "test_acc", "units_reset"]
    pd.testing.assert_frame_equal(rows[same], plain_rows[same])
    assert all(rows[c].iloc[1:].notna().all() for c in rows.columns if c not in plain_rows.columns)


def test_a_run_is_evaluated_after_its_last_epoch_only_unless_it_asks_for_learning_curves(data, warm_children):
    """The validation probe measures after every epoch what the loop measures after the last: its value
    after epoch k is, to the bit, the final validation of the same runs stopped after k epochs."""
    children, splits, states = warm_children
    plain = run_training_stacked(children, data, splits, states, log=None)
    curves = run_training_stacked([c.replace(probes=(VALIDATION,)) for c in children], data, splits, states, log=None)
    for (_, p, _), (_, c, _) in zip(plain, curves, strict=True):
        assert all(math.isnan(e["val_loss"]) and math.isnan(e["val_acc"]) for e in p.history[:-1])
        assert c.probe_columns == [["val_loss", "val_acc"]]
        assert (c.final["val_loss"], c.final["val_acc"]) == (p.final["val_loss"], p.final["val_acc"])
    for k in (1, 2):
        stopped = run_training_stacked([c.replace(stop=StopSpec("epochs", max_epochs=k)) for c in children], data,
                                       splits, states, log=None)
        for (_, c, _), (_, s, _) in zip(curves, stopped, strict=True):
            assert (c.history[k - 1]["val_loss"], c.history[k - 1]["val_acc"]) == (s.final["val_loss"], s.final["val_acc"])


def test_every_report_draws_from_registered_probes_of_the_two_phases():
    from warmstart.reports import REPORTS

    for name in REPORTS.names():
        report = REPORTS[name]
        assert set(report.probes) <= set(PROBES.names()) and set(report.probed_phases) <= {1, 2}, name
    assert "validation" in REPORTS["curves"].probes and "validation" in REPORTS["checkpoints"].probes


def test_learning_curves_are_measured_in_the_runs_they_draw_and_no_others():
    """Figure 1's curves span both phases; Figure 7's only phase 1 (its phase 2 reports final accuracies),
    so a Table 1 run it shares is measured as Table 1 asks (the demo's config)."""
    import yaml

    from test_workflow import REPO
    from warmstart.plan.experiments import plan_experiments

    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    plan = plan_experiments(config, only=["table1", "fig1", "fig7"])

    def validated(experiment, phase):
        return {"validation" in {p.name for p in plan.runs[r.spec.name].probes}
                for r in plan.experiments[experiment] if r.labels["phase"] == phase}

    assert validated("fig1", 1) == validated("fig1", 2) == validated("fig7", 1) == {True}
    assert validated("fig7", 2) == validated("table1", 1) == validated("table1", 2) == {False}
    assert {r.spec.name for r in plan.experiments["fig7"] if r.labels["phase"] == 2} & \
        {r.spec.name for r in plan.experiments["table1"]}  # Figure 7's baseline is one of Table 1's runs
