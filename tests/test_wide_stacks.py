"""Wide stacks: the arms of a comparison that differ only in their seed, init strategy, parent, learning
rate, loss-term coefficients and the options of their unit resets train side by side as rows of one
stack, and each row ends with the bits its run gets alone. Which runs share a stack is a function of the
plan; no stack holds a run beside its own ancestor."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from test_registry_runs import STRATEGY_OPTIONS, TERM_OPTIONS
from test_stacks import assert_same, data, job_inputs, raw, spec, splits_for  # noqa: F401 (fixtures)
from warmstart.components.inits import STRATEGIES, Strategy
from warmstart.components.interventions import INTERVENTIONS
from warmstart.components.terms import TERMS
from warmstart.core.io import load_torch
from warmstart.core.spec import InitSpec, InterventionSpec, ModelSpec, OptimizerSpec, StopSpec, TermSpec
from warmstart.jobs.train_block import check_stackable, run_training, run_training_stacked
from warmstart.jobs.train_runs import execute_block
from warmstart.plan.job_blocks import block_stacks, plan_blocks, stack_key, stackable
from warmstart.plan.planned import Plan

STOP = StopSpec("converged", 0.9, 20)


@pytest.fixture(scope="module")
def parents(data):
    """Phase-1 runs (half the data) of seeds 0-2, and their final weights."""
    specs = [spec(s, train_fraction=0.5, stop=STOP) for s in range(3)]
    out = run_training_stacked(specs, data, splits_for(specs, data), [None] * 3, log=None)
    return specs, [{k: v.clone() for k, v in m.state_dict().items()} for m, _, _ in out]


def arm(strategy: str, seed: int, parents, **fields):
    """A phase-2 run of ``strategy`` (with the options the registry tests use) at ``seed``, from its
    seed's phase-1 run when the strategy reads a parent."""
    specs, states = parents
    needs_parent = STRATEGIES[strategy].needs_parent
    run = spec(seed, init=InitSpec(strategy, STRATEGY_OPTIONS.get(strategy, {})), stop=STOP,
               parent=specs[seed] if needs_parent else None, **fields)
    return run, states[seed] if needs_parent else None


def stacks_alone_and_together(data, rows):
    """Train ``rows`` (spec, parent state) in the stacks a job makes of them (``block_stacks``), and each
    run alone; assert the same bits. Returns the stacks' sizes."""
    state_of = {spec.name: state for spec, state in rows}
    stacks = block_stacks([spec for spec, _ in rows])
    for specs in stacks:
        states = [state_of[s.name] for s in specs]
        splits = splits_for(specs, data)
        together = run_training_stacked(specs, data, splits, states, log=None)
        alone = [run_training(s, data, sp, p, log=None) for s, sp, p in zip(specs, splits, states)]
        assert_same(together, alone)
        for (_, in_stack, _), (_, on_its_own, _) in zip(together, alone):
            assert_same_state(in_stack.optimizer_state, on_its_own.optimizer_state)
    return sorted(len(specs) for specs in stacks)


