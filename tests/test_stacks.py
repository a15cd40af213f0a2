"""Stacked multi-seed training: each seed of a stacked job gives what its own run gives, bit for bit, and
its run directory gets the same files. Which runs are stacked is a function of the plan."""
from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
import torch

from warmstart.components.datasets import DeviceData, load_raw
from warmstart.plan.job_blocks import plan_blocks
from warmstart.plan.planned import Plan
from warmstart.core.io import load_torch, save_torch
from warmstart.components.probes import PROBES, Probe
from warmstart.plan.plan_files import RUN_FILES
from warmstart.jobs.train_block import check_stackable, run_training, run_training_stacked
from warmstart.jobs.train_runs import execute_run, execute_runs
from warmstart.plan.job_blocks import stackable
from warmstart.core.spec import (DatasetSpec, EngineSpec, InitSpec, ModelSpec, OptimizerSpec, ProbeSpec, RunSpec,
                            StopSpec, TermSpec)
from warmstart.components.splits import make_split, save_split
from warmstart.components.terms import TERMS, Term
from warmstart.components.optimizers import OPTIMIZERS, Optimizer

SEEDS = (0, 1, 2)
DATASET = DatasetSpec("mnist1d", {"num_samples": 1000})
FIELDS = ("train_loss", "train_acc", "val_loss", "val_acc")
TIMED = {"train_time_s", "init_time_s"}  # metrics that are measured times, not results



@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return load_raw("mnist1d", tmp_path_factory.mktemp("mnist1d"), num_samples=1000)


@pytest.fixture(scope="module")
def data(raw):
    return DeviceData(raw.x_train.float(), raw.y_train, raw.x_test.float(), raw.y_test,
                      raw.num_classes, raw.input_shape)


def spec(seed, *, arch="mlp", optimizer=OptimizerSpec("adam", lr=0.01), stop=StopSpec("converged", 0.9, 30),
         batch_size=64, **fields) -> RunSpec:
    options = {"hidden": 32} if arch == "mlp" else {}
    return RunSpec(DATASET, ModelSpec(arch, options), optimizer, batch_size=batch_size, stop=stop, seed=seed, **fields)


def splits_for(specs, data):
    return [make_split(len(data.x_train), s.seed, s.validation_fraction) for s in specs]


def separate(specs, data, splits, parents):
    return [run_training(s, data, sp, p, log=None) for s, sp, p in zip(specs, splits, parents)]


def untimed(history):
    """The records without their times, a value not measured (NaN: validation before the last epoch)
    as None, so that two histories compare equal where both left it out."""
    return [{k: None if v != v else v for k, v in record.items() if k != "epoch_time_s"} for record in history]


def assert_same(stacked, single):
    """Same epochs, stop reason and per-epoch metrics, and bitwise equal final weights."""
    for (m1, r1, x1), (m2, r2, x2) in zip(stacked, single, strict=True):
        assert type(m1) is type(m2) and [type(m) for m in m1.modules()] == [type(m) for m in m2.modules()]
        assert r1.stopped_by == r2.stopped_by and untimed(r1.history) == untimed(r2.history)
        s1, s2 = m1.state_dict(), m2.state_dict()
        assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
        assert x1.keys() == x2.keys()
        assert {k: v for k, v in x1.items() if k not in TIMED} == {k: v for k, v in x2.items() if k not in TIMED}


def check(specs, data, parents=None, **kw):
    parents = parents or [None] * len(specs)
    splits = splits_for(specs, data)
    stacked = run_training_stacked(specs, data, splits, parents, log=None, **kw)
    single = separate(specs, data, splits, parents)
    assert_same(stacked, single)
    return stacked


# -- equivalence ------------------------------------------------------------------------------------------

