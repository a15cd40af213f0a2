"""The workflow on a real (single-node) SLURM cluster, through ``profiles/slurm``.

The module fixture starts the test cluster of ``tests/cluster/slurm-up.sh`` (one node with this machine's
CPUs and one GPU advertised through gres; no accounting daemon) and stops it again with ``slurm-down.sh``
if it was not running before. The tests:

* a slice of the demo (Table 1: mlp, Adam, two seeds stacked in one job, phase 1 then the warm start)
  trains as SLURM jobs that get the CPUs, memory, time and GPU the config asks for, with the profile's
  requeue and signal settings, and gives the same numbers as the same slice run locally;
* a training job cancelled with ``scancel`` after it saved resumable state is submitted again (the
  profile's ``retries``), resumes from that state, and ends with the numbers of an uninterrupted run.

Both copy one locally prepared dataset and its splits into their working directories, so that only
training (and publishing) runs on the cluster: each SLURM job costs ~10 s of Snakemake start-up, and the
executor plugin polls at growing intervals (1 s, then +10 s each time nothing finished).

Skipped, with the reason, when the cluster cannot be started (not root, no SLURM packages and no
package archive), when the SLURM executor plugin is missing, or when the environment variable
``WARMSTART_SLURM=0`` is set (e.g. on a machine where starting daemons is unwelcome).

Run: ``python -m pytest tests/test_slurm.py -q`` (or ``-m slurm``; ``-m "not slurm"`` leaves it out).
Takes 1.5 to 3 minutes on 2 cores: a job that ends just after a status check waits ~20 s for the next.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from warmstart.core.io import load_torch

REPO = Path(__file__).resolve().parents[1]
SLURM_UP = REPO / "tests" / "cluster" / "slurm-up.sh"
SLURM_DOWN = REPO / "tests" / "cluster" / "slurm-down.sh"
PROFILE = REPO / "profiles" / "slurm"
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"

pytestmark = pytest.mark.slurm

UP_TIMEOUT_S = 900  # a first run installs the Debian packages (about 20 s; apt-get is bounded in the script)
RUN_TIMEOUT_S = 300  # any one snakemake command
# The test cluster has no slurmdbd, so `sacct` cannot answer and the plugin would poll it for ever:
# squeue works because slurm-up.sh keeps finished jobs visible (MinJobAge). The first status check
# after 1 s instead of 40 s; the latency wait is for shared file systems, here the disk is local.
SLURM_ARGS = ("--profile", str(PROFILE), "--slurm-status-command", "squeue",
              "--slurm-init-seconds-before-status-checks", "1", "--latency-wait", "3",
              "--slurm-keep-successful-logs", "--verbose")
# What a training job asks for (config resources): memory and time distinct from every default so the
# checks see them; one thread, since two torch threads on a busy 2-core machine are slower (up to 10x)
THREADS, MEM_MB, RUNTIME_MIN = 1, 600, 7
KILL_EPOCHS = 250  # the cancelled job trains ~10 s in all (demo data, mlp, two seeds stacked)
SIGNAL_FLAG = "--signal=TERM@120"  # profiles/slurm: SIGTERM 120 s before a training job's time limit
# Metrics that do not depend on timing (or on where the job ran)
SAME = ("epochs", "samples_seen", "stopped_by", "converged", "n_train", "n_val", "num_parameters",
        "train_acc", "train_loss", "val_acc", "val_loss")


# -- the cluster -------------------------------------------------------------------------------------

def _daemon_running(name: str) -> bool:
    pid_file = Path(f"/run/{name}.pid")
    try:
        pid = pid_file.read_text().strip()
        return os.path.realpath(f"/proc/{pid}/exe") == os.path.realpath(f"/usr/sbin/{name}")
    except OSError:
        return False


def _cluster_running() -> bool:
    return _daemon_running("slurmctld") and _daemon_running("slurmd")


def _script(path: Path, timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(["bash", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return subprocess.CompletedProcess(proc.args, 124, out, err + f"\n{path.name}: timed out after {timeout}s")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running single-node test cluster; left as found (stopped again if this fixture started it:
    while slurm.conf names a controller that is down, every snakemake command waits ~9 s)."""
    if os.environ.get("WARMSTART_SLURM", "1").strip().lower() in ("0", "no", "false", "off"):
        pytest.skip("WARMSTART_SLURM=0: SLURM cluster tests disabled")
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.skip("snakemake-executor-plugin-slurm is not installed (pip install -e '.[workflow]')")
    was_running = _cluster_running()
    started = time.monotonic()
    up = _script(SLURM_UP, UP_TIMEOUT_S)
    if up.returncode != 0:
        lines = [line for line in (up.stderr or "").splitlines() if line.strip()]
        if not was_running and os.geteuid() == 0:
            _script(SLURM_DOWN, 60)  # a half-started cluster must not slow every later snakemake command
        pytest.skip(f"no SLURM test cluster: {lines[-1] if lines else f'slurm-up.sh exited {up.returncode}'}")
    print(f"slurm-up.sh: {time.monotonic() - started:.1f}s (cluster {'was' if was_running else 'not'} running)")
    yield
    if not was_running:
        down = _script(SLURM_DOWN, 60)
        assert down.returncode == 0, f"slurm-down.sh failed:\n{down.stdout}\n{down.stderr}"


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"({e})"