def assert_same_state(a, b):
    """Equal nested values, tensors bitwise (an optimiser's state dict, settings included)."""
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for k in a:
            assert_same_state(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_state(x, y)
    else:
        assert type(a) is type(b) and a == b, (a, b)


def test_every_stackable_init_strategy_trains_in_one_wide_stack_to_the_bits_it_gets_alone(data, parents):
    """The registry enumerated: one row per stackable strategy (seeds 0-2 in turn), all phase-2 runs from
    their seed's phase-1 run; strategies that train only part of the model share a stack of their own."""
    strategies = [name for name in STRATEGIES if STRATEGIES[name].needs_parent
                  and STRATEGIES[name].stackable(STRATEGY_OPTIONS.get(name, {}))]
    rows = [arm(name, k % 3, parents) for k, name in enumerate(strategies)]
    assert all(stackable(s) for s, _ in rows)
    sizes = stacks_alone_and_together(data, rows)
    by_part = {}
    for name in strategies:
        part = STRATEGIES[name].trains
        by_part[part] = by_part.get(part, 0) + 1
    assert sizes == sorted(by_part.values()) and max(sizes) > 3, sizes  # the point: one wide stack


@pytest.mark.parametrize("extra", [
    dict(terms=(TermSpec("l2_init", {"coef": 0.05, "anchor": "origin"}),)),  # an anchor per row
    dict(terms=(TermSpec("ewc", {"coef": 0.1}),)),  # a setup per row, from each row's parent and data
    dict(interventions=(InterventionSpec("redo", {"every": 5, "tau": 0.5}),)),
    dict(optimizer=OptimizerSpec("sgd", lr=0.05, momentum=0.9, weight_decay=1e-3)),
], ids=["l2_init", "ewc", "redo", "sgd_momentum"])
def test_rows_that_differ_in_init_and_parent_share_terms_interventions_and_optimiser_to_the_same_bits(
        data, parents, extra):
    rows = [arm("warm", 0, parents, **extra), arm("shrink_perturb", 1, parents, **extra),
            arm("head_reset", 2, parents, **extra), arm("warm", 2, parents, **extra)]
    assert stacks_alone_and_together(data, rows) == [4]


def test_a_wide_stack_job_writes_each_run_the_directory_its_own_job_writes(raw, data, parents, tmp_path):
    """Through the job's files: parents' model files in, each run's directory out; one run of the
    stack already published is taken as it is, and the rest train to their bits."""
    from warmstart.core.io import save_torch

    rows = [arm("warm", 0, parents), arm("shrink_perturb", 1, parents), arm("fire", 1, parents)]
    specs = [s for s, _ in rows]
    parent_paths = []
    for s, state in rows:
        parent_paths.append(tmp_path / f"parent{s.seed}.pt")
        save_torch(state, parent_paths[-1])
    data_path, split_paths = job_inputs(raw, tmp_path, specs)
    quiet = dict(device="cpu", threads=1, log=lambda m: None)
    execute_block(specs, data_path, split_paths, [tmp_path / "wide" / s.name for s in specs], parent_paths,
                  resume_dir=tmp_path, block="wide", **quiet)
    execute_block(specs[1:2], data_path, split_paths[1:2], [tmp_path / "published" / specs[1].name],
                  parent_paths[1:2], resume_dir=tmp_path, block="one", **quiet)
    for s in specs[1:2]:
        wa, wb = (load_torch(tmp_path / d / s.name / "model.pt") for d in ("wide", "published"))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    logs = []
    execute_block(specs, data_path, split_paths, [tmp_path / "again" / s.name for s in specs], parent_paths,
                  resume_dir=tmp_path, block="again", published_dir=tmp_path / "published",
                  **{**quiet, "log": logs.append})
    assert any(f"reused: {specs[1].name}" in m for m in logs)
    assert sum(m.startswith("done: ") for m in logs) == 2
    # the log names a finished row by its run: a wide stack holds seed 1 twice
    assert {m.split("]")[0][1:] for m in logs if "] done after epoch" in m} == {specs[0].name, specs[2].name}
    for s in specs:
        wa, wb = (load_torch(tmp_path / d / s.name / "model.pt") for d in ("wide", "again"))
        assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_an_init_strategy_that_freezes_part_of_the_model_without_saying_so_is_refused(data, parents, monkeypatch):
    def frozen_head_only(ctx):
        ctx.fresh.load_state_dict(ctx.parent_state)
        for name, p in ctx.fresh.named_parameters():
            p.requires_grad_(name.endswith("bias"))
        return ctx.fresh
    monkeypatch.setitem(STRATEGIES._entries, "undeclared_freeze", Strategy("undeclared_freeze", frozen_head_only,
                                                                            needs_parent=True))
    rows = [arm("warm", 0, parents), arm("undeclared_freeze", 1, parents)]
    assert stack_key(rows[0][0]) == stack_key(rows[1][0])
    specs = [s for s, _ in rows]
    with pytest.raises(ValueError, match="undeclared_freeze.*register the strategy with the part it trains"):
        run_training_stacked(specs, data, splits_for(specs, data), [p for _, p in rows], log=None)


# -- rows with their own learning rate and term coefficients ----------------------------------------------

def with_settings(row, lr=None, terms=None, **fields):
    """``row`` (spec, parent state) with its optimiser's rate ``lr``, ``terms`` and other ``fields``."""
    run, state = row
    changes = dict(fields)
    if lr is not None:
        changes["optimizer"] = dataclasses.replace(changes.get("optimizer", run.optimizer), lr=lr)
    if terms is not None:
        changes["terms"] = terms
    return run.replace(**changes), state


# rows' learning rates, in an order that makes several runs of rows that share one (0.01 twice, apart)
ROW_LRS = (0.01, 0.003, 0.01, 0.03)


@pytest.mark.parametrize("optimizer", [
    OptimizerSpec("adam", lr=0.01),
    OptimizerSpec("adam", lr=0.01, weight_decay=1e-3),
    OptimizerSpec("sgd", lr=0.01, momentum=0.9, weight_decay=1e-3),
    OptimizerSpec("sgd", lr=0.01),
], ids=["adam", "adam_l2", "sgd_momentum_l2", "sgd"])
def test_rows_with_their_own_learning_rate_train_in_one_stack_to_the_bits_and_optimiser_state_they_get_alone(
        data, parents, optimizer):
    """Each row steps with its own rate; the rows finish apart (the slow rate last), so the per-row rates
    are kept with the rows as finished ones leave the stack; each run's kept optimiser state is the one
    it keeps alone, its own rate included."""
    lrs = ROW_LRS if optimizer.name == "adam" else tuple(10 * lr for lr in ROW_LRS)
    arms = [arm("warm", 0, parents), arm("shrink_perturb", 1, parents), arm("head_reset", 2, parents),
            arm("warm", 2, parents)]
    rows = [with_settings(row, lr, optimizer=optimizer, keep_optimizer=True)
            for row, lr in zip(arms, lrs)]
    assert stacks_alone_and_together(data, rows) == [4]


@pytest.mark.parametrize("intervention", [InterventionSpec("cbp", {"replacement_rate": 0.05, "maturity": 5}),
                                          InterventionSpec("redo", {"every": 5, "tau": 0.5})],
                         ids=["cbp_per_entry_adam", "redo"])
def test_rows_with_their_own_learning_rate_and_an_intervention_that_resets_moments(data, parents, intervention):
    """CBP's Adam with a step count per entry (AdamGnT) steps each row at its own rate too."""
    rows = [with_settings(arm(name, seed, parents), lr, interventions=(intervention,), keep_optimizer=True)
            for (name, seed), lr in zip([("warm", 0), ("warm", 1), ("shrink_perturb", 2), ("warm", 2)], ROW_LRS)]
    assert stacks_alone_and_together(data, rows) == [4]


@pytest.mark.parametrize("term", sorted(TERMS))
def test_rows_with_their_own_term_coefficient_train_in_one_stack_to_the_bits_they_get_alone(data, parents, term):
    """The registry enumerated: every term, its coefficient per row (one row without... none: the same
    term on every row, at 1x, 2x, 1x and 0.5x its tested coefficient), from warm starts (EWC's Fisher
    reads each row's parent)."""
    options = TERM_OPTIONS[term]
    rows = [with_settings(arm(name, seed, parents), terms=(TermSpec(term, {**options, "coef": options["coef"] * k}),))
            for (name, seed), k in zip([("warm", 0), ("warm", 1), ("shrink_perturb", 2), ("warm", 2)],
                                       (1, 2, 1, 0.5))]
    assert all(stackable(r) for r, _ in rows)
    assert stacks_alone_and_together(data, rows) == [4]


def test_rows_that_differ_in_seed_init_parent_lr_and_term_coefficients_at_once(data, parents):
    terms = lambda k: (TermSpec("l2_init", {"coef": 0.05 * k, "anchor": "start"}),  # noqa: E731
                       TermSpec("confidence", {"coef": 0.1 / k}))
    rows = [with_settings(arm(name, seed, parents), lr, terms(k), keep_optimizer=True)
            for (name, seed), lr, k in zip([("warm", 0), ("shrink_perturb", 1), ("head_reset", 2), ("warm", 2)],
                                           ROW_LRS, (1, 2, 4, 2))]
    assert stacks_alone_and_together(data, rows) == [4]


def test_a_killed_stack_of_rows_with_their_own_rates_and_coefficients_resumes_to_the_same_bits(data, parents,
                                                                                                 tmp_path):
    """Killed after its first row finished: the rows' rates and coefficients are saved and restored with
    the rows still training."""
    rows = [with_settings(arm("warm", seed, parents), lr, (TermSpec("l2", {"coef": 1e-3 * k}),),
                          stop=StopSpec("converged", 0.7, 30))
            for seed, lr, k in zip((0, 1, 2), (0.03, 0.01, 0.003), (1, 3, 2))]
    killed_after_the_first_row_and_resumed(data, rows, tmp_path)


def killed_after_the_first_row_and_resumed(data, rows, tmp_path):
    """Train the stack of ``rows`` whole, then killed one epoch after its first row finished and resumed;
    assert the resumed rows end on the whole run's bits (epoch records, units reset, weights)."""
    from test_stacks import Killed, untimed
    from warmstart.engine.checkpoint import Checkpointing

    specs, states = [r for r, _ in rows], [p for _, p in rows]
    splits = splits_for(specs, data)
    whole = run_training_stacked(specs, data, splits, states, log=None)
    epochs = sorted(len(r.history) for _, r, _ in whole)
    assert epochs[0] < epochs[-1] - 1
    checkpointing = Checkpointing(tmp_path / "resume.pt", every_s=0, tag="stack")

    def kill(i, record):
        if record["epoch"] == epochs[0] + 1:
            raise Killed
    with pytest.raises(Killed):
        run_training_stacked(specs, data, splits, states, log=None, checkpointing=checkpointing, on_epoch=kill)
    resumed = run_training_stacked(specs, data, splits, states, log=None, checkpointing=checkpointing)
    for (m1, r1, _), (m2, r2, _) in zip(resumed, whole, strict=True):
        assert untimed(r1.history) == untimed(r2.history) and r1.units_reset == r2.units_reset
        assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))