def test_mlp_adam_seeds_stopping_at_different_epochs_match_their_own_runs(data):
    # weight decay too: a seed that stopped must not be moved by Adam's decay or moments afterwards
    specs = [spec(s, optimizer=OptimizerSpec("adam", lr=0.01, weight_decay=1e-3)) for s in SEEDS]
    out = check(specs, data)
    epochs = [len(r.history) for _, r, _ in out]
    assert all(r.stopped_by == "threshold" for _, r, _ in out)
    assert len(set(epochs)) > 1, epochs  # the point of the test: seeds finish at different epochs


def test_mlp_plain_sgd_for_a_fixed_number_of_epochs(data):
    specs = [spec(s, optimizer=OptimizerSpec("sgd", lr=0.1), stop=StopSpec("epochs", max_epochs=6)) for s in SEEDS]
    out = check(specs, data)
    assert all(r.stopped_by == "epochs" and len(r.history) == 6 for _, r, _ in out)


def test_mlp_sgd_with_momentum_seeds_stopping_at_different_epochs(data):
    # the seed in the middle row stops first: the momentum buffers of the others must be sliced right
    specs = [spec(s, optimizer=OptimizerSpec("sgd", lr=0.03, momentum=0.9, weight_decay=1e-3),
                  stop=StopSpec("converged", 0.45, 30)) for s in SEEDS]
    out = check(specs, data)
    assert all(r.stopped_by == "threshold" for _, r, _ in out)
    assert len({len(r.history) for _, r, _ in out}) > 1


@pytest.mark.parametrize("optimizer", [OptimizerSpec("sgd", lr=0.1), OptimizerSpec("adam", lr=0.01)])
def test_logreg_that_hits_the_epoch_cap(data, optimizer):
    specs = [spec(s, arch="logreg", optimizer=optimizer, stop=StopSpec("converged", 0.99, 8)) for s in SEEDS]
    out = check(specs, data)
    assert all(r.stopped_by == "max_epochs" and len(r.history) == 8 for _, r, _ in out)


def test_vmap_method_matches_too(data):
    specs = [spec(s, stop=StopSpec("converged", 0.7, 15)) for s in SEEDS[:2]]
    check(specs, data, method="vmap")


def test_warm_children_with_per_seed_parents_match_their_own_runs(data):
    stop = StopSpec("converged", 0.9, 20)
    parents = [spec(s, train_fraction=0.5, stop=stop) for s in SEEDS]
    parent_out = run_training_stacked(parents, data, splits_for(parents, data), [None] * 3, log=None)
    states = [{k: v.clone() for k, v in m.state_dict().items()} for m, _, _ in parent_out]
    children = [spec(p.seed, init=InitSpec("warm"), parent=p, stop=stop) for p in parents]
    out = check(children, data, parents=states)
    # it did start from the parent: its first epoch is far more accurate than the parent's first
    for (_, child, _), (_, parent, _) in zip(out, parent_out):
        assert child.history[0]["train_acc"] > parent.history[0]["train_acc"] + 0.1


def test_parameters_of_the_returned_models_are_not_shared_with_each_other(data):
    specs = [spec(s, stop=StopSpec("epochs", max_epochs=1)) for s in SEEDS[:2]]
    (m0, _, _), (m1, _, _) = run_training_stacked(specs, data, splits_for(specs, data), [None, None], log=None)
    assert not torch.equal(m0[1].weight, m1[1].weight)
    m0[1].weight.data.zero_()
    assert m1[1].weight.abs().sum() > 0


# -- preconditions ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("other", [
    spec(1, optimizer=OptimizerSpec("adam", lr=0.01, weight_decay=1e-4)),
    spec(1, arch="logreg"),
    spec(1, train_fraction=0.5),
    spec(1, stop=StopSpec("converged", 0.9, 31)),
    spec(0),  # a duplicate seed
])
def test_specs_that_differ_in_more_than_the_seed_are_refused(other):
    with pytest.raises(ValueError):
        check_stackable([spec(0), other])


