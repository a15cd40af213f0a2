"""GPU placement (warmstart.jobs.gpu_slots): no card ever runs more than jobs_per_gpu jobs, across crashes and
across workflows, and each job sees only its card. The card count is the config value, so a 4-card
machine is faked by passing gpus=4; every test uses its own lock directory."""
from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from warmstart.jobs import gpu_slots

# One training job: take a slot (which pins CUDA_VISIBLE_DEVICES), hold it for a while, record what it
# got and when, exit without releasing (the process ending frees the slot). With a barrier (a folder, a
# wave size and the job count), a job holds its slot until its whole wave holds theirs: the jobs then
# overlap however slowly this machine starts them, so the tests assert on states, not on durations.
JOB = """\
import json, os, sys, time
from pathlib import Path
from warmstart.jobs import gpu_slots
gpus, jobs_per_gpu, hold, out = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
slot = gpu_slots.acquire(gpus, jobs_per_gpu, wait_s=60, poll_s=0.02)
start = time.time()
if len(sys.argv) > 5:
    folder, size, total = Path(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
    folder.mkdir(exist_ok=True)
    (folder / Path(out).name).touch()
    wave_end = min(-(-len(list(folder.iterdir())) // size) * size, total)
    deadline = time.monotonic() + 60
    while len(list(folder.iterdir())) < wave_end:
        if time.monotonic() > deadline:
            sys.exit(f"only {len(list(folder.iterdir()))} of {wave_end} jobs ever held a slot at once")
        time.sleep(0.01)
time.sleep(hold)
record = {"card": slot.card, "device": os.environ["CUDA_VISIBLE_DEVICES"], "start": start, "end": time.time()}
with open(out, "w") as f:
    json.dump(record, f)
"""


@pytest.fixture
def job_script(tmp_path) -> Path:
    path = tmp_path / "job.py"
    path.write_text(JOB)
    return path


def job_env(lock_dir: Path, visible: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}
    env[gpu_slots.ENV_DIR] = str(lock_dir)
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    return env


def run_jobs(script: Path, out_dir: Path, groups: list[dict]) -> list[dict]:
    """Start every job of every group at once; each group is {n, gpus, jobs_per_gpu, hold, env} and
    optionally barrier: [folder, wave size, job count] (see JOB)."""
    out_dir.mkdir()
    procs = []
    for g, group in enumerate(groups):
        for i in range(group["n"]):
            cmd = [sys.executable, str(script), str(group["gpus"]), str(group["jobs_per_gpu"]), str(group["hold"]),
                   str(out_dir / f"{g}-{i}.json"), *map(str, group.get("barrier", ()))]
            procs.append(subprocess.Popen(cmd, env=group["env"]))
    for p in procs:
        assert p.wait(timeout=60) == 0
    return [json.loads(p.read_text()) for p in sorted(out_dir.glob("*.json"))]


def max_concurrent(records: list[dict]) -> int:
    return gpu_slots.peak_overlap([(r["start"], r["end"]) for r in records])


def max_per_card(records: list[dict]) -> dict[str, int]:
    by_card = collections.defaultdict(list)
    for r in records:
        by_card[r["device"]].append(r)
    return {card: max_concurrent(rs) for card, rs in sorted(by_card.items())}


@pytest.fixture
def no_gpu_env(monkeypatch):
    # setenv first, so that whatever acquire() pins is undone after the test (delenv alone of an unset
    # variable records nothing to restore)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv(gpu_slots.ENV_UNDER_SLURM, raising=False)


