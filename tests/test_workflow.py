"""The workflow's claims: what a config plans, what it re-plans after an edit, and what a run produces."""
from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import snakemake_cli
from warmstart.plan.config_check import check_config
from warmstart.core.errors import ConfigError
from warmstart.plan.experiments import plan_experiments
from warmstart.plan.plan_files import RUN_FILES, run_file_names

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
TEST_CONFIGS = REPO / ".test" / "config"  # the tiny configs of the tests, which CI also runs (make test-configs)


def load_test_config(name: str) -> dict:
    """A tiny config of .test/config/, as a dict the test may edit."""
    return yaml.safe_load((TEST_CONFIGS / f"{name}.yaml").read_text())


def snakemake(workdir: Path, config: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cfg = workdir / "config_under_test.yaml"
    cfg.write_text(yaml.safe_dump(config))
    command, env = snakemake_cli.command()  # python -m snakemake, imported once per test process
    cmd = [*command, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(cfg), "--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def planned_jobs(workdir: Path, config: dict, rule: str = "train_run", wildcard: str = "run") -> set[str]:
    """The ``wildcard`` values of the ``rule`` jobs a dry run would execute."""
    out = snakemake(workdir, config, "-n").stdout
    blocks = out.split("\nrule ")
    return {m.group(1) for b in blocks if b.startswith(f"{rule}:")
            for m in [re.search(rf"wildcards: {wildcard}=(\S+)", b)] if m}


def dry_run_outputs(workdir: Path, config: dict) -> str:
    return snakemake(workdir, config, "-n").stdout


def planned_training_runs(workdir: Path, config: dict, out: str | None = None) -> set[str]:
    """Runs a dry run would train: alone (train_run) or in a stack of seeds (train_stack_*)."""
    out = out if out is not None else dry_run_outputs(workdir, config)
    return set(re.findall(r"runs/([^/\s,]+)/model\.pt", out))


def planned_stacks(out: str) -> list[str]:
    """The stack names of the train_stack jobs in a dry run's output."""
    return re.findall(r"^rule train_stack:\n(?:    .*\n)*?    wildcards: stack=(\S+)", out, flags=re.M)


def training_jobs(out: str) -> set[str]:
    """Every training job of a dry run's output, as 'rule:wildcard value'."""
    jobs = set()
    for rule, wildcard in (("train_run", "run"), ("train_stack", "stack"), ("train_stream", "stream")):
        jobs |= {f"{rule}:{name}" for name in re.findall(
            rf"^rule {rule}:\n(?:    .*\n)*?    wildcards: {wildcard}=(\S+)", out, flags=re.M)}
    return jobs


def publish_jobs(out: str) -> dict[str, list[str]]:
    """Per run, the files its publish job writes (relative to its directory), from a dry run's output."""
    jobs = {}
    for m in re.finditer(r"^rule (publish_run\w*):\n((?:    .*\n)*)", out, flags=re.M):
        run = re.search(r"wildcards: run=(\S+)", m.group(2)).group(1)
        assert run not in jobs, f"two jobs publish {run}"
        outputs = re.search(r"output: (.*)", m.group(2)).group(1).split(", ")
        jobs[run] = [o.split(f"/runs/{run}/", 1)[1] for o in outputs]
    return jobs


def planned_streams(workdir: Path, config: dict) -> set[str]:
    return planned_jobs(workdir, config, "train_stream", "stream")


def tiny_config() -> dict:
    """Both experiment kinds of the spine on a small MNIST-1D, in seconds."""
    return load_test_config("tiny")


def paper_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


SPINE = ("table1", "fig1", "fig2", "fig9", "fig8", "fig3")


def spine_config() -> dict:
    """config.yaml with the experiments of Table 1 and Figures 1, 2, 3, 8, 9 only (Section 3 and the
    leaderboard have their own tests)."""
    config = paper_config()
    config["experiments"] = {k: v for k, v in config["experiments"].items() if k in SPINE}
    return config


# -- planning the paper's config ----------------------------------------------------------------------

def test_paper_config_plans_90_phase1_and_180_phase2_runs_for_table1():
    plan = plan_experiments(spine_config())
    table1 = plan.experiments["table1"]
    phase1 = [p for p in table1 if p.labels["phase"] == 1]
    phase2 = [p for p in table1 if p.labels["phase"] == 2]
    assert len(phase1) == 3 * 3 * 2 * 5 == 90
    assert len(phase2) == 180
    assert sorted(p.labels["init"] for p in phase2) == ["random"] * 90 + ["warm"] * 90
    # Figure 1: one phase-1 run, its warm continuation and a random run
    assert len(plan.experiments["fig1"]) == 3
    assert len(plan.runs) == 273 + 60  # Figure 3: the source and two target runs exist in Table 1 already


def test_paper_config_plans_the_papers_streams():
    plan = plan_experiments(spine_config())
    for name, policy in (("fig2", "random"), ("fig9", "margin"), ("fig8", "pc1_order")):
        planned = plan.experiments[name]
        assert len(planned) == 5 * 2  # seeds x (warm, random)
        assert {p.spec.policy for p in planned} == {policy}
        assert {p.spec.round_size for p in planned} == {100}
        assert {(p.spec.round.dataset.name, p.spec.round.model.arch, p.spec.round.optimizer.name)
                for p in planned} == {("cifar10", "resnet18", "adam")}
    assert len(plan.streams) == 30


def test_the_transfer_source_is_one_run_shared_by_every_warm_target_run():
    plan = plan_experiments(paper_config())
    fig3 = plan.experiments["fig3"]
    sources = {p.spec.run_id for p in fig3 if p.labels["phase"] == 1}
    assert len(sources) == 5  # one per seed
    warm = [p for p in fig3 if p.labels["init"] == "transfer"]
    assert all(not p.labels["baseline"] for p in warm)
    assert len(warm) == 5 * 7 and {p.spec.parent.run_id for p in warm} == sources
    assert {p.spec.dataset.name for p in warm} == {"svhn"} and {p.spec.init.strategy for p in warm} == {"transfer"}


def test_a_new_policy_or_seed_plans_only_the_new_streams():
    config = paper_config()
    before = set(plan_experiments(config).streams)
    config["experiments"]["fig2"]["policies"].append("margin")
    config["experiments"]["fig2"]["seeds"].append(5)
    after = plan_experiments(config).streams
    new = [s for n, s in after.items() if n not in before]
    assert before <= set(after)
    # fig2's margin streams for seeds 0-4 are fig9's (shared); only seed 5 is new: random and margin, warm and random
    assert len(new) == 4 and {s.seed for s in new} == {5}


def test_each_warm_run_starts_from_the_phase1_run_of_its_own_condition():
    plan = plan_experiments(paper_config())
    phase1 = {p.spec.run_id: p for p in plan.experiments["table1"] if p.labels["phase"] == 1}
    for p in plan.experiments["table1"]:
        if p.labels["init"] == "warm":
            parent = phase1[p.spec.parent.run_id]
            for key in ("dataset", "model", "optimizer", "seed"):
                assert parent.labels[key] == p.labels[key]
            assert parent.spec.train_fraction == 0.5 and p.spec.train_fraction == 1.0


def test_two_experiments_needing_the_same_phase1_run_share_it():
    config = spine_config()
    config["experiments"]["table1_cifar10"] = {**config["experiments"]["table1"], "datasets": ["cifar10"]}
    plan = plan_experiments(config)
    assert len(plan.runs) == 333  # the extra experiment adds no run: all 90 of its runs exist already


def test_dry_run_of_the_paper_config_schedules_every_run_once(tmp_path):
    out = snakemake(tmp_path, spine_config(), "-n").stdout
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    assert len(planned_training_runs(tmp_path, spine_config(), out)) == 333
    # the mlp and logreg runs of table1 go in stacks of 5 seeds: 2 models x 3 datasets x 2 optimizers x
    # (phase 1, warm, random); the rest (resnet18) are single jobs
    assert len(planned_stacks(out)) == 36 and int(counts["train_stack"]) == 36
    assert int(counts["train_run"]) == 333 - 36 * 5
    assert len(publish_jobs(out)) == 333  # every run reaches results/runs/<run>/ the same way
    assert int(counts["train_stream"]) == 30
    assert int(counts["prepare_dataset"]) == 3
    assert int(counts["make_split"]) == 15  # 3 datasets x 5 seeds, shared by all models and optimisers


def test_dry_run_of_the_whole_paper_config_schedules_each_planned_run_once(tmp_path):
    config = paper_config()
    out = snakemake(tmp_path, config, "-n").stdout
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    plan = plan_experiments(config)
    assert planned_training_runs(tmp_path, config, out) == set(plan.runs)
    assert int(counts["train_stream"]) == len(plan.streams)
    # one job publishes all of a run's files, those its training job writes, the model last
    assert publish_jobs(out) == {name: run_file_names(spec) for name, spec in plan.runs.items()}


def test_adding_a_seed_plans_only_that_seeds_runs():
    config = paper_config()
    before = set(plan_experiments(config).runs)
    config["experiments"]["table1"]["seeds"].append(5)
    after = plan_experiments(config).runs
    new = {name: spec for name, spec in after.items() if name not in before}
    assert len(new) == 18 * 3 and {s.seed for s in new.values()} == {5}
    assert before <= set(after)


def test_editing_one_condition_replans_only_that_condition():
    config = spine_config()
    before = plan_experiments(config).runs
    config["models"]["mlp"]["hidden"] = 200
    after = plan_experiments(config).runs
    changed = set(after) - set(before)
    assert changed and all(after[n].model.arch == "mlp" for n in changed)
    assert {n for n, s in before.items() if s.model.arch != "mlp"} <= set(after)
    assert len(changed) == 3 * 2 * 5 * 3  # every mlp run of table1: datasets x optimisers x seeds x 3


# -- bad configs fail before any job, naming the key ---------------------------------------------------

@pytest.mark.parametrize("edit, key", [
    (lambda c: c["optimizers"]["adam"].update(lr=-1), "optimizers.adam.lr"),
    (lambda c: c["experiments"]["table1"].update(sedes=[0]), "experiments.table1"),
    (lambda c: c["experiments"]["table1"]["models"].append("resnet34"), "experiments.table1.models[3]"),
    (lambda c: c["defaults"].update(phase1_fraction=1.5), "defaults.phase1_fraction"),
    (lambda c: c["experiments"]["table1"].update(seeds=[0, -1]), "experiments.table1.seeds[1]"),
    (lambda c: c.update(device="gpu0"), "device"),
])
def test_a_bad_config_value_is_rejected_with_its_key_named(edit, key):
    config = paper_config()
    edit(config)
    with pytest.raises(ConfigError) as err:
        check_config(config, SCHEMA)
        plan_experiments(config)
    assert str(err.value).startswith(key + ":"), str(err.value)


def test_snakemake_stops_on_a_bad_config_before_any_job(tmp_path):
    config = tiny_config()
    config["optimizers"]["adam"]["lr"] = 0
    proc = snakemake(tmp_path, config, check=False)
    assert proc.returncode != 0
    assert "config error: optimizers.adam.lr" in proc.stderr + proc.stdout
    assert not (tmp_path / "results").exists()


# -- a tiny end-to-end run -----------------------------------------------------------------------------

def finished(tmp_path_factory, name: str, config: dict) -> Path:
    """A fresh directory in which the workflow of ``config`` has run to the end."""
    workdir = tmp_path_factory.mktemp(name)
    snakemake(workdir, config)
    return workdir


@pytest.fixture(scope="module")
def finished_workdir(tmp_path_factory):
    return finished(tmp_path_factory, "e2e", tiny_config())


def test_end_to_end_run_writes_parquet_tables_and_figures(finished_workdir):
    results, figures = finished_workdir / "results", finished_workdir / "figures"
    summary = pd.read_parquet(results / "table1" / "summary.parquet")
    assert len(summary) == 2 * 2 * 3  # models x seeds x (phase 1, warm, random)
    for column in ("dataset", "model", "optimizer", "lr", "batch_size", "init", "seed", "phase", "val_acc",
                   "train_acc", "epochs", "train_time_s", "converged", "run_id"):
        assert column in summary.columns
    assert summary["val_acc"].between(0, 1).all()
    epochs = pd.read_parquet(results / "table1" / "epochs.parquet")
    assert set(epochs["run_id"]) == set(summary["run_id"])
    last_epoch = epochs.groupby("run_id")["epoch"].max()
    assert (last_epoch.sort_index() == summary.set_index("run_id")["epochs"].sort_index()).all()
    fig1 = pd.read_parquet(results / "fig1" / "epochs.parquet")
    assert (fig1.groupby("run_id")["epoch"].max() == 3).all()  # fixed-epoch rule
    # learning curves: Figure 1's runs are evaluated after every epoch, Table 1's after their last only
    assert fig1["val_acc"].notna().all() and fig1["val_loss"].notna().all() and fig1.columns.is_unique
    last = epochs["epoch"] == epochs["run_id"].map(last_epoch)
    assert epochs.loc[last, "val_acc"].notna().all() and epochs.loc[~last, "val_acc"].isna().all()

    table = pd.read_csv(figures / "table1.csv")
    assert set(table["init"]) == {"warm", "random"} and len(table) == 4
    assert "mlp adam" in (figures / "table1.md").read_text()
    for pdf in ("table1.pdf", "fig1.pdf", "fig2.pdf", "fig3.pdf"):
        assert (figures / pdf).read_bytes().startswith(b"%PDF")
    front = (figures / "index.html").read_text()  # the front page: headline numbers, every figure
    assert "Table 1's gap" in front and all(f'src="{n}.png"' in front for n in ("table1", "fig1", "fig2", "fig3"))


def test_the_html_report_holds_every_figure_and_table_with_its_caption_and_the_config(finished_workdir):
    report = finished_workdir / "report.html"
    snakemake(finished_workdir, tiny_config(), "--report", str(report))
    html = report.read_text()
    for name in ("table1", "fig1", "fig2", "fig3"):
        assert f"{name}.png" in html  # each figure and table, as its PNG
        assert f"<strong>{name}</strong> (experiment kind" in html  # with its own caption
    assert html.count("<em>Protocol.</em>") >= 4
    assert "num_samples: 600" in html and "round_size: 40" in html  # the config on the front page


def test_end_to_end_streams_write_one_row_per_round(finished_workdir):
    rounds = pd.read_parquet(finished_workdir / "results" / "fig2" / "rounds.parquet")
    assert set(rounds["init"]) == {"warm", "random"}
    for _, stream in rounds.groupby("stream_id"):
        assert stream["round"].tolist() == [1, 2, 3] and stream["n_samples"].tolist() == [40, 80, 120]
        assert (stream["cumulative_train_time_s"].diff().dropna() > 0).all()
        assert stream["val_acc"].between(0, 1).all()


def test_end_to_end_transfer_summary_has_every_fraction(finished_workdir):
    summary = pd.read_parquet(finished_workdir / "results" / "fig3" / "summary.parquet")
    target = summary[summary["phase"] == 2]
    assert sorted(target["fraction"].unique()) == [0.25, 1.0] and set(target["init"]) == {"warm", "random"}
    assert set(summary.loc[summary["phase"] == 1, "dataset"]) == {"mnist1d"}


def test_warm_rows_point_to_their_phase1_parent(finished_workdir):
    summary = pd.read_parquet(finished_workdir / "results" / "table1" / "summary.parquet")
    phase1 = summary[summary["phase"] == 1].set_index("run_id")
    warm = summary[summary["init"] == "warm"]
    assert len(warm) == 4
    for _, row in warm.iterrows():
        parent = phase1.loc[row["parent_run_id"]]
        assert (parent["model"], parent["seed"]) == (row["model"], row["seed"])
    assert summary[(summary["init"] == "random") & (summary["phase"] == 2)]["parent_run_id"].isna().all()


def test_a_finished_workflow_has_nothing_left_to_do(finished_workdir):
    assert "Nothing to be done" in snakemake(finished_workdir, tiny_config(), "-n").stdout


def test_settings_that_do_not_change_results_retrain_nothing(finished_workdir):
    config = tiny_config()
    config.update(device="cpu", checkpoint_every_s=60, stack_seeds=1, engine={"channels_last": False})
    assert "Nothing to be done" in snakemake(finished_workdir, config, "-n").stdout


def test_a_new_stream_seed_schedules_only_that_seeds_streams(finished_workdir):
    config = tiny_config()
    config["experiments"]["fig2"]["seeds"] = [0, 1]
    scheduled = planned_streams(finished_workdir, config)
    assert len(scheduled) == 2 and all("_s1_" in name for name in scheduled)
    assert planned_training_runs(finished_workdir, config) == set()


def test_the_seeds_of_an_mlp_or_logreg_condition_train_in_one_stacked_job(finished_workdir):
    summary = pd.read_parquet(finished_workdir / "results" / "table1" / "summary.parquet")
    runs = finished_workdir / "results" / "runs"
    assert (summary["stacked_seeds"] == 2).all()  # table1's two seeds, trained together
    for name in summary["run_name"]:
        assert set(RUN_FILES) <= {p.name for p in (runs / name).iterdir()}
        assert json.loads((runs / name / "metrics.json").read_text())["stacked_seeds"] == 2
    fig1 = pd.read_parquet(finished_workdir / "results" / "fig1" / "summary.parquet")
    assert (fig1["stacked_seeds"] == 1).all()  # one seed: a single run


def test_without_stacking_every_run_is_its_own_job(tmp_path):
    """stack_seeds 1: one run per job (a stackable run is then a stack of one, on the same engine)."""
    config = tiny_config()
    config["stack_seeds"] = 1
    out = dry_run_outputs(tmp_path, config)
    jobs = [j for j in training_jobs(out) if not j.startswith("train_stream:")]
    assert planned_stacks(out) and len(jobs) == len(planned_training_runs(tmp_path, config, out))


def test_adding_a_seed_schedules_only_that_seeds_runs(finished_workdir):
    config = tiny_config()
    config["experiments"]["table1"]["seeds"] = [0, 1, 2]
    scheduled = planned_training_runs(finished_workdir, config)
    assert len(scheduled) == 2 * 3  # one new seed x two models x (phase 1, warm, random)
    assert all("_s2_" in name for name in scheduled)
    assert planned_streams(finished_workdir, config) == set()


def test_editing_one_model_reschedules_only_that_models_runs(finished_workdir):
    config = copy.deepcopy(tiny_config())
    config["models"]["mlp"]["hidden"] = 8
    scheduled = planned_training_runs(finished_workdir, config)
    # table1's mlp runs, fig1's, and fig3's (source shared with table1, and 2 fractions x 2 inits)
    assert len(scheduled) == 2 * 3 + 3 + 4
    assert all("_mlp_" in name for name in scheduled)
    assert len(planned_streams(finished_workdir, config)) == 2  # fig2 uses the mlp too


# -- a DAG that depends only on the config -------------------------------------------------------------

PROFILE_TRIGGERS = ()  # the workflow profile (profiles/default) is found next to the Snakefile
DEFAULT_TRIGGERS = ("--workflow-profile", "none")  # Snakemake's own defaults: mtime params input code software-env
TRIGGERS = pytest.mark.parametrize("triggers", [PROFILE_TRIGGERS, DEFAULT_TRIGGERS], ids=["profile", "defaults"])


def test_the_default_triggers_are_snakemakes_own(finished_workdir):
    """Guard for the parametrisation below: without the profile, Snakemake reports its default triggers."""
    out = snakemake(finished_workdir, tiny_config(), "-n", "--rerun-triggers", "input", *DEFAULT_TRIGGERS)
    assert "Nothing to be done" in out.stdout


def test_a_dry_run_and_a_lint_write_no_file(tmp_path):
    """Parsing the workflow writes no file: the plan files are written by jobs (workflow/rules/plan.smk);
    only Snakemake's own records in .snakemake/ and the test's config file appear."""
    snakemake(tmp_path, tiny_config(), "-n")
    snakemake(tmp_path, tiny_config(), "--lint")
    snakemake(tmp_path, tiny_config(), "--list-rules")
    written = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file() and ".snakemake" not in p.parts}
    assert written == {"config_under_test.yaml"}, written


def test_a_run_rewrites_no_plan_file_and_a_deleted_one_comes_back_the_same_training_nothing(finished_workdir):
    """A plan file is written by its job only where it is missing, to the bytes the config plans, and a
    re-made one makes nothing downstream look out of date (its consumers read it as ``ancient``)."""
    plan = finished_workdir / "results" / "plan"
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in plan.rglob("*.json") if p.name != "status.json"}
    assert {p.parent.name for p in before} == {"streams", "experiments", "plan"}
    for p in before:
        p.unlink()
    assert "Nothing to be done" in snakemake(finished_workdir, tiny_config(), "-n").stdout  # none is needed
    snakemake(finished_workdir, tiny_config(), *(str(p.relative_to(finished_workdir)) for p in before))
    assert {p: p.read_bytes() for p in before} == {p: b for p, (b, _) in before.items()}
    remade = {p: p.stat().st_mtime_ns for p in before}
    assert "Nothing to be done" in snakemake(finished_workdir, tiny_config(), "-n").stdout
    snakemake(finished_workdir, tiny_config())  # a run with nothing to do rewrites no plan file
    assert {p: p.stat().st_mtime_ns for p in before} == remade


