"""Config edits retrain exactly what they change, and looking changes nothing.

On a finished tiny study whose experiments share runs (and ask of them probes, kept checkpoints and a
kept optimiser state): removing an experiment, a probe, a kept checkpoint or a kept optimiser state
plans no training job; adding a probe retrains only the runs it measures; a dry run, a lint or a report
with any config leaves the plan of every other config as it was; the parse inside a cluster job writes
no plan file; and grouping seeds otherwise gives the same files, bit for bit."""
from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys

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


def test_grouping_the_seeds_otherwise_gives_the_same_files_bit_for_bit(study, tmp_path):
    config = study_config()
    config["stack_seeds"] = 1
    config["experiments"] = {"table1": config["experiments"]["table1"]}
    snakemake(tmp_path, config)
    runs = pd.read_parquet(study / "results" / "table1" / "summary.parquet")["run_name"]
    for name in runs:
        a, b = study / "results" / "runs" / name, tmp_path / "results" / "runs" / name
        assert json.loads((a / "metrics.json").read_text())["stacked_seeds"] == 2
        assert json.loads((b / "metrics.json").read_text())["stacked_seeds"] == 1
        wa, wb = (load_torch(d / "model.pt") for d in (a, b))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
        ea, eb = (pd.read_parquet(d / "epochs.parquet").drop(columns="epoch_time_s") for d in (a, b))
        pd.testing.assert_frame_equal(ea, eb, check_exact=True)


def test_stacks_and_streams_sharing_jobs_give_the_same_files_bit_for_bit(study, tmp_path):
    """The study trains a job per stack and per stream; here up to 4 stacks and 3 streams share a job."""
    config = study_config()
    config["stacks_per_job"], config["streams_per_job"] = 4, 3
    config["experiments"] = {"board": config["experiments"]["board"]}
    out = snakemake(tmp_path, config, "-n").stdout
    assert "rule train_streams:" in out and re.search(r"wildcards: stack=\S+_x\d+_", out), out
    snakemake(tmp_path, config)
    summary = pd.read_parquet(study / "results" / "board" / "summary.parquet")
    for name in summary["run_name"]:
        a, b = study / "results" / "runs" / name, tmp_path / "results" / "runs" / name
        wa, wb = (load_torch(d / "model.pt") for d in (a, b))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    rounds = [pd.read_parquet(d / "results" / "board" / "rounds.parquet").drop(
        columns=["train_time_s", "init_time_s", "cumulative_train_time_s"]) for d in (study, tmp_path)]
    assert len(rounds[0]) > 2
    pd.testing.assert_frame_equal(*rounds, check_exact=True)