@contextmanager
def diagnosed(*outputs: Path, cluster: bool = True):
    """On failure, print the tails of ``outputs`` (snakemake's output, a training log) and of the SLURM
    daemons' logs, and the latest jobs (pytest shows what a failed test printed)."""
    try:
        yield
    except Exception:
        for path in outputs:
            print(f"==== {path} (tail) ====\n{_tail(path, 80)}")
        if cluster:
            for name in ("slurmctld", "slurmd"):
                print(f"==== /var/log/slurm/{name}.log (tail) ====\n{_tail(Path(f'/var/log/slurm/{name}.log'))}")
            try:
                queue = subprocess.run(["squeue", "-a", "-t", "all", "--sort=-i", "-o", "%i %j %T %M %R %k"],
                                       capture_output=True, text=True, timeout=20)
                latest = "\n".join(queue.stdout.splitlines()[:16]) + queue.stderr
            except (OSError, subprocess.TimeoutExpired) as e:
                latest = f"({e})"
            print(f"==== squeue (latest jobs) ====\n{latest}")
        raise


# -- the workflow ------------------------------------------------------------------------------------

def demo_slice(max_epochs: int, threads: int, checkpoint_every_s: float = 300) -> dict:
    """Table 1 of the demo (config/demo.yaml) cut to the MLP with Adam, seeds 0 and 1 in one stack,
    phase 1 and the warm start, a fixed number of epochs; training jobs ask for one GPU."""
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    table1 = config["experiments"]["table1"]
    config["experiments"] = {"table1": {**table1, "models": ["mlp"], "optimizers": ["adam"], "seeds": [0, 1],
                                        "inits": ["warm"], "stop": {"rule": "epochs", "max_epochs": max_epochs}}}
    config["datasets"] = {d: config["datasets"][d] for d in table1["datasets"]}
    config.update(results_dir="results", figures_dir="figures", device="auto", stack_seeds=2,
                  checkpoint_every_s=checkpoint_every_s)
    config["resources"] = {**(config.get("resources") or {}), "train_gpu": 1, "train_threads": threads,
                           "train_mem_mb": MEM_MB, "train_runtime_min": RUNTIME_MIN}
    return config


def training_blocks(config: dict) -> dict:
    """The config's training jobs as the Snakefile plans them: block name -> Block."""
    from warmstart.plan.config_check import check_config
    from warmstart.plan.experiments import plan_experiments
    from warmstart.plan.job_blocks import plan_blocks

    config = copy.deepcopy(config)
    check_config(config, SCHEMA)  # fills in the schema's defaults, as the Snakefile does
    return plan_blocks(plan_experiments(config), config["stack_seeds"])


def metrics_targets(blocks) -> list[str]:
    return [f"results/runs/{spec.name}/metrics.json" for block in blocks for spec in block.specs]


