"""Throughput of a grid of small training jobs when N of them share one card (resources.jobs_per_gpu = N).

A grid of ``--jobs`` independent runs (one arch, seeds 0..jobs-1, a fixed number of epochs on MNIST-1D,
generated offline) is trained as a workflow trains it: one process per run, at most N at a time (what
Snakemake's ``gpu_slots`` resource allows), each taking a slot on the card with ``warmstart.jobs.gpu_slots``
(which pins ``CUDA_VISIBLE_DEVICES``) and then running ``warmstart.jobs.train_runs.execute_run`` on the prepared
dataset and split files. For each N (``--concurrency``, default 1 2 4) the whole grid is timed, from the
first process start to the last exit, so process start-up, torch import and CUDA context creation, which
every workflow job pays, are counted. Small models leave a big card mostly idle, so several jobs per card
should finish the grid sooner; this measures by how much.

    python benchmarks/bench_jobs_per_gpu.py                      # on the GPU: 8 mlp jobs x 20 epochs
    python benchmarks/bench_jobs_per_gpu.py --device cpu --jobs 4 --epochs 2 --concurrency 1 2 \\
        --num-samples 2000                                       # CPU smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from warmstart.jobs import gpu_slots  # no torch: a worker must take its GPU slot (CUDA_VISIBLE_DEVICES) first

# No torch import at module level: a worker must take its GPU slot (and set CUDA_VISIBLE_DEVICES) first.


def spec_for(arch: str, seed: int, epochs: int, num_samples: int):
    from warmstart.core.spec import DatasetSpec, ModelSpec, OptimizerSpec, RunSpec, StopSpec
    return RunSpec(DatasetSpec("mnist1d", {"num_samples": num_samples}), ModelSpec(arch), OptimizerSpec("adam", 1e-3),
                   128, StopSpec("epochs", max_epochs=epochs), seed, train_fraction=0.5)


def worker(argv) -> None:
    """One job: take a slot, train one run from files to files, print one JSON line of timings."""
    p = argparse.ArgumentParser()
    p.add_argument("spec")
    p.add_argument("data")
    p.add_argument("split")
    p.add_argument("out")
    p.add_argument("--device", required=True)
    p.add_argument("--gpus", type=int, required=True)
    p.add_argument("--jobs-per-gpu", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    args = p.parse_args(argv)
    started = time.time()
    slot = gpu_slots.acquire(args.gpus, args.jobs_per_gpu, wait_s=600, poll_s=0.05)
    acquired = time.time()
    from warmstart.plan.plan_files import read_run_spec
    from warmstart.jobs.train_runs import execute_run
    metrics = execute_run(read_run_spec(args.spec), args.data, args.split, args.out, device=args.device,
                          threads=args.threads, log=lambda msg: None)
    print(json.dumps({"card": slot.card, "slot": slot.slot, "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
                      "started": started, "acquired": acquired, "ended": time.time(),
                      "train_s": metrics["train_time_s"], "job_s": metrics["wall_time_s"],
                      "epochs": metrics["epochs"], "val_acc": metrics["val_acc"]}), flush=True)


def max_concurrent(records: list[dict]) -> int:
    return gpu_slots.peak_overlap([(r["acquired"], r["ended"]) for r in records])


def run_grid(n: int, jobs: list[tuple[Path, Path]], data: Path, out_root: Path, args) -> tuple[float, list[dict]]:
    """Train every job, at most ``n`` processes at once; (wall seconds, the workers' records)."""
    env = dict(os.environ, WARMSTART_GPU_SLOT_DIR=str(out_root / "locks"))
    env.pop("SLURM_JOB_ID", None)  # slots are taken here, not by a scheduler
    pending = list(enumerate(jobs))
    running: list[subprocess.Popen] = []
    records = []
    t0 = time.perf_counter()
    while pending or running:
        while pending and len(running) < n:
            i, (spec, split) = pending.pop(0)
            cmd = [sys.executable, __file__, "--worker", str(spec), str(data), str(split), str(out_root / f"run{i}"),
                   "--device", args.device, "--gpus", str(args.gpus), "--jobs-per-gpu", str(n),
                   "--threads", str(args.threads)]
            running.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True))
        time.sleep(0.01)
        for proc in [p for p in running if p.poll() is not None]:
            running.remove(proc)
            out = proc.stdout.read()
            if proc.returncode != 0:
                raise RuntimeError(f"a job failed (exit {proc.returncode}): {' '.join(proc.args)}\n{out}")
            records.append(json.loads(out.strip().splitlines()[-1]))
    return time.perf_counter() - t0, records


