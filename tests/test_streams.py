"""Online streams and transfer: the claims of the paper's Figures 2, 3, 8 and 9 about the pipeline."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import warmstart.jobs.train_streams as streams
from warmstart.components.datasets import DeviceData
from warmstart.core.errors import SpecError
from warmstart.components.inits import InitContext, initialise, transferred_tensors
from warmstart.core.io import load_torch
from warmstart.engine.checkpoint import load_resume
from warmstart.components.models import build_model
from warmstart.components.policies import POLICIES, SelectionContext, first_principal_component_scores, margins
from warmstart.core.spec import DatasetSpec, InitSpec, ModelSpec, OptimizerSpec, RunSpec, StopSpec, StreamSpec
from warmstart.components.splits import make_split
from warmstart.core.seeds import round_seed
from warmstart.jobs.train_streams import check_stream, run_stream



class FixedLogits(nn.Module):
    """A 'model' whose logits for sample i are row i of a table: x holds i."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits[x[:, 0].long()]


def toy_data(n=600, dim=8, classes=3, seed=0) -> DeviceData:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * 2
    y = torch.randint(0, classes, (n,), generator=g)
    x = centres[y] + torch.randn(n, dim, generator=g)
    return DeviceData(x, y, x[:10], y[:10], classes, (dim,))


def stream(policy="random", init="warm", round_size=50, max_samples=None, seed=0, max_epochs=30):
    template = RunSpec(DatasetSpec("mnist1d"), ModelSpec("mlp", {"hidden": 16}), OptimizerSpec("adam", 0.01),
                       batch_size=32, stop=StopSpec("converged", 0.99, max_epochs), seed=seed)
    return StreamSpec(template, policy=policy, init=InitSpec(init), round_size=round_size, max_samples=max_samples)


# -- selection policies --------------------------------------------------------------------------------

def test_margin_selection_picks_exactly_the_smallest_margin_samples():
    # probabilities after softmax of these logits have known top-two gaps: equal logits -> gap 0
    logits = torch.tensor([[5.0, 0, 0], [1.0, 1.0, 0], [2.0, 0, 0], [0.3, 0.2, 0.1], [9.0, 0, 0], [1.0, 0.9, 0.8]])
    ctx = SelectionContext(torch.arange(6).float()[:, None], torch.ones(6, dtype=torch.bool), FixedLogits(logits))
    gaps = margins(ctx.model, ctx.x_pool)
    assert torch.equal(POLICIES["margin"](ctx, 3), torch.argsort(gaps)[:3])
    assert set(POLICIES["margin"](ctx, 3).tolist()) == {1, 3, 5}


def test_margin_selection_never_picks_a_sample_already_added():
    logits = torch.tensor([[1.0, 1.0], [1.0, 0.9], [3.0, 0.0], [1.0, 0.5]])
    available = torch.tensor([False, True, True, True])
    ctx = SelectionContext(torch.arange(4).float()[:, None], available, FixedLogits(logits))
    assert POLICIES["margin"](ctx, 2).tolist() == [1, 3]


def test_the_first_margin_round_is_random():
    ctx = SelectionContext(torch.randn(20, 3), torch.ones(20, dtype=torch.bool), model=None)
    assert torch.equal(POLICIES["margin"](ctx, 5), POLICIES["random"](ctx, 5))


def test_principal_component_order_is_monotone_in_the_first_component():
    g = torch.Generator().manual_seed(1)
    direction = torch.tensor([3.0, -4.0]) / 5
    t = torch.randn(300, generator=g) * 10
    x = t[:, None] * direction + 0.1 * torch.randn(300, 2, generator=g)
    ctx = SelectionContext(x, torch.ones(300, dtype=torch.bool))
    order = POLICIES["pc1_order"](ctx, 300)
    scores = first_principal_component_scores(x)
    assert (scores[order][1:] >= scores[order][:-1]).all()
    # the first component is the generating direction (up to sign): scores track t
    assert abs(torch.corrcoef(torch.stack([scores.float(), t]))[0, 1]) > 0.99


