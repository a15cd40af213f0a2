"""Every init strategy and every loss term, checked through the path a run takes.

For each registered strategy, the runs the planner makes from a small config are trained (alone, and as
a stack when the strategy stacks; and as the second round of an online stream), and the weights each run
begins its training from are compared with the strategy's documented formula, computed here from the
parent's weights, the lineage's first initialisation and the run's own draws. For each registered loss
term, the gradient of a planned run's objective (``objective.batch_objective``, alone and stacked) is compared
with a hand computation. The suites enumerate the registries: a strategy or term without a reference
here fails the suite, so whatever is registered later is covered.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from warmstart.jobs import train_block as runner
from warmstart.jobs import train_streams as streams
from warmstart.plan.job_blocks import stackable
from warmstart.components.datasets import DeviceData, load_raw
from warmstart.plan.experiments import plan_experiments
from warmstart.components.inits import STRATEGIES
from warmstart.core.seeds import derived_seed
from warmstart.components.models import build_model, head_parameter_names
from warmstart.jobs.seed_start import start_seed
from warmstart.jobs.train_block import block_hooks, run_block
from warmstart.core.spec import InitSpec, StreamSpec
from warmstart.components.splits import make_split
from warmstart.core.seeds import round_seed
from warmstart.jobs.train_streams import run_stream
from warmstart.components.terms import TERMS
from warmstart.engine.loop import TrainData, fit
from warmstart.engine.objective import batch_objective
from warmstart.engine.precision import ResolvedEngine
from warmstart.engine.trainees import SingleModel, StackedModels

SEEDS = (0, 1)

# the options each strategy is tested with (the defaults where it has none here)
STRATEGY_OPTIONS = {
    "shrink_perturb": {"shrink": 0.4, "perturb": 0.1},
    "noisy_warm": {"std": 0.05},
    "shrink_perturb_weights": {"shrink": 0.3, "sigma": 0.02},
    "interpolate_init": {"c": 0.3},
    "dash": {"shrink_min": 0.3, "alpha": 0.3, "batch_size": 128},
}


@dataclass
class Start:
    """What a reference formula may use: the run (or round) it starts, and where it starts from."""

    spec: object  # the RunSpec of the run (or of the round)
    seed: int  # the seed the run's initialisation is drawn under
    parent: dict[str, torch.Tensor] | None  # the parent's final weights (or the previous round's)
    origin: dict[str, torch.Tensor]  # the lineage's first initialisation
    x_train: torch.Tensor
    y_train: torch.Tensor
    input_shape: tuple
    num_classes: int

    def draw(self, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return build_model(self.spec.model, self.input_shape, self.num_classes)

    @property
    def fresh(self) -> dict[str, torch.Tensor]:
        return params(self.draw(self.seed))

    def new_draw(self, tag: str) -> dict[str, torch.Tensor]:
        return params(self.draw(derived_seed(self.seed, tag)))

    def parent_model(self) -> nn.Module:
        model = self.draw(self.seed)
        model.load_state_dict(self.parent)
        return model


def params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def linear_weights(model: nn.Module) -> list[str]:
    return [f"{name}.weight" for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]


# -- the reference formulas, one per registered strategy --------------------------------------------------

def ref_random(s: Start, draw="run_seed"):
    return s.fresh if draw == "run_seed" else s.new_draw("random")


def ref_warm(s: Start, **o):
    return dict(s.parent)


def ref_transfer(s: Start, **o):
    fresh = s.fresh
    return {n: s.parent[n] if n in s.parent and s.parent[n].shape == v.shape else v for n, v in fresh.items()}


def ref_shrink_perturb(s: Start, shrink, perturb):
    new = s.new_draw("shrink_perturb")
    return {n: shrink * s.parent[n] + perturb * new[n] for n in new}


def ref_noisy_warm(s: Start, std):
    g = torch.Generator().manual_seed(derived_seed(s.seed, "noisy_warm"))
    return {n: v + torch.randn(v.shape, generator=g) * std for n, v in params(s.parent_model()).items()}


def ref_last_layer(s: Start, **o):
    return dict(s.parent)


def ref_last_layer_then_all(s: Start, **o):
    """The parent's body; the head trained alone to convergence on the run's data, from the parent's."""
    model = s.parent_model()
    head = head_parameter_names(model)
    for name, p in model.named_parameters():
        p.requires_grad_(name in head)
    n = len(s.x_train)
    data = TrainData(s.x_train, s.y_train, torch.arange(n).unsqueeze(0), torch.arange(n).unsqueeze(0))
    fit(SingleModel(model), s.spec.optimizer, data, [derived_seed(s.seed, "init-train")],
        batch_size=s.spec.batch_size, stop=s.spec.stop, log=None)
    out = params(model)
    assert all(torch.equal(out[n], s.parent[n]) for n in out if n not in head)
    assert not all(torch.equal(out[n], s.parent[n]) for n in head)
    return out