def main(argv=None, log=print) -> list[dict]:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker(argv[1:])
        return []
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--gpus", type=int, default=1, help="cards the slots spread over (the grid is sized for one)")
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 2, 4], help="jobs per card to compare")
    p.add_argument("--jobs", type=int, default=8, help="runs in the grid")
    p.add_argument("--arch", default="mlp")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--num-samples", type=int, default=10000, help="MNIST-1D samples (10,000: its usual size)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per job (a workflow job's `threads`)")
    args = p.parse_args(argv)

    import torch

    from warmstart.components.datasets import prepare_dataset
    from warmstart.core.io import load_torch
    from warmstart.plan.plan_files import spec_json
    from warmstart.components.splits import make_split, save_split

    specs = [spec_for(args.arch, seed, args.epochs, args.num_samples) for seed in range(args.jobs)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "data.pt"
        prepare_dataset(specs[0].dataset, tmp / "raw", False, data)
        n_train = len(load_torch(data)["y_train"])
        jobs = []
        for spec in specs:
            spec_path, split_path = tmp / f"spec{spec.seed}.json", tmp / f"split{spec.seed}.pt"
            spec_path.write_text(spec_json(spec))
            save_split(make_split(n_train, spec.seed, spec.validation_fraction), split_path)
            jobs.append((spec_path, split_path))
        log(f"bench_jobs_per_gpu  torch {torch.__version__}  device {args.device}"
            + (f" ({torch.cuda.get_device_name(0)})" if args.device.startswith("cuda") and torch.cuda.is_available()
               else "")
            + f"  {args.jobs} {args.arch} jobs x {args.epochs} epochs, MNIST-1D {args.num_samples:,} samples, "
              f"phase-1 fraction 0.5, Adam 0.001, batch 128, {args.threads} thread(s) per job, "
              f"{os.cpu_count()} CPU cores")
        for n in args.concurrency:
            wall, records = run_grid(n, jobs, data, tmp / f"grid{n}", args)
            epochs = sum(r["epochs"] for r in records)
            rows.append({"jobs_per_gpu": n, "jobs": len(records), "wall_s": wall,
                         "jobs_per_min": 60 * len(records) / wall, "epochs_per_s": epochs / wall,
                         "median_train_s": statistics.median(r["train_s"] for r in records),
                         "median_job_s": statistics.median(r["ended"] - r["started"] for r in records),
                         "max_at_once": max_concurrent(records),
                         "cards": sorted({r["visible"] for r in records})})
    base = rows[0]["wall_s"]
    log("")
    log("| jobs per card | jobs | grid wall s | jobs/min | epochs/s | median train s/job | median process s/job "
        "| most at once | speed-up |")
    log("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        log(f"| {r['jobs_per_gpu']} | {r['jobs']} | {r['wall_s']:.1f} | {r['jobs_per_min']:.1f} | "
            f"{r['epochs_per_s']:.2f} | {r['median_train_s']:.2f} | {r['median_job_s']:.2f} | {r['max_at_once']} | "
            f"{base / r['wall_s']:.2f}x |")
    log(f"\ncards used (CUDA_VISIBLE_DEVICES of the jobs): {sorted({c for r in rows for c in r['cards']})}; "
        "train s = the run's training loop, process s = start to exit (import, CUDA init, data load, writes)")
    return rows


if __name__ == "__main__":
    main()
