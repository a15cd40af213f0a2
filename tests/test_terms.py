"""Loss terms: each does what its definition says on a tiny model, and works the same in a single run,
in a stack of seeds and in an online stream (through the one training step)."""
from __future__ import annotations

import pytest
import torch

from test_stacks import DATASET, SEEDS, assert_same, spec, splits_for
from warmstart.components.datasets import DeviceData, load_raw
from warmstart.core.errors import SpecError
from warmstart.jobs.train_block import run_training, run_training_stacked
from warmstart.plan.spec_checks import check_names
from warmstart.core.spec import InitSpec, OptimizerSpec, StopSpec, StreamSpec, TermSpec
from warmstart.components.splits import make_split
from warmstart.jobs.train_streams import run_stream
from warmstart.components.terms import TERMS, TermBatch


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    raw = load_raw("mnist1d", tmp_path_factory.mktemp("mnist1d"), **DATASET.options)
    return DeviceData(raw.x_train, raw.y_train, raw.x_test, raw.y_test, raw.num_classes, raw.input_shape)


def tiny_batch(params, anchors=None, logits=None, targets=None):
    logits = torch.zeros(2, 3, 4) if logits is None else logits
    return TermBatch(logits=logits, targets=torch.zeros(2, 3, dtype=torch.long) if targets is None else targets,
                     inputs=torch.zeros(2, 3, 5), cross_entropy=torch.zeros(2), params=params,
                     anchors=anchors or {}, state={}, forward=lambda x: logits)


def distance_to_start(model, start):
    return sum(((p.detach() - start[n]) ** 2).sum() for n, p in model.named_parameters()).sqrt().item()


# -- l2_init -------------------------------------------------------------------------------------------

def test_l2_init_gradient_is_twice_the_coefficient_times_the_distance_to_the_anchor():
    g = torch.Generator().manual_seed(0)
    theta = {"w": torch.randn(2, 3, 4, generator=g, requires_grad=True), "b": torch.randn(2, 3, generator=g,
                                                                                           requires_grad=True)}
    start = {k: torch.randn(v.shape, generator=g) for k, v in theta.items()}
    origin = {k: torch.randn(v.shape, generator=g) for k, v in theta.items()}
    coef = 0.3
    for anchor, theta0 in (("start", start), ("origin", origin)):
        value = TERMS["l2_init"].penalty(tiny_batch(theta, {"start": start, "origin": origin}), coef=coef,
                                         anchor=anchor)
        assert value.shape == (2,)  # one value per seed
        expected = coef * torch.stack([sum(((theta[k][s] - theta0[k][s]) ** 2).sum() for k in theta)
                                       for s in range(2)])
        torch.testing.assert_close(value, expected)
        grads = torch.autograd.grad(value.sum(), list(theta.values()))
        for (k, p), grad in zip(theta.items(), grads):
            torch.testing.assert_close(grad, 2 * coef * (p - theta0[k]))


def test_l2_init_options_are_checked_naming_the_key():
    with pytest.raises(SpecError, match=r"^terms\.l2_init\.anchor: must be one of \['start', 'origin'\]"):
        check_names(spec(0, terms=(TermSpec("l2_init", {"coef": 0.1, "anchor": "end"}),)))
    with pytest.raises(SpecError, match=r"^terms\.l2_init: missing option\(s\) \['coef'\]"):
        check_names(spec(0, terms=(TermSpec("l2_init"),)))
    with pytest.raises(SpecError, match=r"^terms\.l2_init\.coef: must be a number >= 0"):
        check_names(spec(0, terms=(TermSpec("l2_init", {"coef": "1e-3"}),)))


def test_l2_init_in_a_single_run_keeps_a_warm_start_close_to_its_start(data):
    stop = StopSpec("epochs", max_epochs=4)
    parent = spec(0, train_fraction=0.5, stop=stop)
    split = make_split(len(data.x_train), 0)
    model, _, _ = run_training(parent, data, split, None, log=None)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    plain = spec(0, init=InitSpec("warm"), parent=parent, stop=stop, optimizer=OptimizerSpec("adam", 0.01))
    held = plain.replace(terms=(TermSpec("l2_init", {"coef": 1.0, "anchor": "start"}),))
    free_model, _, _ = run_training(plain, data, split, state, log=None)
    held_model, _, _ = run_training(held, data, split, state, log=None)
    assert distance_to_start(held_model, state) < 0.5 * distance_to_start(free_model, state)
    # (that the reported loss is the cross-entropy alone, without the term, is checked exactly in
    # test_formulas_terms.py::test_the_reported_training_loss_is_the_cross_entropy_without_the_terms)


def test_l2_init_stacked_equals_single(data):
    specs = [spec(s, terms=(TermSpec("l2_init", {"coef": 0.05, "anchor": "origin"}),),
                  stop=StopSpec("converged", 0.8, 12)) for s in SEEDS]
    splits = splits_for(specs, data)
    stacked = run_training_stacked(specs, data, splits, [None] * 3, log=None)
    single = [run_training(s, data, sp, None, log=None) for s, sp in zip(specs, splits)]
    assert_same(stacked, single)


def test_l2_init_in_an_online_stream_holds_each_round_near_the_previous_rounds_weights(monkeypatch):
    from test_streams import record_round_starts, stream, toy_data

    movement = {}
    for coef in (0.0, 10.0):
        starts, ends = record_round_starts(monkeypatch)
        plain = stream(init="warm", max_samples=150)
        template = plain.round.replace(terms=(TermSpec("l2_init", {"coef": coef}),))
        run_stream(StreamSpec(template, policy="random", init=InitSpec("warm"), round_size=50, max_samples=150),
                   toy_data(), make_split(600, 0), log=None)
        assert len(starts) == 3 and all(torch.equal(starts[k]["1.weight"], ends[k - 1]["1.weight"]) for k in (1, 2))
        movement[coef] = sum((ends[k]["1.weight"] - starts[k]["1.weight"]).norm().item() for k in (1, 2))
        monkeypatch.undo()
    assert movement[10.0] < 0.5 * movement[0.0]