def ref_shrink_perturb_weights(s: Start, shrink, sigma):
    g = torch.Generator().manual_seed(derived_seed(s.seed, "shrink_perturb_weights"))
    model = s.parent_model()
    out = dict(s.parent)
    for name in linear_weights(model):
        out[name] = shrink * s.parent[name] + torch.randn(s.parent[name].shape, generator=g) * sigma
    return out


def ref_interpolate_init(s: Start, c):
    return {n: (1 - c) * s.parent[n] + c * s.origin[n] for n in s.origin}


def ref_head_reset(s: Start, **o):
    new = s.new_draw("head_reset")
    head = set(head_parameter_names(s.parent_model()))
    return {n: new[n] if n in head else v for n, v in s.parent.items()}


def ref_dash(s: Start, shrink_min, alpha, batch_size, per="kernel"):
    """An EMA of the negative gradient over the run's data in batches, then each output row (each bias
    vector as a whole) scaled by its cosine with it, clipped to [shrink_min, 1]."""
    model = s.parent_model().eval()
    ema = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for start in range(0, len(s.x_train), batch_size):
        model.zero_grad()
        F.cross_entropy(model(s.x_train[start:start + batch_size]), s.y_train[start:start + batch_size]).backward()
        for n, p in model.named_parameters():
            ema[n] = (1 - alpha) * ema[n] - alpha * p.grad
    out = {}
    for n, w in s.parent.items():
        rows, g = (w.reshape(1, -1), ema[n].reshape(1, -1)) if w.dim() == 1 else (w.flatten(1), ema[n].flatten(1))
        cos = (rows * g).sum(1) / (rows.norm(dim=1) * g.norm(dim=1)).clamp_min(1e-12)
        out[n] = (rows * cos.clamp(shrink_min, 1.0).unsqueeze(1)).reshape(w.shape)
    return out


FIRE_MAPS = {"cubic": lambda x: 1.5 * x - 0.5 * x ** 3,  # the authors' Newton-Schulz step on a singular value
             "quintic": lambda x: 3.4445 * x - 4.7750 * x ** 3 + 2.0315 * x ** 5}  # Muon's


def fire_matrix(w: torch.Tensor, iterations: int, step) -> torch.Tensor:
    """The Newton-Schulz iteration's limit form on one matrix W = U S V^T: U f^k(S / ||W||_F) V^T."""
    u, sv, vh = torch.linalg.svd(w, full_matrices=False)
    x = sv / w.norm()
    for _ in range(iterations):
        x = step(x)
    return u @ torch.diag(x) @ vh


def ref_fire(s: Start, iterations, iteration, conv, layers, alpha, precision):
    """Every conv/linear weight W (the head's too; the planned model has no attention layer, so ``layers``
    auto is all): a matrix (out, in) becomes fire_matrix(W) * sqrt(out / in); a kernel per kernel position
    (each (out, in) slice) * sqrt(out / in) / kernel size, or (``conv: reshaped``) as its (out, -1) matrix
    * sqrt(out / cols); then alpha * that + (1 - alpha) * W. Everything else the parent's."""
    assert layers in ("auto", "all")
    step = FIRE_MAPS[iteration]
    out = dict(s.parent)
    for name in linear_weights(s.parent_model()):
        w = s.parent[name].double()
        rows, cols = w.shape[:2]
        if w.dim() == 2 or conv == "reshaped":
            new = fire_matrix(w.flatten(1), iterations, step).reshape(w.shape) * (rows / w[0].numel()) ** 0.5
        else:
            kernel = w[0, 0].numel()
            flat = w.reshape(rows, cols, kernel)
            new = torch.stack([fire_matrix(flat[..., i], iterations, step) for i in range(kernel)], -1)
            new = new.reshape(w.shape) * (rows / cols) ** 0.5 / kernel
        out[name] = (alpha * new + (1 - alpha) * w).float()
    return out