# Per unit intervention, the options of three rows' sets (rows 0 and 2 share the first): they differ in
# what they reset and how often they look
ROW_INTERVENTION_OPTIONS = {
    "redo": ({"tau": 0.5, "every": 5}, {"tau": 0.2, "every": 3},
             {"tau": 0.5, "every": 4, "score_on": "since_last_call"}),
    "cbp": ({"replacement_rate": 0.05, "maturity": 5}, {"replacement_rate": 0.02, "maturity": 10, "decay": 0.9},
            {"replacement_rate": 0.05, "maturity": 5, "bias_compensation": "mean_activation"}),
    "snr": ({"threshold_every": 5, "max_age": 64}, {"threshold_every": 7, "max_age": 32, "percentile": 0.9},
            {"threshold_every": 5, "max_age": 48, "every": 2}),
}
UNIT_INTERVENTIONS = sorted(n for n in INTERVENTIONS if INTERVENTIONS[n].needs_for({}).units)


def test_every_unit_intervention_is_given_options_per_row_by_these_tests():
    assert sorted(ROW_INTERVENTION_OPTIONS) == UNIT_INTERVENTIONS


def intervention_rows(name, **fields):
    """Four rows of a ReLU MLP (whose units fall silent, as self-normalised resets need) with intervention
    ``name``: rows 0 and 2 with its first options, rows 1 and 3 with the others; each with its own rate,
    so the rows finish apart and leave the stack one by one."""
    first, second, third = ROW_INTERVENTION_OPTIONS[name]
    relu = ModelSpec("mlp", {"hidden": 32, "activation": "relu"})
    return [(spec(seed, optimizer=OptimizerSpec("adam", lr=lr), interventions=(InterventionSpec(name, options),),
                  **fields).replace(model=relu), None)
            for seed, lr, options in zip((0, 1, 2, 0), ROW_LRS, (first, second, first, third))]