def test_principal_component_rounds_continue_where_the_last_one_stopped():
    x = torch.randn(100, 4, generator=torch.Generator().manual_seed(2))
    ctx = SelectionContext(x, torch.ones(100, dtype=torch.bool))
    scores = first_principal_component_scores(x)
    taken = []
    for _ in range(4):
        new = POLICIES["pc1_order"](ctx, 25)
        ctx.available[new] = False
        taken.append(new)
    order = torch.cat(taken)
    assert sorted(order.tolist()) == list(range(100))
    assert (scores[order][1:] >= scores[order][:-1]).all()


# -- streams -------------------------------------------------------------------------------------------

def test_no_sample_is_added_twice_and_the_pool_running_out_ends_the_stream(tmp_path):
    data = toy_data(n=375)  # pool of 250 after a third goes to validation
    split = make_split(375, 0)
    rows = run_stream(stream(round_size=100, max_epochs=5), data, split, state_path=tmp_path / "s.pt", log=None)
    assert [r["n_samples"] for r in rows] == [100, 200, 250]
    chosen = load_torch(tmp_path / "s.pt")["chosen"]
    assert len(chosen) == 250 and len(torch.unique(chosen)) == 250


@pytest.mark.parametrize("policy", ["random", "margin", "pc1_order"])
def test_a_killed_stream_resumes_at_the_next_round_with_the_same_rows(tmp_path, policy):
    data, split = toy_data(), make_split(600, 3)
    spec = stream(policy=policy, max_samples=200)
    full = run_stream(spec, data, split, state_path=tmp_path / "full.pt", log=None)

    class Killed(Exception):
        pass

    def kill_after_round_2(row):
        if row["round"] == 2:
            raise Killed

    with pytest.raises(Killed):
        run_stream(spec, data, split, state_path=tmp_path / "resumed.pt", on_round=kill_after_round_2, log=None)
    seen = []
    resumed = run_stream(spec, data, split, state_path=tmp_path / "resumed.pt", on_round=seen.append, log=None)
    assert [r["round"] for r in seen] == [3, 4]  # only the unfinished rounds ran again
    timing = {"train_time_s", "cumulative_train_time_s"}
    strip = [{k: v for k, v in r.items() if k not in timing} for r in full]
    assert [{k: v for k, v in r.items() if k not in timing} for r in resumed] == strip


def test_a_streams_state_is_a_resume_file_of_its_stream(tmp_path):
    """Streams keep their rounds in the one resume format of runs and stacks (``engine.checkpoint``)."""
    spec = stream(max_samples=100)
    run_stream(spec, toy_data(), make_split(600, 0), state_path=tmp_path / "s.pt", log=None)
    saved = load_resume(tmp_path / "s.pt", spec.stream_id)
    assert [r["round"] for r in saved["rows"]] == [1, 2] and len(saved["chosen"]) == 100
    assert load_resume(tmp_path / "s.pt", stream(seed=1, max_samples=100).stream_id) is None


def record_round_starts(monkeypatch):
    """Capture each round's initial and final weights by wrapping the engine the stream calls."""
    starts, ends = [], []
    real_fit = streams.fit

    def wrapped(trainee, *args, **kwargs):
        (model,) = trainee.models()
        starts.append({k: v.clone() for k, v in model.state_dict().items()})
        result = real_fit(trainee, *args, **kwargs)
        ends.append({k: v.clone() for k, v in model.state_dict().items()})
        return result

    monkeypatch.setattr(streams, "fit", wrapped)
    return starts, ends


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_a_warm_round_starts_from_the_previous_rounds_final_weights(monkeypatch):
    starts, ends = record_round_starts(monkeypatch)
    run_stream(stream(init="warm", max_samples=150), toy_data(), make_split(600, 0), log=None)
    assert len(starts) == 3
    for k in (1, 2):
        assert same(starts[k], ends[k - 1])


