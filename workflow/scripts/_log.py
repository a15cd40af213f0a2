"""Shared by the rule scripts: find the library, hand the job to the job server where there is one,
and send output to the rule's log file."""
import sys
from pathlib import Path

# The library in pkg/ is used even where it is not pip-installed (a --use-conda environment, a cluster
# node): the repository is the single source of the code that runs.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "pkg"))

from warmstart.jobs.job_server import run_in_job_server  # noqa: E402  (standard library only)

# Every rule script imports this module before torch or pandas: where the workflow started a job server
# (a local run, config `job_server`), the job's own process hands the job to it here and exits as the
# job's forked child exits; the child, and a job with no server, go on past this line.
run_in_job_server()


def claim_gpu(snakemake):
    """Pin this training job to a card slot (before torch touches CUDA): at most resources.jobs_per_gpu
    jobs per card, across crashed jobs and concurrent workflows (warmstart.jobs.gpu_slots)."""
    from warmstart.jobs import gpu_slots

    res = snakemake.config["resources"]
    if res["train_gpu"] == 0:
        return None
    slot = gpu_slots.acquire(res["gpus"], res["jobs_per_gpu"], wait_s=res["gpu_wait_s"])
    print(slot, flush=True)
    return slot


def redirect_to_log(snakemake):
    """Send stdout and stderr to the rule's log file, so every job leaves a readable record."""
    if snakemake.log:
        handle = open(snakemake.log[0], "w", buffering=1)
        sys.stdout = sys.stderr = handle