REFERENCES: dict[str, Callable[..., dict[str, torch.Tensor]]] = {
    "random": ref_random, "warm": ref_warm, "transfer": ref_transfer, "shrink_perturb": ref_shrink_perturb,
    "noisy_warm": ref_noisy_warm, "last_layer": ref_last_layer, "last_layer_then_all": ref_last_layer_then_all,
    "shrink_perturb_weights": ref_shrink_perturb_weights, "interpolate_init": ref_interpolate_init,
    "head_reset": ref_head_reset, "dash": ref_dash, "fire": ref_fire,
}


def reference(strategy: str, start: Start) -> dict[str, torch.Tensor]:
    if strategy not in REFERENCES:
        pytest.fail(f"init strategy {strategy!r} has no reference formula in tests/test_registry_runs.py: "
                    "write its documented formula into REFERENCES")
    return REFERENCES[strategy](start, **{**default_options(strategy), **STRATEGY_OPTIONS.get(strategy, {})})


def default_options(strategy: str) -> dict:
    import inspect

    sig = inspect.signature(STRATEGIES[strategy].apply)
    return {n: p.default for n, p in list(sig.parameters.items())[1:] if p.default is not p.empty}


# -- recording where the engine's training begins -------------------------------------------------------

@dataclass
class Call:
    start: dict[str, torch.Tensor]  # name -> [S, ...], the weights when training begins
    end: dict[str, torch.Tensor]


@pytest.fixture
def recorded(monkeypatch):
    """Every call of the training loop from the runner and the streams, with the weights it began from."""
    calls: dict[str, list[Call]] = {"runner": [], "streams": []}

    def recorder(module, key):
        real = module.fit

        def wrapped(trainee, *args, **kwargs):
            start = {n: p.detach().clone() for n, p in trainee.named_params().items()}
            results = real(trainee, *args, **kwargs)
            calls[key].append(Call(start, {n: p.detach().clone() for n, p in trainee.named_params().items()}))
            return results
        monkeypatch.setattr(module, "fit", wrapped)
    recorder(runner, "runner")
    recorder(streams, "streams")
    return calls


# -- a small planned study --------------------------------------------------------------------------------

def strategy_label(name: str) -> str:
    return f"init_{name}"