@pytest.mark.parametrize("name", UNIT_INTERVENTIONS)
def test_rows_with_their_own_unit_reset_options_train_in_one_stack_to_the_bits_they_get_alone(data, parents, name):
    """The registry enumerated: every intervention that resets units, with three sets of options over four
    rows (the first set on two rows apart); each set sees only its rows' statistics, keeps its own calls
    and state, and resets only its rows, as each run alone. The rows finish at different epochs, so the
    sets keep their rows as finished ones leave."""
    rows = intervention_rows(name, keep_optimizer=True, stop=StopSpec("converged", 0.8, 30))
    assert all(stackable(r) for r, _ in rows)
    assert stacks_alone_and_together(data, rows) == [4]
    specs, states = [r for r, _ in rows], [p for _, p in rows]
    together = run_training_stacked(specs, data, splits_for(specs, data), states, log=None)
    assert len({len(r.history) for _, r, _ in together}) > 1  # the rows left the stack apart
    assert len({r.units_reset for _, r, _ in together}) > 1  # the sets reset differently


def test_a_killed_stack_of_rows_with_their_own_reset_options_resumes_to_the_same_bits(data, tmp_path):
    """Killed after its first row finished: each set of options is saved with its rows, calls and state,
    and restored with the rows still training."""
    killed_after_the_first_row_and_resumed(data, intervention_rows("cbp", stop=StopSpec("converged", 0.8, 30)),
                                           tmp_path)


