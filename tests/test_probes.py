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
    drop = ("epoch_time_s", "grad_norm_train", "grad_norm_old", "grad_norm_new")
    assert [{k: v for k, v in r.items() if k not in drop} for r in result.history] == \
        [{k: v for k, v in r.items() if k not in drop} for r in unprobed.history]


def test_grad_norm_stacked_equals_single(data):
    parents = [spec(s, train_fraction=0.5, stop=StopSpec("converged", 0.9, 20)) for s in SEEDS]
    parent_out = run_training_stacked(parents, data, splits_for(parents, data), [None] * 3, log=None)
    states = [{k: v.clone() for k, v in m.state_dict().items()} for m, _, _ in parent_out]
    children = [spec(p.seed, init=InitSpec("warm"), parent=p, stop=StopSpec("converged", 0.95, 10),
                     probes=(GRAD_NORM,)) for p in parents]
    splits = splits_for(children, data)
    stacked = run_training_stacked(children, data, splits, states, log=None)
    single = [run_training(c, data, sp, st, log=None) for c, sp, st in zip(children, splits, states)]
    assert_same(stacked, single)
    for (_, a, _), (_, b, _) in zip(stacked, single):
        for ra, rb in zip(a.history, b.history):
            for column in ("grad_norm_train", "grad_norm_old", "grad_norm_new"):
                assert ra[column] == pytest.approx(rb[column], rel=1e-4)


def test_grad_norm_in_an_online_stream_measures_the_earlier_and_the_new_samples_of_each_round():
    from test_streams import stream, toy_data

    plain = stream(init="warm", max_samples=150)
    probed = plain.__class__(plain.round.replace(probes=(GRAD_NORM,)), policy="random", init=InitSpec("warm"),
                             round_size=50, max_samples=150)
    rows = pd.DataFrame(run_stream(probed, toy_data(), make_split(600, 0), log=None))
    # round 1 starts from no parent: no earlier samples, so neither an old nor a new part
    assert rows["grad_norm_old"].isna().tolist() == rows["grad_norm_new"].isna().tolist() == [True, False, False]
    assert rows["grad_norm_train"].notna().all()