def test_unstackable_models_and_mismatched_inputs_are_refused(data):
    resnets = [RunSpec(DATASET, ModelSpec("resnet18", {"width": 4}), OptimizerSpec("adam", lr=0.01), 64,
                       StopSpec(), s) for s in SEEDS[:2]]
    with pytest.raises(ValueError, match="cannot be stacked"):
        run_training_stacked(resnets, data, splits_for(resnets, data), [None, None], log=None)
    specs = [spec(s) for s in SEEDS[:2]]
    with pytest.raises(ValueError):
        run_training_stacked(specs, data, splits_for(specs, data)[:1], [None, None], log=None)


# -- files ------------------------------------------------------------------------------------------------

def job_inputs(raw, tmp_path, specs):
    """What a training job reads, as files: the prepared data set and each run's split."""
    data_path = tmp_path / "data.pt"
    save_torch({"x_train": raw.x_train, "y_train": raw.y_train, "x_test": raw.x_test, "y_test": raw.y_test,
                "num_classes": raw.num_classes, "classes": raw.classes, "input_shape": list(raw.input_shape),
                "name": "mnist1d", "options": dict(DATASET.options)}, data_path)
    split_paths = []
    for s in specs:
        split_paths.append(tmp_path / f"split{s.seed}.pt")
        save_split(make_split(len(raw.x_train), s.seed), split_paths[-1])
    return data_path, split_paths


def test_each_seed_gets_the_run_directory_its_own_run_would_write(raw, tmp_path):
    specs = [spec(s, stop=StopSpec("converged", 0.7, 10)) for s in SEEDS[:2]]
    data_path, split_paths = job_inputs(raw, tmp_path, specs)
    stacked_dirs = [tmp_path / "stacked" / s.name for s in specs]
    execute_runs(specs, data_path, split_paths, stacked_dirs, device="cpu", threads=1,
                 resume_path=tmp_path / "resume.pt", log=lambda m: None)
    single_dir = tmp_path / "single" / specs[1].name
    execute_run(specs[1], data_path, split_paths[1], single_dir, device="cpu", threads=1, log=lambda m: None)

    for d in stacked_dirs:
        assert sorted(p.name for p in d.iterdir()) == sorted(RUN_FILES)
    a, b = stacked_dirs[1], single_dir
    assert json.loads((a / "spec.json").read_text()) == json.loads((b / "spec.json").read_text())
    ma, mb = json.loads((a / "metrics.json").read_text()), json.loads((b / "metrics.json").read_text())
    assert set(mb) <= set(ma) and ma["epochs"] == mb["epochs"] and ma["run_id"] == mb["run_id"]
    ea, eb = pd.read_parquet(a / "epochs.parquet"), pd.read_parquet(b / "epochs.parquet")
    pd.testing.assert_frame_equal(ea.drop(columns="epoch_time_s"), eb.drop(columns="epoch_time_s"), check_exact=True)
    wa, wb = load_torch(a / "model.pt"), load_torch(b / "model.pt")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_job_takes_a_published_run_as_it_is_and_trains_the_rest_of_its_stack(raw, tmp_path):
    """A run whose files are all published (probes, kept checkpoint and optimiser state included) is
    linked into the job's directory, not trained; its stack-mate trains alone to its own run's bits."""
    from warmstart.jobs.train_runs import execute_block
    from warmstart.plan.plan_files import run_file_names

    specs = [spec(s, stop=StopSpec("epochs", max_epochs=3), probes=(ProbeSpec("init_distance"),), checkpoints=(2,),
                  keep_optimizer=True) for s in SEEDS[:2]]
    data_path, split_paths = job_inputs(raw, tmp_path, specs)
    published, alone, job = tmp_path / "runs", tmp_path / "alone", tmp_path / "job"
    for k, into in ((0, published), (1, alone)):
        execute_block([specs[k]], data_path, [split_paths[k]], [into / specs[k].name], resume_dir=tmp_path,
                      block=f"b{k}", device="cpu", threads=1, log=lambda m: None)
    first = published / specs[0].name
    assert sorted(str(p.relative_to(first)) for p in first.rglob("*") if p.is_file()) == sorted(run_file_names(specs[0]))

    logs = []
    execute_block(specs, data_path, split_paths, [job / s.name for s in specs], resume_dir=tmp_path, block="both",
                  published_dir=published, device="cpu", threads=1, log=logs.append)
    assert any(f"reused: {specs[0].name}" in m for m in logs) and any(f"done: {specs[1].name}" in m for m in logs)
    assert not any(f"done: {specs[0].name}" in m for m in logs)
    for name in run_file_names(specs[0]):  # the published files themselves, not a second training's
        assert (job / specs[0].name / name).stat().st_ino == (first / name).stat().st_ino
    wa, wb = (load_torch(d / specs[1].name / "model.pt") for d in (job, alone))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# -- planning stacks --------------------------------------------------------------------------------------