def test_no_card_gets_more_than_jobs_per_gpu_jobs(tmp_path, job_script):
    locks = tmp_path / "locks"
    # each of the first 8 jobs holds its slot until all 8 hold one; the last 4 until those 4 do
    records = run_jobs(job_script, tmp_path / "out",
                       [{"n": 12, "gpus": 4, "jobs_per_gpu": 2, "hold": 0.1, "env": job_env(locks),
                         "barrier": [tmp_path / "arrived", 8, 12]}])
    per_card = max_per_card(records)
    print(f"12 jobs, 4 cards x 2: at most {max_concurrent(records)} at once, per card {per_card}")
    assert len(records) == 12
    assert max_concurrent(records) == 8  # all 8 slots in use at once (the 9th job waited for one)
    assert per_card == {"0": 2, "1": 2, "2": 2, "3": 2}  # so every card ran two jobs at once, none more


def test_jobs_spread_over_the_cards_before_any_card_gets_a_second_job(tmp_path, no_gpu_env):
    locks = tmp_path / "locks"
    first = [gpu_slots.acquire(4, 2, wait_s=0, lock_dir=locks, pin=False) for _ in range(4)]
    second = [gpu_slots.acquire(4, 2, wait_s=0, lock_dir=locks, pin=False) for _ in range(4)]
    assert [s.card for s in first] == [0, 1, 2, 3] and [s.slot for s in first] == [0, 0, 0, 0]
    assert [s.card for s in second] == [0, 1, 2, 3] and [s.slot for s in second] == [1, 1, 1, 1]
    first[2].release()  # a job on card 2 ends: card 2 is now the least loaded
    again = gpu_slots.acquire(4, 2, wait_s=0, lock_dir=locks, pin=False)
    assert (again.card, again.slot) == (2, 0)
    for s in first + second + [again]:
        s.release()