class Snakemake:
    """One snakemake command in the background, its output in a file; bounded, and cleaned up."""

    def __init__(self, workdir: Path, config: dict, targets, *args: str):
        self.workdir = workdir
        self.log = workdir / "snakemake.out"
        cfg = workdir / "config_under_test.yaml"
        cfg.write_text(yaml.safe_dump(config))
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
               str(workdir), "--configfile", str(cfg), *args, *targets]
        self.started = time.monotonic()
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.wall_s = None
        threading.Thread(target=self._time, daemon=True).start()

    def _time(self) -> None:
        self.proc.wait()
        self.wall_s = time.monotonic() - self.started

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float = RUN_TIMEOUT_S) -> int:
        try:
            self.proc.wait(timeout=max(1.0, timeout - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"snakemake in {self.workdir} did not finish within {timeout}s")
        while self.wall_s is None:
            time.sleep(0.01)
        return self.proc.returncode

    def kill(self) -> None:
        """The executor plugin may ignore SIGTERM (reference notes): kill its process group, then cancel
        the SLURM jobs it left behind in its working directory."""
        if self.running():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        cancel_jobs_in(self.workdir)

    def check(self, timeout: float = RUN_TIMEOUT_S) -> None:
        rc = self.wait(timeout)
        assert rc == 0, f"snakemake in {self.workdir} exited {rc}"

    def slurm_jobs(self) -> dict[str, list[int]]:
        """SLURM job ids by 'rule/wildcards', in submission order, from the plugin's submission lines."""
        jobs: dict[str, list[int]] = {}
        for job_id, log in re.findall(r"submitted with SLURM jobid (\d+) \(log: (\S+)\)", self.output()):
            rule, wildcards = Path(log).parts[-3:-1]
            jobs.setdefault(f"{rule.removeprefix('rule_')}/{wildcards}", []).append(int(job_id))
        return jobs

    def sbatch_call(self, comment: str) -> str:
        calls = [c for c in re.findall(r"sbatch call: (.*)", self.output()) if comment in c]
        assert calls, f"no 'sbatch call' with {comment!r} in the verbose output"
        return calls[-1]


def cancel_jobs_in(workdir: Path) -> None:
    queue = subprocess.run(["squeue", "-h", "-o", "%i %Z", "-t", "PD,R,CG,S,CF,RQ,RS,SE"], capture_output=True,
                           text=True, timeout=20)
    ids = [line.split()[0] for line in queue.stdout.splitlines()
           if len(line.split()) == 2 and line.split()[1].startswith(str(workdir))]
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=20)


@contextmanager
def bounded(*runs: Snakemake):
    try:
        yield
    finally:
        for run in runs:
            run.kill()


def scontrol_job(job_id: int) -> dict[str, str]:
    out = subprocess.run(["scontrol", "-d", "show", "job", str(job_id)], capture_output=True, text=True,
                         timeout=20, check=True).stdout
    fields = {}
    for token in out.split():
        key, sep, value = token.partition("=")
        if sep and key not in fields:  # -d repeats some keys per node; the job's own come first
            fields[key] = value
    fields["_text"] = out
    return fields


def run_results(workdir: Path, run: str):
    d = workdir / "results" / "runs" / run
    metrics = json.loads((d / "metrics.json").read_text())
    epochs = pd.read_parquet(d / "epochs.parquet")
    epochs = epochs.drop(columns=[c for c in epochs.columns if c.endswith("time_s")])
    model = load_torch(d / "model.pt", map_location="cpu")
    return {k: metrics.get(k) for k in SAME}, epochs, model


def assert_same_results(a: Path, b: Path, runs) -> None:
    for run in runs:
        metrics_a, epochs_a, model_a = run_results(a, run)
        metrics_b, epochs_b, model_b = run_results(b, run)
        assert metrics_a == metrics_b, f"{run}: metrics differ"
        pd.testing.assert_frame_equal(epochs_a, epochs_b, check_exact=True, obj=f"{run} epochs.parquet")
        assert model_a.keys() == model_b.keys()
        for key in model_a:
            assert torch.equal(model_a[key], model_b[key]), f"{run}: weights {key} differ"