def blocks_of(specs, size=3):
    plan = Plan()
    for s in specs:
        plan.add("exp", s)
    return plan_blocks(plan, size)


def test_a_stack_holds_the_seeds_of_one_condition_and_nothing_else():
    conditions = [dict(), dict(optimizer=OptimizerSpec("adam", lr=0.01, weight_decay=1e-4)), dict(arch="logreg")]
    specs = [spec(s, **c) for c in conditions for s in SEEDS]
    resnets = [RunSpec(DATASET, ModelSpec("resnet18", {"width": 4}), OptimizerSpec("adam", lr=0.01), 64,
                       StopSpec(), s) for s in SEEDS]
    # compile is a speed option: the stacked engine does not compile, so it changes nothing about the stack
    compiled = [dataclasses.replace(spec(s, batch_size=32), engine=EngineSpec(compile=True)) for s in SEEDS]
    blocks = blocks_of(specs + resnets + compiled)
    stacks = [b for b in blocks.values() if b.stacked]
    assert len(stacks) == 4
    for block in stacks:
        assert [s.seed for s in block.specs] == list(SEEDS)
        check_stackable(block.specs)
    assert sorted(s.run_id for b in stacks for s in b.specs) == sorted(s.run_id for s in specs + compiled)
    singles = [b for b in blocks.values() if not b.stacked]
    assert sorted(b.specs[0].run_id for b in singles) == sorted(s.run_id for s in resnets)
    assert all(b.name == b.specs[0].name for b in singles)


def test_blocks_are_fixed_runs_of_seeds_so_a_seed_in_a_new_block_leaves_the_others_alone():
    before = blocks_of([spec(s) for s in SEEDS], size=3)
    after = blocks_of([spec(s) for s in (*SEEDS, 3, 4)], size=3)
    assert set(before) < set(after)
    assert all(after[name].specs == block.specs for name, block in before.items())
    (new,) = set(after) - set(before)
    assert [s.seed for s in after[new].specs] == [3, 4] and after[new].stacked
    # a block of one stackable seed is still a stack: its name does not depend on how full it is
    alone = blocks_of([spec(6)], size=3)
    assert [b.stacked for b in alone.values()] == [True]


def test_block_names_depend_on_the_plan_only():
    a = blocks_of([spec(s) for s in SEEDS])
    b = blocks_of([spec(s) for s in reversed(SEEDS)])
    assert {n: [s.seed for s in blk.specs] for n, blk in a.items()} == {n: [s.seed for s in blk.specs]
                                                                         for n, blk in b.items()}
    # stack_seeds 1: every run alone, on the same (stacked) engine, as a stack of one
    alone = blocks_of([spec(s) for s in SEEDS], size=1)
    assert len(alone) == 3 and all(blk.stacked and len(blk.specs) == 1 for blk in alone.values())


