"""Config edits retrain exactly what they change, and looking changes nothing.

On a finished tiny study whose experiments share runs (and ask of them probes, kept checkpoints and a
kept optimiser state): removing an experiment, a probe, a kept checkpoint or a kept optimiser state
plans no training job; adding a probe retrains only the runs it measures; a dry run, a lint or a report
with any config leaves the plan of every other config as it was; the parse inside a cluster job writes
no plan file; grouping seeds, stacks and streams otherwise gives the same files, bit for bit; adding an
arm trains only that arm (a job it joins takes the others' published files as they are), and a forced
job trains again."""
from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
import yaml

from test_workflow import REPO, finished, load_test_config, planned_training_runs, snakemake, training_jobs
from warmstart.core.io import load_torch

PROBED = "probed"


def study_config() -> dict:
    """A tiny study whose experiments share runs (.test/config/study.yaml)."""
    return load_test_config("study")


def without(config: dict, *experiments: str) -> dict:
    edited = copy.deepcopy(config)
    for name in experiments:
        del edited["experiments"][name]
    return edited


def nothing_to_do(workdir, config, *args) -> bool:
    return "Nothing to be done" in snakemake(workdir, config, "-n", *args).stdout


def plan_snapshot(workdir) -> dict[str, tuple[bytes, int]]:
    plan = workdir / "results" / "plan"
    return {str(p.relative_to(plan)): (p.read_bytes(), p.stat().st_mtime_ns) for p in plan.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return finished(tmp_path_factory, "study", study_config())


def test_the_finished_study_has_nothing_to_do(study):
    assert nothing_to_do(study, study_config())


@pytest.mark.parametrize("removed", [PROBED, "keep", "kept", "board"])
def test_removing_an_experiment_trains_nothing_and_its_dry_run_leaves_the_original_plan_done(study, removed):
    edited = without(study_config(), removed)
    out = snakemake(study, edited, "-n").stdout
    assert training_jobs(out) == set(), training_jobs(out)
    assert nothing_to_do(study, study_config())


def test_removing_a_probe_or_a_kept_file_from_a_shared_run_trains_nothing(study):
    edited = study_config()
    edited["experiments"][PROBED]["probes"] = []
    edited["experiments"]["keep"]["inits"] = ["random", "warm"]
    assert training_jobs(snakemake(study, edited, "-n").stdout) == set()
    # the summary still follows its experiment: it has no probe column now
    assert nothing_to_do(study, study_config())


def test_a_probe_the_experiment_did_not_ask_for_stays_out_of_its_tables(study):
    probed = pd.read_parquet(study / "results" / PROBED / "epochs.parquet")
    plain = pd.read_parquet(study / "results" / "table1" / "epochs.parquet")
    assert {"dist_to_start", "corr_with_start"} <= set(probed.columns)
    assert not {"dist_to_start", "corr_with_start"} & set(plain.columns)  # the same runs, unmeasured here
    assert set(probed["run_id"]) == set(plain["run_id"])


def test_adding_a_probe_trains_again_only_the_runs_it_measures(study):
    edited = study_config()
    edited["experiments"]["table1"]["probes"] = ["grads"]
    out = snakemake(study, edited, "-n").stdout
    retrained = planned_training_runs(study, edited, out)
    table1 = pd.read_parquet(study / "results" / "table1" / "summary.parquet")
    assert retrained == set(table1["run_name"])


def test_dry_run_lint_and_report_with_another_config_leave_every_plan_file_as_it_was(study, tmp_path):
    before = plan_snapshot(study)
    edited = study_config()
    edited["experiments"]["table1"]["probes"] = ["grads"]
    edited["experiments"]["extra"] = {**edited["experiments"]["table1"], "seeds": [5]}
    del edited["experiments"][PROBED]
    snakemake(study, edited, "-n")
    snakemake(study, edited, "--lint", check=False)
    snakemake(study, edited, "--report", str(tmp_path / "report.html"), check=False)  # its outputs do not exist
    after = plan_snapshot(study)
    # what the original config reads is untouched; the edited config only added files of its own
    changed = {k for k in before if after.get(k) != before[k]}
    assert changed <= {"status.json", "report.rst"}, changed
    assert nothing_to_do(study, study_config())
    snakemake(study, study_config(), "--report", str(tmp_path / "report.html"))
    assert (tmp_path / "report.html").exists() and nothing_to_do(study, study_config())


def test_the_parse_inside_a_cluster_job_writes_no_plan_file(study, tmp_path):
    """A cluster job parses the Snakefile again (``--mode remote``): it must not write the plan."""
    copy_dir = tmp_path / "copy"
    shutil.copytree(study, copy_dir, symlinks=True)
    shutil.rmtree(copy_dir / "results" / "plan")
    cfg = copy_dir / "remote.yaml"
    cfg.write_text(yaml.safe_dump(study_config()))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
                           str(copy_dir), "--configfile", str(cfg), "--mode", "remote", "--cores", "1", "-n",
                           "--list-rules"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (copy_dir / "results" / "plan").exists()


def regrouped_config() -> dict:
    """The study's Table 1 and leaderboard grouped otherwise: every seed a stack of its own (the study
    stacks 2), up to 4 stacks and 3 streams per job (the study trains a job per stack and per stream)."""
    config = study_config()
    config["stack_seeds"], config["stacks_per_job"], config["streams_per_job"] = 1, 4, 3
    config["experiments"] = {k: config["experiments"][k] for k in ("table1", "board")}
    return config


@pytest.fixture(scope="module")
def regrouped(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("regrouped")
    config = regrouped_config()
    out = snakemake(workdir, config, "-n").stdout
    snakemake(workdir, config)
    return workdir, out


def same_weights(a, b) -> bool:
    wa, wb = (load_torch(d / "model.pt") for d in (a, b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_grouping_the_seeds_otherwise_gives_the_same_files_bit_for_bit(study, regrouped):
    workdir, _ = regrouped
    runs = pd.read_parquet(study / "results" / "table1" / "summary.parquet")["run_name"]
    for name in runs:
        a, b = study / "results" / "runs" / name, workdir / "results" / "runs" / name
        warm = json.loads((a / "spec.json").read_text())["init"]["strategy"] == "warm"
        assert json.loads((a / "metrics.json").read_text())["stacked_seeds"] == 2  # the study stacks 2 seeds
        # a seed per stack; Table 1's warm start beside the board's interpolate arm (a wide stack), whose
        # rows the study's probes on Table 1 keep apart there
        assert json.loads((b / "metrics.json").read_text())["stacked_seeds"] == (2 if warm else 1)
        assert same_weights(a, b)
        ea, eb = (pd.read_parquet(d / "epochs.parquet").drop(columns="epoch_time_s") for d in (a, b))
        pd.testing.assert_frame_equal(ea, eb, check_exact=True)


def test_stacks_and_streams_sharing_jobs_give_the_same_files_bit_for_bit(study, regrouped):
    workdir, out = regrouped
    assert "rule train_streams:" in out and re.search(r"wildcards: stack=\S+_x\d+_", out), out
    summary = pd.read_parquet(study / "results" / "board" / "summary.parquet")
    for name in summary["run_name"]:
        assert same_weights(study / "results" / "runs" / name, workdir / "results" / "runs" / name)
    rounds = [pd.read_parquet(d / "results" / "board" / "rounds.parquet").drop(
        columns=["train_time_s", "init_time_s", "cumulative_train_time_s"]) for d in (study, workdir)]
    assert len(rounds[0]) > 2
    pd.testing.assert_frame_equal(*rounds, check_exact=True)


def trained_and_reused(workdir, since_ns: int) -> tuple[set[str], set[str]]:
    """The runs and streams the training jobs that ran since ``since_ns`` trained, and those they took
    from their published files instead (the jobs' logs)."""
    logs = [*(workdir / "results" / "logs").glob("stacks/*.log"), *(workdir / "results" / "logs").glob("runs/*.log"),
            *(workdir / "results" / "logs").glob("streams/*.log"), *(workdir / "results" / "streams").glob("*/train.log")]
    text = "\n".join(log.read_text() for log in logs if log.stat().st_mtime_ns > since_ns)
    trained = set(re.findall(r"\] done: (\S+) val_acc", text)) | set(re.findall(r"^\[(\S+)\] done: \d+ rounds", text, re.M))
    reused = set(re.findall(r"reused: (\S+), its files", text)) | set(re.findall(r"^\[(\S+)\] reused: its files", text, re.M))
    return trained, reused


def test_adding_an_arm_to_a_finished_study_trains_only_that_arm(regrouped):
    """The new arm's stack joins a job of stacks already trained (and its stream one of streams): the job
    runs again, trains only the new arm's runs and streams, and takes the others' published files as
    they are."""
    from test_workflow import SCHEMA
    from warmstart.plan.config_check import build_plan

    workdir, _ = regrouped
    config = regrouped_config()
    edited = copy.deepcopy(config)
    edited["inits"]["sp"] = {"strategy": "shrink_perturb", "shrink": 0.4, "perturb": 0.1}
    edited["experiments"]["board"]["remedies"]["sp"] = {}
    before, after = (build_plan(copy.deepcopy(c), SCHEMA) for c in (config, edited))
    new = (set(after.runs) - set(before.runs)) | (set(after.streams) - set(before.streams))
    assert any(r in new for r in after.runs) and any(s in new for s in after.streams)
    files = {p: p.read_bytes() for p in (workdir / "results").glob("*s/*/*")
             if p.parent.parent.name in ("runs", "streams") and p.suffix in (".pt", ".parquet")}
    since = time.time_ns()
    snakemake(workdir, edited)
    trained, reused = trained_and_reused(workdir, since)
    assert trained == new  # the jobs the new arm joined ran again, and trained nothing else
    assert reused & set(before.runs) and reused & set(before.streams)  # it did join jobs of both kinds
    assert all(p.read_bytes() == old for p, old in files.items())  # published again as they were
    board = pd.read_csv(workdir / "figures" / "board.csv")
    assert "sp" in set(board["remedy"])


def test_a_forced_job_trains_its_published_runs_again(regrouped):
    """--forcerun (after a change of the library's science) re-trains, never reuses."""
    workdir, _ = regrouped
    config = regrouped_config()
    run = next(p.name for p in (workdir / "results" / "runs").iterdir() if "_random_f0p5_" in p.name)  # phase 1
    since = time.time_ns()
    snakemake(workdir, config, f"results/runs/{run}/model.pt", "--forcerun", "train_stack")  # targets first
    trained, reused = trained_and_reused(workdir, since)
    assert run in trained and not reused