def test_training_job_names_are_the_same_before_during_and_after_training(tmp_path):
    config = tiny_config()
    config["models"]["resnet"] = {"arch": "resnet18", "width": 2}  # a single-run job too
    config["experiments"]["fig1"]["models"] = ["resnet"]
    before = training_jobs(snakemake(tmp_path, config, "-n", "--forceall").stdout)
    assert {job.split(":")[0] for job in before} == {"train_run", "train_stack", "train_stream"}
    # train part of them (Table 1's stacks), then plan again
    table1 = training_jobs(snakemake(tmp_path, config, "-n", "--forceall", "results/table1/summary.parquet").stdout)
    snakemake(tmp_path, config, "results/table1/summary.parquet")
    during = snakemake(tmp_path, config, "-n").stdout
    assert training_jobs(snakemake(tmp_path, config, "-n", "--forceall").stdout) == before
    left = training_jobs(during)
    assert left and left == before - table1


@TRIGGERS
def test_an_unrelated_edit_trains_nothing_and_reverting_an_edit_finds_the_old_runs(finished_workdir, triggers):
    config = tiny_config()
    config["experiments"]["extra"] = {**config["experiments"]["fig1"], "models": ["logreg"]}
    out = snakemake(finished_workdir, config, "-n", *triggers).stdout
    trained = planned_training_runs(finished_workdir, config, out)
    assert trained and all("_logreg_" in name for name in trained)  # only the new experiment's runs
    assert planned_streams(finished_workdir, config) == set()
    # an edit that changes runs, then reverted: nothing to do
    edited = copy.deepcopy(tiny_config())
    edited["optimizers"]["adam"]["lr"] = 0.02
    assert planned_training_runs(finished_workdir, edited, snakemake(finished_workdir, edited, "-n", *triggers).stdout)
    assert "Nothing to be done" in snakemake(finished_workdir, tiny_config(), "-n", *triggers).stdout