@pytest.fixture(scope="module")
def prepared(slurm_cluster, tmp_path_factory) -> Path:
    """A working directory holding the demo's dataset and split files (prepared locally, once)."""
    seed = tmp_path_factory.mktemp("prepared")
    run = Snakemake(seed, demo_slice(max_epochs=1, threads=1), [], "--cores", "2", "--until", "make_split")
    with bounded(run), diagnosed(run.log, cluster=False):
        run.check()
    return seed


def workdir_from(prepared: Path, path: Path) -> Path:
    shutil.copytree(prepared, path, ignore=shutil.ignore_patterns("snakemake.out", "config_under_test.yaml"))
    return path


# -- the tests ---------------------------------------------------------------------------------------

def test_a_slice_of_the_demo_trains_as_slurm_jobs_with_the_requested_resources(prepared, tmp_path, capsys):
    config = demo_slice(max_epochs=20, threads=THREADS)
    blocks = training_blocks(config)
    assert len(blocks) == 2 and all(b.stacked for b in blocks.values())  # phase 1, then the warm start
    targets = metrics_targets(blocks.values())
    runs = [spec.name for b in blocks.values() for spec in b.specs]

    local = Snakemake(workdir_from(prepared, tmp_path / "local"), config, targets, "--cores", "2")
    with bounded(local), diagnosed(local.log, cluster=False):
        local.check()
    slurm = Snakemake(workdir_from(prepared, tmp_path / "slurm"), config, targets, *SLURM_ARGS)
    with bounded(slurm), diagnosed(slurm.log):
        slurm.check()
        submitted = slurm.slurm_jobs()
        trained = {key.split("/", 1)[1]: ids for key, ids in submitted.items() if key.startswith("train_")}
        assert set(trained) == set(blocks), f"training jobs on SLURM: {sorted(submitted)}"
        for block, ids in trained.items():
            assert len(ids) == 1, f"{block} was submitted {len(ids)} times"
            job = scontrol_job(ids[0])
            seen = {k: job.get(k) for k in ("JobState", "ExitCode", "NumCPUs", "MinMemoryNode", "TimeLimit",
                                              "TresPerJob", "CpusPerTres", "Requeue", "Partition")}
            with capsys.disabled():
                print(f"\n[slurm] job {ids[0]} ({block}): {seen}")
            assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0"
            assert job["WorkDir"] == str(slurm.workdir)
            assert block in job["Comment"]
            assert job["NumCPUs"] == str(THREADS)
            assert job["MinMemoryNode"] == f"{MEM_MB}M"
            assert job["TimeLimit"] == f"00:{RUNTIME_MIN:02d}:00"
            assert re.search(r"gres[:/]gpu[:=]1\b", job.get("TresPerJob", "")), job["_text"]
            # the profile's preemption settings reached sbatch and SLURM accepted them (slurm-up.sh sets
            # JobRequeue=0, so Requeue=1 is the profile's --requeue; SLURM 22.05 does not show --signal)
            assert job["Requeue"] == "1"
            call = slurm.sbatch_call(f"_{block}")
            assert SIGNAL_FLAG in call and "--requeue" in call and "--gpus=1" in call
            # the job's own log, named by its SLURM id
            assert (slurm.workdir / ".snakemake" / "slurm_logs" / "rule_train_stack" / block /
                    f"{ids[0]}.log").exists()
        assert_same_results(local.workdir, slurm.workdir, runs)
    with capsys.disabled():
        print(f"\n[slurm] demo slice ({len(blocks)} training jobs, {len(runs)} runs): "
              f"SLURM {slurm.wall_s:.1f}s, local --cores 2 {local.wall_s:.1f}s")