def config() -> dict:
    return {
        "datasets": {"mnist1d": {"num_samples": 600, "seed": 3}},
        "models": {"mlp": {"hidden": 16}},
        "optimizers": {"adam": {"lr": 0.01}},
        "inits": {**{strategy_label(n): {"strategy": n, **STRATEGY_OPTIONS.get(n, {})} for n in STRATEGIES},
                  "new_draw": {"strategy": "random", "draw": "new"}},
        "terms": {f"term_{n}": {"term": n, **{k: v for k, v in o.items() if k != "coef"}}
                  for n, o in TERM_OPTIONS.items()},
        "defaults": {"batch_size": 64, "validation_fraction": 1 / 3, "phase1_fraction": 0.5,
                     "stop": {"rule": "converged", "threshold": 0.9, "max_epochs": 3}, "inits": ["init_random"]},
        "experiments": {
            "study": {"kind": "batch", "report": "table", "datasets": ["mnist1d"], "models": ["mlp"],
                      "optimizers": ["adam"], "seeds": list(SEEDS),
                      "inits": [strategy_label(n) for n in STRATEGIES] + ["new_draw"]},
            "terms": {"kind": "batch", "report": "conditions", "datasets": ["mnist1d"], "models": ["mlp"],
                      "optimizers": ["adam"], "seeds": list(SEEDS), "inits": [strategy_label("warm")],
                      "term_phases": [2], "term_grid": {f"term_{n}": {"coef": [o["coef"]]} for n, o in TERM_OPTIONS.items()}},
        },
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> DeviceData:
    raw = load_raw("mnist1d", tmp_path_factory.mktemp("mnist1d"), num_samples=600, seed=3)
    return DeviceData(raw.x_train.float(), raw.y_train, raw.x_test.float(), raw.y_test, raw.num_classes,
                      raw.input_shape)


@pytest.fixture(scope="module")
def plan():
    return plan_experiments(config())


def planned(plan, experiment: str, **labels):
    return [p.spec for p in plan.experiments[experiment]
            if all(p.labels.get(k) == v for k, v in labels.items())]


@pytest.fixture(scope="module")
def phase1(plan, data):
    """The phase-1 run of each seed, trained: seed -> (spec, final weights)."""
    out = {}
    for spec in planned(plan, "study", phase=1):
        model, _, _ = run_block([spec], data, [make_split(len(data.x_train), spec.seed, spec.validation_fraction)],
                                [None], log=None)[0]
        out[spec.seed] = (spec, {k: v.detach().clone() for k, v in model.state_dict().items()})
    return out


def batch_start(spec, data, parent) -> Start:
    split = make_split(len(data.x_train), spec.seed, spec.validation_fraction)
    idx = split.train_indices(spec.train_fraction)
    torch.manual_seed(spec.seed)
    origin = params(build_model(spec.model, data.input_shape, data.num_classes))
    return Start(spec, spec.seed, parent, origin, data.x_train[idx], data.y_train[idx], data.input_shape,
                 data.num_classes)


def assert_starts_at(actual: dict[str, torch.Tensor], row: int, expected: dict[str, torch.Tensor], what: str):
    assert actual.keys() == expected.keys(), what
    for name in expected:
        torch.testing.assert_close(actual[name][row], expected[name], rtol=1e-5, atol=1e-6,
                                   msg=lambda m: f"{what}, {name}: {m}")


# -- strategies -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_a_run_starts_from_its_strategys_formula_alone_and_in_a_stack(strategy, plan, data, phase1, recorded):
    children = sorted(planned(plan, "study", phase=2, init=strategy_label(strategy)), key=lambda s: s.seed)
    assert [s.seed for s in children] == list(SEEDS)
    parents = [phase1[s.seed][1] if s.parent is not None else None for s in children]
    if STRATEGIES[strategy].needs_parent:
        assert all(s.parent == phase1[s.seed][0] for s in children), "the child's parent is its phase-1 run"
    splits = [make_split(len(data.x_train), s.seed, s.validation_fraction) for s in children]
    expected = [reference(strategy, batch_start(s, data, p)) for s, p in zip(children, parents)]
    run_block(children[:1], data, splits[:1], parents[:1], log=None)
    assert_starts_at(recorded["runner"][-1].start, 0, expected[0], f"{strategy} alone")
    if stackable(children[0]):
        run_block(children, data, splits, parents, log=None)
        for row in range(len(children)):
            assert_starts_at(recorded["runner"][-1].start, row, expected[row], f"{strategy} stacked, row {row}")


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_an_online_round_starts_from_its_strategys_formula_applied_to_the_previous_round(strategy, plan, data,
                                                                                           recorded):
    (template,) = [s for s in planned(plan, "study", phase=1) if s.seed == 0]
    stream = StreamSpec(template.replace(train_fraction=1.0), policy="random",
                        init=InitSpec(strategy, STRATEGY_OPTIONS.get(strategy, {})), round_size=60, max_samples=120)
    split = make_split(len(data.x_train), stream.seed, stream.round.validation_fraction)
    rows = run_stream(stream, data, split, log=None)
    assert len(rows) == 2
    first, second = recorded["streams"]
    r = stream.round
    torch.manual_seed(round_seed(r.seed, 0))
    origin = params(build_model(r.model, data.input_shape, data.num_classes))
    assert_starts_at(first.start, 0, origin, "the first round starts from the stream's first init")
    previous = {n: v[0] for n, v in first.end.items()} if STRATEGIES[strategy].needs_parent else None
    chosen = recorded_train_indices(stream, data, split)
    start = Start(r, round_seed(r.seed, 1), previous, origin, data.x_train[chosen], data.y_train[chosen],
                  data.input_shape, data.num_classes)
    assert_starts_at(second.start, 0, reference(strategy, start), f"{strategy}, second round")


def recorded_train_indices(stream, data, split) -> torch.Tensor:
    """The second round's training indices: the random policy's picks, replayed through the stream with a
    recording fit."""
    seen = []
    real = streams.fit

    def capture(trainee, optimizer, train_data, *args, **kwargs):
        seen.append(train_data.train_idx[0].clone())
        return real(trainee, optimizer, train_data, *args, **kwargs)
    streams.fit = capture
    try:
        run_stream(stream, data, split, log=None)
    finally:
        streams.fit = real
    return seen[1]


def test_every_registered_strategy_has_a_reference_formula():
    missing = sorted(set(STRATEGIES) - set(REFERENCES))
    assert not missing, f"write the documented formula of {missing} into REFERENCES"


def test_the_suite_catches_a_swapped_interpolation(plan, data, phase1, recorded):
    """Breaking a formula (c and 1 - c swapped) fails the comparison."""
    (child,) = [s for s in planned(plan, "study", phase=2, init=strategy_label("interpolate_init")) if s.seed == 0]
    expected = reference("interpolate_init", batch_start(child, data, phase1[0][1]))
    swapped = dataclasses.replace(child.init, options={"c": 1 - child.init.options["c"]})
    run_block([child.replace(init=swapped)], data, [make_split(len(data.x_train), 0, child.validation_fraction)],
              [phase1[0][1]], log=None)
    with pytest.raises(AssertionError):
        assert_starts_at(recorded["runner"][-1].start, 0, expected, "swapped")


# -- loss terms -------------------------------------------------------------------------------------------

# the options each term is tested with
TERM_OPTIONS = {
    "l2": {"coef": 0.1},
    "l2_init": {"coef": 0.05, "halve": True},  # the default anchor (origin), FIRE comparison's coef / 2
    "confidence": {"coef": 0.2},
    "adversarial": {"coef": 0.5, "epsilon": 0.1},
    "ewc": {"coef": 0.3},
    "parseval": {"coef": 0.01, "scale": 0.5},
}


def fisher(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """The diagonal empirical Fisher, one sample at a time."""
    model.eval()
    total = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(len(x)):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        for n, p in model.named_parameters():
            total[n] += p.grad.square()
    return {n: t / len(x) for n, t in total.items()}


def ref_term(name: str, model: nn.Module, xb, yb, start: Start, anchor_start: dict, options: dict) -> torch.Tensor:
    """The term's value on the batch, written out from its definition on a plain module."""
    theta = dict(model.named_parameters())
    coef = options["coef"]
    if name == "l2":
        return coef * sum((p ** 2).sum() for p in theta.values())
    if name == "l2_init":  # every parameter (biases too unless ``biases: false``), coef or coef / 2 (``halve``)
        anchor = start.origin if options.get("anchor", "origin") == "origin" else anchor_start
        kept = [n for n in theta if options.get("biases", True) or not n.endswith(".bias")]
        return coef / (2 if options.get("halve") else 1) * sum(((theta[n] - anchor[n]) ** 2).sum() for n in kept)
    if name == "confidence":
        p = F.softmax(model(xb), -1)
        return coef * (p * p.clamp_min(1e-45).log()).sum(-1).mean()
    if name == "adversarial":
        x = xb.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x), yb, reduction="sum"), x)
        return coef * F.cross_entropy(model(xb + options["epsilon"] * g.sign()), yb)
    if name == "ewc":
        parent = start.parent_model()
        f = fisher(parent, start.x_parent, start.y_parent)
        return coef / 2 * sum((f[n] * (theta[n] - anchor_start[n]) ** 2).sum() for n in theta)
    if name == "parseval":  # every layer's (out, -1) weight matrix; no norm layers or attention in the MLP; no biases
        weights = [m.weight.flatten(1) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
        return coef * sum(((w @ w.T - options["scale"] * torch.eye(len(w))) ** 2).sum() for w in weights)
    pytest.fail(f"loss term {name!r} has no hand computation in tests/test_registry_runs.py: add it to ref_term")


def term_runs(plan, names):
    runs = [s for s in planned(plan, "terms", phase=2) if tuple(t.name for t in s.terms) == tuple(names)]
    return sorted(runs, key=lambda s: s.seed)


def check_term_gradients(specs, data, phase1, names):
    splits = [make_split(len(data.x_train), s.seed, s.validation_fraction) for s in specs]
    starts = [start_seed(s, data, sp, phase1[s.seed][1]) for s, sp in zip(specs, splits)]
    rows = [split.train_indices(1.0)[:32] for split in splits]
    xb = torch.stack([data.x_train[r] for r in rows])
    yb = torch.stack([data.y_train[r] for r in rows])
    references = []
    for row, (spec, start) in enumerate(zip(specs, starts)):
        model = start.model
        model_copy = build_model(spec.model, data.input_shape, data.num_classes)
        model_copy.load_state_dict(model.state_dict())
        s = batch_start(spec, data, phase1[spec.seed][1])
        parent_idx = splits[row].train_indices(spec.parent.train_fraction)
        s.x_parent, s.y_parent = data.x_train[parent_idx], data.y_train[parent_idx]
        anchor_start = params(model)
        objective = F.cross_entropy(model_copy(xb[row]), yb[row])
        for name, t in zip(names, spec.terms):
            objective = objective + ref_term(name, model_copy, xb[row], yb[row], s, anchor_start, dict(t.options))
        references.append(torch.autograd.grad(objective, list(model_copy.parameters())))
    for trainee in ([SingleModel(starts[0].model)] if len(specs) == 1 else
                    [StackedModels([st.model for st in starts])]):
        state = block_hooks(specs, starts)
        objective, _, _ = batch_objective(trainee, xb[:len(specs)], yb[:len(specs)], state, ResolvedEngine())
        grads = trainee.grads(objective.sum())
        for row in range(len(specs)):
            for (name, _), ref in zip(starts[row].model.named_parameters(), references[row]):
                torch.testing.assert_close(grads[name][row], ref, rtol=1e-4, atol=1e-6,
                                           msg=lambda m: f"terms {names}, row {row}, {name}: {m}")


@pytest.mark.parametrize("term", list(TERMS))
def test_a_terms_gradient_through_the_runs_objective_is_its_hand_computed_one(term, plan, data, phase1):
    if term not in TERM_OPTIONS:
        pytest.fail(f"loss term {term!r} has no options and hand computation here: add it to TERM_OPTIONS "
                    "and ref_term")
    specs = term_runs(plan, [term])
    assert [s.seed for s in specs] == list(SEEDS)
    check_term_gradients(specs[:1], data, phase1, [term])
    if TERMS[term].stackable:
        check_term_gradients(specs, data, phase1, [term])


def test_every_registered_term_has_a_hand_computation():
    missing = sorted(set(TERMS) - set(TERM_OPTIONS))
    assert not missing, f"write the options and hand computation of {missing} here"


def test_the_objective_adds_every_term_of_the_run(plan, data, phase1):
    from warmstart.core.spec import TermSpec

    names = ["l2", "confidence", "l2_init"]
    specs = [s.replace(terms=tuple(TermSpec(n, TERM_OPTIONS[n]) for n in names)) for s in term_runs(plan, ["l2"])]
    check_term_gradients(specs, data, phase1, names)


def test_a_random_run_with_a_new_draw_starts_from_other_weights_than_its_phase1_run(plan, data, phase1, recorded):
    """The authors' phase 2 builds a new model; ``draw: new`` does so, ``run_seed`` (the default) reuses the
    phase-1 run's initial weights."""
    (run,) = [s for s in planned(plan, "study", phase=2, init="new_draw") if s.seed == 0]
    split = make_split(len(data.x_train), 0, run.validation_fraction)
    start = batch_start(run, data, None)
    run_block([run], data, [split], [None], log=None)
    assert_starts_at(recorded["runner"][-1].start, 0, ref_random(start, draw="new"), "random, new draw")
    first = phase1[0][0]
    run_block([first], data, [split], [None], log=None)
    assert not torch.equal(recorded["runner"][-1].start["1.weight"][0], recorded["runner"][-2].start["1.weight"][0])


def test_a_transfer_target_run_starts_from_the_source_models_tensors_that_fit(tmp_path, recorded):
    """The transfer kind: the source run trains on its whole pool; each target run with ``transfer`` starts
    from the source's tensors where name and shape fit (here all of them: MNIST-1D drawn otherwise has the
    same input and classes), from a fresh draw elsewhere."""
    cfg = config()
    cfg["datasets"]["shifted"] = {"name": "mnist1d", "num_samples": 600, "seed": 4, "iid_noise_scale": 0.1}
    cfg["experiments"] = {"transfer": {"kind": "transfer", "report": "transfer", "source": "mnist1d",
                                       "target": "shifted", "models": ["mlp"], "optimizers": ["adam"], "seeds": [0],
                                       "fractions": [0.5], "inits": ["init_random", strategy_label("transfer")]}}
    plan = plan_experiments(cfg)
    (source,) = planned(plan, "transfer", phase=1)
    (target,) = planned(plan, "transfer", phase=2, init=strategy_label("transfer"))
    assert target.parent == source and target.dataset != source.dataset

    def device_data(options):
        raw = load_raw("mnist1d", tmp_path / str(options["seed"]), **options)
        return DeviceData(raw.x_train.float(), raw.y_train, raw.x_test.float(), raw.y_test, raw.num_classes,
                          raw.input_shape)
    src_data, tgt_data = device_data(dict(source.dataset.options)), device_data(dict(target.dataset.options))
    model, _, _ = run_block([source], src_data, [make_split(len(src_data.x_train), 0, source.validation_fraction)],
                            [None], log=None)[0]
    parent = {k: v.detach().clone() for k, v in model.state_dict().items()}
    run_block([target], tgt_data, [make_split(len(tgt_data.x_train), 0, target.validation_fraction)], [parent],
              log=None)
    assert_starts_at(recorded["runner"][-1].start, 0, reference("transfer", batch_start(target, tgt_data, parent)),
                     "transfer target")
