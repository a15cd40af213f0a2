"""Resetting the optimiser's moments every k steps (intervention ``moment_reset``), the worked example of a
remedy that acts during training (docs/extending.md): against a hand-written loop of torch's Adam and SGD
that zeroes the moments every k steps, and through planned runs: alone == stacked, on a model without
unit layers, in every round of an online stream, and interrupted and resumed to the bits of a run that
was not."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from warmstart.components.datasets import load_prepared
from warmstart.components.splits import load_split
from warmstart.core.io import load_torch
from warmstart.core.spec import InitSpec, InterventionSpec, ModelSpec, OptimizerSpec, StopSpec, StreamSpec
from warmstart.engine.intervention_hook import BoundIntervention
from warmstart.engine.loop import TrainData, fit, run_hooks
from warmstart.engine.trainees import SingleModel
from warmstart.jobs.train_streams import run_stream

sys.path.insert(0, str(Path(__file__).parent))
from test_same_bits import assert_same_files, inputs, spec, train  # noqa: E402,F401  (a fixture)
from test_interventions import interrupted_and_resumed  # noqa: E402

EVERY = 3


def reset_spec(seed: int, **fields):
    return spec(seed, max_epochs=fields.pop("max_epochs", 6),
                interventions=(InterventionSpec("moment_reset", {"every": EVERY}),), **fields)


def changed(a: Path, b: Path) -> bool:
    wa, wb = load_torch(a / "model.pt"), load_torch(b / "model.pt")
    return not all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("name, options, reference, moments", [
    ("adam", {"lr": 0.01}, lambda p: torch.optim.Adam(p, lr=0.01), ("exp_avg", "exp_avg_sq")),
    ("sgd", {"lr": 0.1, "momentum": 0.9}, lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), ("momentum_buffer",)),
])
def test_the_moments_are_zeroed_after_every_kth_step_and_nothing_else_changes(name, options, reference, moments):
    """Full-batch steps, so each epoch is one step: the run equals torch's optimiser stepped by hand with
    its moments zeroed after steps 2 and 4 (Adam's step count kept), and differs from a run without."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 4, generator=g), torch.randint(0, 2, (32,), generator=g)
    data = TrainData(x, y, torch.arange(32).unsqueeze(0), torch.arange(32).unsqueeze(0))

    def model():
        torch.manual_seed(1)
        return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2))
    runs = {}
    for every in (2, None):
        m = model()
        bound = [BoundIntervention("moment_reset", {"every": every})] if every else []
        fit(SingleModel(m), OptimizerSpec(name, **options), data, [0], batch_size=32, log=None,
            stop=StopSpec("epochs", max_epochs=5), hooks=run_hooks(interventions=bound))
        runs[every] = m
    hand = model()
    opt = reference(hand.parameters())
    for step in range(1, 6):
        opt.zero_grad()
        nn.functional.cross_entropy(hand(x), y).backward()
        opt.step()
        if step % 2 == 0:
            for state in opt.state.values():
                for key in moments:
                    state[key].zero_()
    for (n, a), b, c in zip(runs[2].named_parameters(), hand.parameters(), runs[None].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m: f"{n}: {m}")
        assert not torch.allclose(a, c, rtol=1e-5, atol=1e-6), n  # it acted


def test_moment_reset_runs_with_the_same_bits_alone_and_in_a_stack(inputs, tmp_path):
    alone = train(inputs, [reset_spec(1)], tmp_path / "alone")[0]
    stacked = train(inputs, [reset_spec(s) for s in range(3)], tmp_path / "stack")
    assert_same_files(alone, stacked[1])
    assert changed(alone, train(inputs, [reset_spec(1).replace(interventions=())], tmp_path / "without")[0])


def test_moment_reset_needs_no_unit_layers(inputs, tmp_path):
    """Logistic regression has no unit layer (its units are the classes): the unit resets refuse nothing
    here, since the moment reset does not look for units."""
    logreg = reset_spec(0, max_epochs=3).replace(model=ModelSpec("logreg"))
    out = train(inputs, [logreg], tmp_path / "with")[0]
    assert changed(out, train(inputs, [logreg.replace(interventions=())], tmp_path / "without")[0])


def test_moment_reset_acts_in_every_round_of_an_online_stream(inputs):
    data = load_prepared(inputs / "data.pt", torch.device("cpu"))
    split = load_split(inputs / "split0.pt")
    template = reset_spec(0, max_epochs=3)
    init = InitSpec("warm", {"optimizer_state": "keep"})  # the moments carry over rounds: the reset matters
    rounds = [run_stream(StreamSpec(t, init=init, round_size=200, max_samples=400), data, split, log=None)
              for t in (template, template.replace(interventions=()))]
    assert len(rounds[0]) == 2
    for with_reset, without in zip(*rounds):
        assert with_reset["val_loss"] != without["val_loss"]


def test_a_run_interrupted_between_two_moment_resets_resumes_to_the_same_bits(inputs, tmp_path):
    _, saved, _ = interrupted_and_resumed([reset_spec(s) for s in range(2)], inputs, tmp_path, 4)
    assert len(saved["histories"][0]) == 3 and saved["hooks"][-1]["steps"] > EVERY  # the interventions' hook