def wait_until_ended(job_id: int, timeout: float = 60) -> str:
    """The job's final state, once SLURM has ended all its processes (KillWait is 30 s)."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = scontrol_job(job_id)["JobState"]
        if state not in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED"):
            return state
        time.sleep(0.2)
    raise AssertionError(f"SLURM job {job_id} still {state} after {timeout}s")


def test_a_cancelled_training_job_is_resubmitted_and_resumes_from_its_saved_state(prepared, tmp_path, capsys):
    config = demo_slice(max_epochs=KILL_EPOCHS, threads=1, checkpoint_every_s=1)  # state saved every second
    blocks = training_blocks(config)
    (block,) = [b for b in blocks.values() if all(spec.parent is None for spec in b.specs)]  # phase 1
    targets = metrics_targets([block])
    runs = [spec.name for spec in block.specs]

    slurm = Snakemake(workdir_from(prepared, tmp_path / "slurm"), config, targets, *SLURM_ARGS)
    local_dir = workdir_from(prepared, tmp_path / "local")
    resume = slurm.workdir / "results" / "resume" / f"{block.name}.pt"
    train_log = slurm.workdir / "results" / "logs" / "stacks" / f"{block.name}.log"
    with bounded(slurm), diagnosed(slurm.log, train_log):
        deadline = time.monotonic() + 180
        while not resume.exists() and slurm.running() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert resume.exists(), "the training job saved no resumable state"
        ids = slurm.slurm_jobs().get(f"train_stack/{block.name}")
        assert ids, "the training job's SLURM id is not in the output"
        saved = load_torch(resume, map_location="cpu")
        saved_epoch = len(saved["histories"][saved["active"][0]]) if saved["active"] else None
        cancelled = subprocess.run(["scancel", str(ids[0])], capture_output=True, text=True, timeout=20)
        assert cancelled.returncode == 0, cancelled.stderr
        killed_at = time.monotonic() - slurm.started
        assert wait_until_ended(ids[0]) == "CANCELLED"
        # the cancelled attempt's log, before the retry (submitted at the plugin's next status check,
        # >= 10 s later) overwrites it
        first_log = train_log.read_text() if train_log.exists() else ""

        # the uninterrupted run, locally (now: it would slow the SLURM job's start, which the kill waits for)
        local = Snakemake(local_dir, config, targets, "--cores", "1")
        with bounded(local), diagnosed(local.log, cluster=False):
            slurm.check()
            local.check()
        ids = slurm.slurm_jobs()[f"train_stack/{block.name}"]
        assert len(ids) == 2, f"expected the cancelled job and its retry, got SLURM jobs {ids}"
        first, second = scontrol_job(ids[0]), scontrol_job(ids[1])
        assert first["JobState"] == "CANCELLED", first["_text"]
        assert second["JobState"] == "COMPLETED" and second["ExitCode"] == "0:0", second["_text"]
        assert first["Requeue"] == second["Requeue"] == "1"
        assert re.search(rf"SLURM-job '{ids[0]}' failed, SLURM status is: 'CANCELLED'", slurm.output())
        log = train_log.read_text()
        resumed = re.search(r"resumed from (\S+) after epoch (\d+)", log)
        assert resumed, f"the resubmitted job did not resume:\n{log}"
        assert Path(resumed.group(1)).name == resume.name
        resumed_epoch = int(resumed.group(2))
        assert 1 <= resumed_epoch < KILL_EPOCHS
        assert saved_epoch is None or resumed_epoch >= saved_epoch
        # on SIGTERM the cancelled attempt saved its state at once (pkg/warmstart/engine/checkpoint.py), so the retry
        # resumed exactly there, not from the last periodic save
        on_signal = re.search(r"SIGTERM\b.*?after epoch (\d+)", first_log)
        assert on_signal, f"the cancelled attempt did not save on SIGTERM:\n{first_log}"
        assert resumed_epoch == int(on_signal.group(1))
        assert not resume.exists()  # removed once the runs were written
        assert_same_results(local.workdir, slurm.workdir, runs)
    last_words = [line for line in first_log.splitlines() if line.strip()][-1:] or ["(no log)"]
    with capsys.disabled():
        print(f"\n[slurm] kill-and-resume: job {ids[0]} cancelled {killed_at:.1f}s after the start, when its state "
              f"was saved after epoch {saved_epoch} of {KILL_EPOCHS} (its log ends: {last_words[0]!r}); "
              f"job {ids[1]} resumed after epoch {resumed_epoch}; results equal the uninterrupted local run. "
              f"SLURM {slurm.wall_s:.1f}s, local {local.wall_s:.1f}s")