@TRIGGERS
def test_adding_a_seed_trains_only_that_seed_under_both_trigger_sets(finished_workdir, triggers):
    config = tiny_config()
    config["experiments"]["table1"]["seeds"] = [0, 1, 2]  # stack_seeds 2: seed 2 opens a new block
    out = snakemake(finished_workdir, config, "-n", *triggers).stdout
    trained = planned_training_runs(finished_workdir, config, out)
    assert len(trained) == 2 * 3 and all("_s2_" in name for name in trained)
    # one block per condition (2 models x phase 1, warm, random), each holding seed 2 alone
    stacks = planned_stacks(out)
    assert len(stacks) == 6 and all("_b1_" in name for name in stacks)


def test_forcerun_until_and_set_resources_address_the_training_rules_by_name(finished_workdir, tmp_path):
    config = tiny_config()
    forced = snakemake(finished_workdir, config, "-n", "--forcerun", "train_stack").stdout
    assert planned_stacks(forced) and not re.search(r"^rule train_run:", forced, flags=re.M)
    assert not re.search(r"^rule train_stream:", forced, flags=re.M)
    config["models"]["resnet"] = {"arch": "resnet18", "width": 2}  # a single-run job too
    config["experiments"]["fig1"]["models"] = ["resnet"]
    until = snakemake(tmp_path, config, "-n", "--until", "train_run").stdout
    assert re.search(r"^rule train_run:", until, flags=re.M)
    assert not re.search(r"^rule (summarize|report_\w+|train_stream):", until, flags=re.M)
    resources = snakemake(finished_workdir, config, "-n", "--forcerun", "train_stack", "train_run",
                          "--set-resources", "train_stack:mem_mb=1234", "train_run:mem_mb=4321").stdout
    for rule, mem in (("train_stack", "1234"), ("train_run", "4321")):
        blocks = [b for b in resources.split("\nrule ") if b.startswith(f"{rule}:")]
        assert blocks and all(f"mem_mb={mem}" in b for b in blocks), rule