def test_an_optimiser_that_is_not_elementwise_is_never_stacked(monkeypatch):
    # e.g. a layer-wise trust ratio (LARS, LAMB): one norm over a stacked tensor would mix the seeds
    monkeypatch.setitem(OPTIMIZERS._entries, "layerwise",
                        Optimizer(lambda params, o: torch.optim.SGD(params, lr=o.lr), elementwise=False,
                                  momentum=False))
    specs = [spec(s, optimizer=OptimizerSpec("layerwise", lr=0.1)) for s in SEEDS]
    assert not stackable(specs[0])
    assert all(not b.stacked for b in blocks_of(specs).values())
    with pytest.raises(ValueError, match="cannot be stacked"):
        check_stackable(specs)


def test_a_term_that_cannot_be_computed_per_seed_keeps_its_runs_out_of_stacks(monkeypatch):
    monkeypatch.setitem(TERMS._entries, "whole_batch", Term("whole_batch", lambda b: b.cross_entropy * 0,
                                                            None, stackable=False))
    with_term = [spec(s, terms=(TermSpec("whole_batch"),)) for s in SEEDS]
    plain = [spec(s, batch_size=32) for s in SEEDS]
    blocks = blocks_of(with_term + plain)
    assert sum(b.stacked for b in blocks.values()) == 1  # only the plain condition
    assert len(blocks) == 1 + 3


def test_a_probe_decides_nothing_about_the_engine_and_one_that_cannot_measure_a_stack_is_refused(monkeypatch):
    from warmstart.plan.spec_checks import check_names
    from warmstart.core.errors import SpecError

    monkeypatch.setitem(PROBES._entries, "whole_model", Probe("whole_model", lambda ctx: {}, stackable=False))
    assert stackable(spec(0, probes=(ProbeSpec("grad_norm"),)))
    with pytest.raises(SpecError, match=r"probes\.whole_model: cannot measure a run of the stacked engine"):
        check_names(spec(0, probes=(ProbeSpec("whole_model"),)))
    # a probe measured on a run by one experiment is measured on it for all (one run, one directory)
    with_probe = [spec(s, probes=(ProbeSpec("init_distance"),)) for s in SEEDS]
    merged = blocks_of(with_probe + [spec(s) for s in SEEDS])
    assert len(merged) == 1 and all(b.specs[0].probes for b in merged.values())


def test_kept_files_do_not_change_the_engine_but_a_continued_optimiser_state_trains_alone():
    assert stackable(spec(0))
    assert stackable(spec(0, checkpoints=(2,)))  # the stack writes each seed's row out at those epochs
    assert stackable(spec(0, keep_optimizer=True))  # each row's optimiser state is cut out of the stack
    parent = spec(0, train_fraction=0.5, keep_optimizer=True)
    assert stackable(spec(0, init=InitSpec("warm"), parent=parent))
    # a stack shares one step count; carried Adam states of parents that stopped apart do not
    assert not stackable(spec(0, init=InitSpec("warm", {"optimizer_state": "keep"}), parent=parent))


# -- resuming --------------------------------------------------------------------------------------------

class Killed(Exception):
    pass