def test_a_job_killed_with_sigkill_frees_its_slot(tmp_path, no_gpu_env):
    locks = tmp_path / "locks"
    holder = subprocess.Popen(
        [sys.executable, "-c", ("import sys, time\nfrom warmstart.jobs import gpu_slots\n"
         f"slots = [gpu_slots.acquire(4, 2, wait_s=0, lock_dir={str(locks)!r}, pin=False) for _ in range(8)]\n"
         "print('held', flush=True)\ntime.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert sum(len(v) for v in gpu_slots.held(4, 2, locks).values()) == 8
        with pytest.raises(TimeoutError):
            gpu_slots.acquire(4, 2, wait_s=0, lock_dir=locks, pin=False)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    assert holder.returncode == -signal.SIGKILL
    # nobody cleaned up: the kernel dropped the dead process's locks
    slots = [gpu_slots.acquire(4, 2, wait_s=0, lock_dir=locks, pin=False) for _ in range(8)]
    assert sorted((s.card, s.slot) for s in slots) == [(c, s) for c in range(4) for s in range(2)]
    for s in slots:
        s.release()


@pytest.mark.parametrize("second_view", [None, "2,3"], ids=["same-cards", "second-sees-cards-2-3"])
def test_two_workflows_share_the_cards(tmp_path, job_script, second_view):
    """Two workflows on one machine, each allowed 8 jobs by its own Snakemake, sharing a lock directory
    (as all of one user's workflows share the default one): together they never put more than 2 jobs on a card. The second one may see only
    cards 2 and 3 (CUDA_VISIBLE_DEVICES=2,3, gpus: 2): slots are counted per physical card."""
    locks = tmp_path / "locks"
    second_gpus = 4 if second_view is None else 2
    records = run_jobs(job_script, tmp_path / "out", [
        {"n": 8, "gpus": 4, "jobs_per_gpu": 2, "hold": 0.4, "env": job_env(locks)},
        {"n": 8, "gpus": second_gpus, "jobs_per_gpu": 2, "hold": 0.4, "env": job_env(locks, second_view)},
    ])
    per_card = max_per_card(records)
    print(f"two workflows: at most {max_concurrent(records)} at once, per physical card {per_card}")
    assert len(records) == 16
    assert max(per_card.values()) <= 2
    assert max_concurrent(records) <= 8
    if second_view is not None:
        assert {r["device"] for r in records[8:]} <= {"2", "3"}


def test_cuda_visible_devices_is_set_to_the_assigned_card(tmp_path, no_gpu_env):
    locks = tmp_path / "locks"
    other = gpu_slots.acquire(4, 1, wait_s=0, lock_dir=locks, pin=False)  # another job holds card 0
    slot = gpu_slots.acquire(4, 1, wait_s=0, lock_dir=locks)
    assert (slot.card, slot.device) == (1, "1")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    assert "card 1 (CUDA_VISIBLE_DEVICES=1)" in str(slot)
    # once pinned, this process sees one card: a second acquire for 4 cards says why it cannot
    with pytest.raises(ValueError, match="earlier acquire in this process"):
        gpu_slots.acquire(4, 1, wait_s=0, lock_dir=locks)
    slot.release()
    other.release()


def test_an_existing_cuda_visible_devices_list_maps_card_i_to_its_ith_entry(tmp_path, no_gpu_env, monkeypatch):
    locks = tmp_path / "locks"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    other = gpu_slots.acquire(2, 1, wait_s=0, lock_dir=locks, pin=False)
    slot = gpu_slots.acquire(2, 1, wait_s=0, lock_dir=locks)
    assert (other.card, other.device, slot.card, slot.device) == (0, "5", 1, "7")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "7"
    assert sorted(p.name for p in locks.glob("gpu*.lock")) == ["gpu5-slot0.lock", "gpu7-slot0.lock"]
    # a process that sees every card finds physical cards 5 and 7 taken
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    rest = [gpu_slots.acquire(4, 1, wait_s=0, lock_dir=locks, pin=False) for _ in range(2)]
    assert [s.device for s in rest] == ["4", "6"]
    with pytest.raises(TimeoutError):
        gpu_slots.acquire(4, 1, wait_s=0, lock_dir=locks, pin=False)
    # a list shorter than the configured card count is a config error
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    with pytest.raises(ValueError, match="resources.gpus is 4 but CUDA_VISIBLE_DEVICES='2,3' lists 2"):
        gpu_slots.acquire(4, 1, wait_s=0, lock_dir=locks)
    for s in [other, slot, *rest]:
        s.release()


def test_gpus_0_and_a_slurm_job_change_nothing(tmp_path, no_gpu_env, monkeypatch):
    locks = tmp_path / "locks"
    cpu = gpu_slots.acquire(0, 2, lock_dir=locks)
    assert not cpu.active and cpu.card is None and "CPU" in str(cpu)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # what SLURM gave this job
    slurm = gpu_slots.acquire(4, 2, lock_dir=locks)
    assert not slurm.active and "SLURM job 4242" in str(slurm)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0" and not locks.exists()
    # one allocation that runs the whole workflow locally opts in, with a lock directory of its own
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv(gpu_slots.ENV_UNDER_SLURM, "1")
    monkeypatch.delenv(gpu_slots.ENV_DIR, raising=False)
    assert gpu_slots.default_lock_dir().name == f"warmstart-gpu-slots-{os.getuid()}-slurm4242"
    with gpu_slots.acquire(2, 2, wait_s=0, lock_dir=locks) as slot:
        assert slot.active and os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    assert not slot.active


def test_pinning_after_torch_initialised_cuda_is_refused(tmp_path, no_gpu_env, monkeypatch):
    fake_torch = SimpleNamespace(cuda=SimpleNamespace(is_initialized=lambda: True))
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    with pytest.raises(RuntimeError, match="before the first CUDA call"):
        gpu_slots.acquire(4, 2, wait_s=0, lock_dir=tmp_path / "locks")
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert gpu_slots.held(4, 2, tmp_path / "locks") == {str(c): [] for c in range(4)}  # no slot taken


def test_the_wait_is_bounded_and_the_error_says_where_and_how_many(tmp_path, no_gpu_env):
    locks = tmp_path / "locks"
    slots = [gpu_slots.acquire(4, 2, wait_s=0, lock_dir=locks, pin=False) for _ in range(8)]
    t0 = time.monotonic()
    with pytest.raises(TimeoutError) as err:
        gpu_slots.acquire(4, 2, wait_s=0.3, poll_s=0.05, lock_dir=locks)
    assert time.monotonic() - t0 >= 0.3  # it did wait (and then gave up: no upper bound on a busy machine)
    msg = str(err.value)
    assert str(locks) in msg and "8 of 8 slots" in msg and "card 0: 2" in msg and f"pid {os.getpid()}" in msg
    # a job ends while another waits: the waiter gets that slot (and only after it was released)
    released = threading.Event()

    def release():
        slots[0].release()
        released.set()
    threading.Timer(0.2, release).start()
    late = gpu_slots.acquire(4, 2, wait_s=60, poll_s=0.05, lock_dir=locks, pin=False)
    assert released.is_set() and (late.card, late.slot) == (0, 0)
    for s in slots[1:] + [late]:
        s.release()


SNAKEFILE = """\
rule all:
    input: expand("out/{{i}}.json", i=range(16))

rule train:
    output: "out/{{i}}.json"
    resources: gpu_slots=1
    shell: "{python} {job} 4 2 0.1 {{output}} {barrier} 8 16"
"""


def test_a_workflow_on_a_faked_4_card_machine_runs_2_jobs_per_card(tmp_path, job_script):
    """16 jobs, each taking one of Snakemake's gpu_slots (4 cards x jobs_per_gpu 2 = 8) and then a card
    from gpu_slots: Snakemake runs 8 at once and no card gets more than 2. Each job holds its slot until 8
    jobs hold one (a barrier: the job fails if that never happens), so the check is of states, not speed."""
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(SNAKEFILE.format(python=sys.executable, job=job_script, barrier=tmp_path / "arrived"))
    env = job_env(tmp_path / "locks")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory",
                           str(tmp_path), "--cores", "8", "--resources", "gpu_slots=8", "--quiet", "all"],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("*.json")]
    per_card = max_per_card(records)
    peak = max_concurrent(records)
    print(f"\nworkflow, faked 4 cards x jobs_per_gpu 2, 16 jobs: at most {peak} jobs ran at once, "
          f"per card {per_card}, snakemake took {time.monotonic() - t0:.1f} s")
    assert len(records) == 16
    assert peak == 8 and per_card == {"0": 2, "1": 2, "2": 2, "3": 2}


def test_the_projects_training_jobs_are_pinned_to_cards_of_a_faked_4_card_machine(tmp_path, monkeypatch):
    """The workflow's own training jobs (stacks and streams) each take a card slot and say which."""
    from test_workflow import snakemake, tiny_config

    config = tiny_config()
    config["device"] = "cpu"  # the cards are faked; the runs train on the CPU
    config["resources"] = {"train_gpu": 1, "gpus": 4, "jobs_per_gpu": 2, "train_threads": 1, "gpu_wait_s": 60}
    config["experiments"] = {k: v for k, v in config["experiments"].items() if k in ("table1", "fig2")}
    env_dir = tmp_path / "locks"
    monkeypatch.setenv(gpu_slots.ENV_DIR, str(env_dir))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # all four faked cards visible
    # the training jobs and their summaries (the reports that would follow take no card)
    snakemake(tmp_path, config, "results/table1/summary.parquet", "results/fig2/rounds.parquet",
              "--resources", "gpu_slots=8", "--cores", "4")
    logs = list((tmp_path / "results" / "logs" / "stacks").glob("*.log"))
    logs += list((tmp_path / "results" / "streams").glob("*/train.log"))
    assert len(logs) >= 4
    cards = set()
    for log in logs:
        line = next(line for line in log.read_text().splitlines() if line.startswith("GPU slot: card"))
        cards.add(int(line.split()[3]))
        assert str(env_dir) in line
    assert cards <= {0, 1, 2, 3} and len(cards) >= 2