def test_status_counts_finished_running_interrupted_and_missing_runs_from_the_files(finished_workdir, tmp_path):
    import os
    import time

    from warmstart.jobs.status import experiment_counts, format_counts

    status = finished_workdir / "results" / "plan" / "status.json"
    counts = experiment_counts(status)
    assert counts["table1"] == {"finished": 12, "running": 0, "interrupted": 0, "missing": 0}
    assert counts["fig2"]["finished"] == 2
    # the same plan seen before the runs finished: a fresh log is running, resume state interrupted
    units = json.loads(status.read_text())
    (tmp_path / "plan").mkdir()
    first = units["table1"][0]
    second = next(u for u in units["table1"] if u["log"] != first["log"])  # another training job
    for path in (first["log"], second["log"], second["resume"]):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / first["log"]).write_text("epoch 3")
    (tmp_path / second["log"]).write_text("epoch 1")
    os.utime(tmp_path / second["log"], (time.time() - 600, time.time() - 600))
    (tmp_path / second["resume"]).write_bytes(b"state")
    (tmp_path / "plan" / "status.json").write_text(json.dumps(units))
    counts = experiment_counts(tmp_path / "plan" / "status.json")
    # the runs of one stacked job share its log and resume state
    running = sum(u["log"] == first["log"] for u in units["table1"])
    interrupted = sum(u["log"] == second["log"] for u in units["table1"])
    assert running == interrupted == 2  # stacks of 2 seeds
    assert counts["table1"] == {"finished": 0, "running": 2, "interrupted": 2, "missing": 8}
    assert format_counts("results", counts)[0].split()[:3] == ["results", "fig1", "0/3"]