def test_a_killed_stack_resumes_and_ends_with_the_numbers_of_an_uninterrupted_one(data, tmp_path):
    from warmstart.engine.checkpoint import Checkpointing

    specs = [spec(s, optimizer=OptimizerSpec("sgd", lr=0.03, momentum=0.9), stop=StopSpec("converged", 0.6, 30))
             for s in SEEDS]
    splits = splits_for(specs, data)
    whole = run_training_stacked(specs, data, splits, [None] * 3, log=None)
    epochs = sorted(len(r.history) for _, r, _ in whole)
    assert epochs[0] < epochs[-1]  # seeds finish apart, so the kill falls after one has left the stack
    kill_at = epochs[0] + 1
    checkpointing = Checkpointing(tmp_path / "resume.pt", every_s=0, tag="stack")

    def kill(i, record):
        if record["epoch"] == kill_at:
            raise Killed
    with pytest.raises(Killed):
        run_training_stacked(specs, data, splits, [None] * 3, log=None, checkpointing=checkpointing, on_epoch=kill)
    assert checkpointing.path.exists()
    resumed = run_training_stacked(specs, data, splits, [None] * 3, log=None, checkpointing=checkpointing)
    for (m1, r1, x1), (m2, r2, x2) in zip(resumed, whole, strict=True):
        assert untimed(r1.history) == untimed(r2.history)
        assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
        assert x1["stopped_by"] == x2["stopped_by"]


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGUSR1"])
def test_a_stack_told_to_stop_saves_at_once_exits_and_resumes_to_the_same_numbers(data, tmp_path, signal_name):
    """scancel / preemption (SIGTERM) or SLURM's warning before the time limit (SIGUSR1): the stack saves its
    state at the end of the epoch, long before its periodic checkpoint is due, and exits; run again, it
    resumes and ends exactly where an uninterrupted stack ends."""
    import os
    import signal

    from warmstart.engine.checkpoint import Checkpointing

    specs = [spec(s, optimizer=OptimizerSpec("sgd", lr=0.03, momentum=0.9), stop=StopSpec("converged", 0.6, 30))
             for s in SEEDS]
    splits = splits_for(specs, data)
    whole = run_training_stacked(specs, data, splits, [None] * 3, log=None)
    checkpointing = Checkpointing(tmp_path / "resume.pt", every_s=1e9, tag="stack")  # no periodic save

    def preempt(i, record):
        if record["epoch"] == 3 and i == 0:
            os.kill(os.getpid(), getattr(signal, signal_name))
    with pytest.raises(SystemExit, match=f"{signal_name}: saved resumable state after epoch 3"):
        run_training_stacked(specs, data, splits, [None] * 3, log=None, checkpointing=checkpointing,
                             on_epoch=preempt)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are put back
    assert load_torch(checkpointing.path)["histories"][0][-1]["epoch"] == 3
    resumed = run_training_stacked(specs, data, splits, [None] * 3, log=None, checkpointing=checkpointing)
    for (m1, r1, _), (m2, r2, _) in zip(resumed, whole, strict=True):
        assert untimed(r1.history) == untimed(r2.history)
        assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))


def test_a_jobs_file_of_an_older_release_is_refused_naming_what_to_do(tmp_path):
    from warmstart.plan.plan_files import read_job_runs, reuse_published

    formats = {"before reuse_published": {"some_job": {"engine": {}, "runs": {}}},
               "before the runs' specs": {"jobs": {"some_job": {"engine": {}, "runs": {}}}, "reuse_published": True}}
    for content in formats.values():
        old = tmp_path / "jobs.json"
        old.write_text(json.dumps(content))
        with pytest.raises(ValueError, match=r"older release of warmstart: delete it"):
            reuse_published(old)
        with pytest.raises(ValueError, match=r"jobs\.json was written by an older release"):
            read_job_runs(old, "some_job")


def test_a_job_reads_its_runs_in_its_order_with_their_requests_from_the_jobs_file(tmp_path):
    from warmstart.plan.plan_files import jobs_json, read_job_runs, run_dict

    runs = [spec(2).replace(probes=(ProbeSpec("grad_norm"),), checkpoints=(1,)), spec(0), spec(1)]
    engine = EngineSpec(channels_last=False)
    jobs = tmp_path / "jobs.json"
    jobs.write_text(jobs_json({"block": engine}, {"block": runs}))
    read = read_job_runs(jobs, "block", expected=3)
    assert [r.name for r in read] == [r.name for r in runs]  # the job's order, not sorted
    assert read[0].probes == runs[0].probes and read[0].checkpoints == (1,) and not read[1].probes
    assert [run_dict(r) for r in read] == [run_dict(r) for r in runs] and read[0].engine.channels_last is False
    with pytest.raises(ValueError, match=r"plans 3 runs for job block, its inputs 2"):
        read_job_runs(jobs, "block", expected=2)