def test_a_term_coefficient_per_row_is_the_product_each_row_computes_alone():
    """On fixed tensors: a float32 [S] coefficient times a term's value is, per row, the bits of the
    float coefficient times that row's value (the form every term has, ``coef * value``, and the halved
    and negated forms of L2-init and the confidence penalty)."""
    values = torch.tensor([0.3713, 1.7e-3, 52.25, 3.0e4], dtype=torch.float32)
    coefs = [0.1, 1e-3, 0.05, 7.3e-5]
    per_row = torch.tensor(coefs, dtype=torch.float32)
    for form in (lambda c, v: c * v, lambda c, v: c / 2 * v, lambda c, v: -c * v):
        together = form(per_row, values)
        alone = torch.stack([form(c, values[k:k + 1])[0] for k, c in enumerate(coefs)])
        assert torch.equal(together, alone)


# -- planning ---------------------------------------------------------------------------------------------

def blocks_of(specs, size=3, per_job=1):
    plan = Plan()
    for s in specs:
        plan.add("exp", s)
    return plan_blocks(plan, size, per_job)


def test_the_arms_of_a_comparison_share_a_stack_and_what_training_reads_differently_does_not():
    phase1 = [spec(s, train_fraction=0.5) for s in range(3)]
    arms = [spec(s, init=InitSpec(name, STRATEGY_OPTIONS.get(name, {})), parent=p)
            for name in ("warm", "shrink_perturb", "head_reset") for s, p in zip(range(3), phase1)]
    cold = [spec(s) for s in range(3)]  # no parent: generation 0, beside the phase-1 runs' generation
    other_decay = [spec(s, init=InitSpec("warm"), parent=p, optimizer=OptimizerSpec("adam", lr=0.01, weight_decay=1e-4))
                   for s, p in zip(range(3), phase1)]
    head_only = [spec(s, init=InitSpec("last_layer"), parent=p) for s, p in zip(range(3), phase1)]
    blocks = blocks_of(phase1 + arms + cold + other_decay + head_only)
    members = sorted(sorted(s.name for s in b.specs) for b in blocks.values())
    assert members == sorted(sorted(s.name for s in group) for group in (phase1, arms, cold, other_decay, head_only))
    for block in blocks.values():
        check_stackable(block.specs)
    wide = next(b for b in blocks.values() if len(b.specs) == 9)
    assert [s.seed for s in wide.specs] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # a stack's name says what its rows share, not which arms a config lists
    assert wide.name.startswith("mnist1d_mlp_adam_gen1_f1_b0_")
    assert blocks_of(phase1 + arms[:3] + arms[6:]).keys() >= {wide.name}