def test_a_random_round_starts_from_a_fresh_init(monkeypatch):
    starts, ends = record_round_starts(monkeypatch)
    spec = stream(init="random", max_samples=150)
    data = toy_data()
    run_stream(spec, data, make_split(600, 0), log=None)
    for k in (1, 2):
        assert not same(starts[k], ends[k - 1])
        torch.manual_seed(round_seed(spec.seed, k))
        fresh = build_model(spec.round.model, data.input_shape, data.num_classes).state_dict()
        assert same(starts[k], fresh)
    assert not same(starts[1], starts[2])  # every round draws its own init


def test_stream_specs_have_content_addressed_names():
    a, b = stream(policy="margin"), stream(policy="margin")
    assert a.name == b.name and a.stream_id == StreamSpec.from_dict(a.to_dict()).stream_id
    assert stream(policy="random").name != a.name and stream(seed=1, policy="margin").name != a.name
    with pytest.raises(SpecError, match=r"^policy: unknown selection policy 'entropy'; known: \["):
        check_stream(stream(policy="entropy"))


# -- transfer ------------------------------------------------------------------------------------------

def test_a_transfer_start_loads_the_source_weights_for_every_layer_it_keeps():
    torch.manual_seed(0)
    source = build_model(ModelSpec("resnet18", {"width": 4}), (3, 32, 32), 10)
    for p in source.parameters():  # make the source distinguishable from any fresh init
        p.data.add_(1.0)
    torch.manual_seed(1)
    fresh = build_model(ModelSpec("resnet18", {"width": 4}), (1, 28, 28), 5)
    fresh_state = {k: v.clone() for k, v in fresh.state_dict().items()}
    model = initialise("transfer", {}, InitContext(fresh=fresh, seed=1, parent_state=source.state_dict()))
    kept = transferred_tensors(model, source.state_dict())
    state = model.state_dict()
    assert {"stem.0.weight", "fc.weight", "fc.bias"}.isdisjoint(kept)  # other input channels, other classes
    assert len(kept) == len(state) - 3
    for name in state:
        expected = source.state_dict()[name] if name in kept else fresh_state[name]
        assert torch.equal(state[name], expected), name


def test_a_transfer_between_same_shaped_models_is_a_warm_start():
    torch.manual_seed(0)
    source = build_model(ModelSpec("mlp"), (40,), 10)
    torch.manual_seed(1)
    model = initialise("transfer", {}, InitContext(fresh=build_model(ModelSpec("mlp"), (40,), 10), seed=1,
                                                   parent_state=source.state_dict()))
    assert same(model.state_dict(), source.state_dict())


def test_a_stream_that_keeps_the_optimiser_continues_the_previous_rounds_adam_state(monkeypatch, tmp_path):
    """warm with optimizer_state: keep (Section 3.5 online, the leaderboard's warm_keep): round k starts from
    round k-1's final Adam moments and step count, also after a resume; warm resets them every round."""
    given, final = [], []
    real_fit = streams.fit

    def wrapped(*args, **kwargs):
        given.append(kwargs.get("optimizer_state"))
        results = real_fit(*args, **kwargs)
        final.append(results[0].optimizer_state)
        return results

    monkeypatch.setattr(streams, "fit", wrapped)
    keep = stream(max_samples=150)
    keep = StreamSpec(keep.round, policy="random", init=InitSpec("warm", {"optimizer_state": "keep"}),
                      round_size=50, max_samples=150)
    rows = run_stream(keep, toy_data(), make_split(600, 0), state_path=tmp_path / "s.pt", log=None)
    assert given[0] is None and len(given) == 3
    for k in (1, 2):
        assert given[k]["state"][0]["step"] == final[k - 1]["state"][0]["step"] > 0
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(given[k]["state"][0][name], final[k - 1]["state"][0][name])
    assert load_torch(tmp_path / "s.pt")["optimizer"]["state"][0]["step"] == \
        final[-1]["state"][0]["step"]
    # samples processed: each round's epochs times its training set, summed over the rounds
    assert [r["samples_seen"] for r in rows] == [r["epochs"] * r["n_samples"] for r in rows]
    assert rows[-1]["cumulative_samples"] == sum(r["samples_seen"] for r in rows)
    given.clear()
    run_stream(stream(max_samples=150), toy_data(), make_split(600, 0), log=None)
    assert given == [None, None, None]