def test_rows_share_a_stack_across_learning_rates_and_term_coefficients_but_not_other_settings():
    base = [spec(s, terms=(TermSpec("l2", {"coef": 1e-3}),)) for s in range(3)]
    sweep = [s.replace(optimizer=dataclasses.replace(s.optimizer, lr=lr), terms=(TermSpec("l2", {"coef": coef}),))
             for s in base for lr, coef in ((0.003, 1e-3), (0.01, 1e-2), (0.03, 1e-4))]
    other_term = [s.replace(terms=(TermSpec("confidence", {"coef": 1e-3}),)) for s in base]
    no_term = [s.replace(terms=()) for s in base]
    muon = [spec(s, optimizer=OptimizerSpec("muon", lr=lr)) for s in range(3) for lr in (0.01, 0.02)]
    blocks = blocks_of(sweep + other_term + no_term + muon)
    members = sorted(sorted(s.name for s in b.specs) for b in blocks.values())
    # muon scales each matrix's step by its rate (a per-row optimiser): one stack per rate
    expected = [sweep, other_term, no_term, [m for m in muon if m.optimizer.lr == 0.01],
                [m for m in muon if m.optimizer.lr == 0.02]]
    assert members == sorted(sorted(s.name for s in group) for group in expected)
    for block in blocks.values():
        check_stackable(block.specs)
    # the rows of one rate side by side, so the optimiser steps each rate's rows in one go
    wide = next(b for b in blocks.values() if len(b.specs) == len(sweep))
    assert [(s.optimizer.lr, s.seed) for s in wide.specs] == sorted((s.optimizer.lr, s.seed) for s in sweep)
    with pytest.raises(ValueError, match="terms"):
        check_stackable([base[0], other_term[1]])


def test_rows_share_a_stack_across_unit_reset_options_but_not_what_reaches_the_whole_stack():
    redo = [spec(s, interventions=(InterventionSpec("redo", {"tau": tau, "every": every}),))
            for s in range(3) for tau, every in ((0.1, 5), (0.5, 5), (0.5, 9))]
    cbp = [spec(s, interventions=(InterventionSpec("cbp", {"replacement_rate": rate}),))
           for s in range(3) for rate in (1e-3, 1e-2)]
    # Adam's step count per entry or per tensor is the whole stack's optimiser: not a row's own
    cbp_per_tensor = [spec(s, interventions=(InterventionSpec("cbp", {"adam_step": "per_tensor"}),)) for s in range(3)]
    # moment_reset zeroes every row's moments at once: its options are the stack's
    moments = [spec(s, interventions=(InterventionSpec("moment_reset", {"every": every}),))
               for s in range(3) for every in (10, 20)]
    none = [spec(s) for s in range(3)]
    blocks = blocks_of(redo + cbp + cbp_per_tensor + moments + none)
    members = sorted(sorted(s.name for s in b.specs) for b in blocks.values())
    expected = [redo, cbp, cbp_per_tensor, [m for m in moments if m.interventions[0].options["every"] == 10],
                [m for m in moments if m.interventions[0].options["every"] == 20], none]
    assert members == sorted(sorted(s.name for s in group) for group in expected)
    for block in blocks.values():
        check_stackable(block.specs)
    with pytest.raises(ValueError, match="interventions"):
        check_stackable([cbp[0], cbp_per_tensor[1]])


def test_no_stack_holds_a_run_beside_its_own_parent():
    parent = spec(0)
    child = spec(0, init=InitSpec("warm"), parent=parent, stop=parent.stop)  # same everything but the start
    grandchild = spec(0, init=InitSpec("shrink_perturb", STRATEGY_OPTIONS["shrink_perturb"]), parent=child)
    blocks = blocks_of([parent, child, grandchild], per_job=8)
    assert len(blocks) == 3
    with pytest.raises(ValueError, match="generation"):
        check_stackable([parent, child])


def test_rows_of_a_stack_may_start_from_parents_of_other_conditions():
    p0, p1 = spec(0, train_fraction=0.5), spec(0, train_fraction=0.5, optimizer=OptimizerSpec("adam", lr=0.02))
    children = [spec(0, init=InitSpec("warm"), parent=p0), spec(0, init=InitSpec("warm"), parent=p1)]
    check_stackable(children)  # the same seed twice: two runs (their parents differ)
    with pytest.raises(ValueError, match="distinct runs"):
        check_stackable([children[0], children[0]])
    with pytest.raises(ValueError, match="optimizer"):
        check_stackable([children[0], children[1].replace(optimizer=OptimizerSpec("adam", lr=0.01, weight_decay=0.1))])
