"""How close the demo's MLP trains to what this machine can compute: samples per second of one run alone,
a stack of 3 seeds and a wide stack of 45 rows, against the floor (FLOPs per sample / the machine's measured
large-matmul rate); with ``--results``, a finished demo's training core-seconds per phase.

The floor counts the linear layers' multiply-adds only (forward 2 x in x out per sample, backward twice
that): the arithmetic a step cannot avoid. The rate is that of a large fp32 matrix product on the same
threads, the best these cores reach. Each stack trains the same condition (``--arch``, Adam 0.001, batch
128, MNIST-1D 10,000 samples, phase-1 fraction 0.5) for ``--epochs`` epochs; the repetitions alternate and
the median is reported. A wide stack's rows may differ in init strategy and parent (the leaderboard's
init arms side by side), which decide only where each row starts: a step of 45 rows costs the same
whatever they start from, so 45 seeds of one condition measure it.

    python benchmarks/bench_floor.py                                  # CPU, 1 thread (a workflow CPU job)
    python benchmarks/bench_floor.py --device cuda
    python benchmarks/bench_floor.py --results results/demo           # plus the demo's core-seconds
    python benchmarks/bench_floor.py --profile                        # where a stack of 3's time goes
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from bench_multiseed import mnist1d_on, specs_for  # the same data and condition as the multi-seed benchmark
from warmstart.components.models import build_model
from warmstart.components.splits import make_split
from warmstart.core.spec import ModelSpec
from warmstart.jobs.train_block import run_training_stacked
from warmstart.jobs.train_runs import pick_device


def linear_flops_per_sample(model: nn.Module) -> int:
    """Forward and backward multiply-adds of the model's linear layers, per sample, as FLOPs."""
    return sum(6 * m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear))


def matmul_rate(device: torch.device, size: int = 2048, reps: int = 5) -> float:
    """FLOP/s of a large fp32 square matrix product: the best of ``reps``."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    best = float("inf")
    for _ in range(reps + 1):  # the first warms up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        (a @ b).sum().item()
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best


def stack_rate(specs, data, reps: int) -> tuple[float, float]:
    """Median seconds to train the stack, and its samples per second (every row's samples counted)."""
    splits = [make_split(len(data.x_train), s.seed) for s in specs]
    times, samples = [], 0
    for _ in range(reps):
        t0 = time.perf_counter()
        outs = run_training_stacked(specs, data, splits, [None] * len(specs), log=None)
        times.append(time.perf_counter() - t0)
        samples = sum(m["samples_seen"] for _, _, m in outs)
    median = statistics.median(times)
    return median, samples / median


def profile_stack(specs, data, log, top: int = 12) -> list[tuple[str, float]]:
    """The functions (torch kernels among them) that take the most of one training of ``specs``, by their
    own time: where a step of a small model goes (kernels, optimiser, evaluation, Python)."""
    import cProfile
    import pstats

    splits = [make_split(len(data.x_train), s.seed) for s in specs]
    profiler = cProfile.Profile()
    profiler.runcall(run_training_stacked, specs, data, splits, [None] * len(specs), log=None)
    stats = pstats.Stats(profiler).stats
    total = sum(tottime for _, _, tottime, _, _ in stats.values())
    rows = sorted(((f"{name} ({Path(file).name}:{line})" if line else name, tottime)
                   for (file, line, name), (_, _, tottime, _, _) in stats.items()), key=lambda r: -r[1])[:top]
    log(f"profile of a stack of {len(specs)} (own time; {total:.2f} s in all):")
    for name, seconds in rows:
        log(f"  {100 * seconds / total:5.1f}%  {seconds:6.3f} s  {name}")
    return rows


def demo_core_seconds(results: Path) -> dict[str, float]:
    """Training seconds of a finished demo per phase: each run's ``train_time_s`` (a stacked run's share of
    its stack's time), phase 2 where the run has a parent; online: every stream round's training time."""
    seconds = {"phase 1": 0.0, "phase 2": 0.0, "online": 0.0}
    for metrics in results.glob("runs/*/metrics.json"):
        spec = json.loads((metrics.parent / "spec.json").read_text())
        phase = "phase 2" if spec.get("parent") else "phase 1"
        seconds[phase] += json.loads(metrics.read_text())["train_time_s"]
    import pandas as pd

    for rounds in results.glob("streams/*/rounds.parquet"):
        seconds["online"] += float(pd.read_parquet(rounds, columns=["train_time_s"])["train_time_s"].sum())
    return seconds


def main(argv=None, log=print) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--arch", default="mlp", help="a stackable model of the registry (the demo's: mlp)")
    p.add_argument("--stacks", nargs="+", type=int, default=[1, 3, 45], help="rows per stack")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (a workflow CPU job has 1 by default)")
    p.add_argument("--results", type=Path, help="a finished demo's results directory (results/demo)")
    p.add_argument("--profile", action="store_true", help="also profile a stack of 3: where its time goes")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    data = mnist1d_on(device)
    flops = linear_flops_per_sample(build_model(ModelSpec(args.arch), data.input_shape, data.num_classes))
    rate = matmul_rate(device)
    floor = rate / flops
    log(f"bench_floor  torch {torch.__version__}  device {device}  threads {torch.get_num_threads()}  "
        f"{args.arch}: {flops:,} FLOP per sample (fwd+bwd, linear layers)")
    log(f"large fp32 matmul: {rate / 1e9:.1f} GFLOP/s  ->  floor {floor:,.0f} samples/s")
    rows = []
    for rows_per_stack in args.stacks:
        seconds, per_s = stack_rate(specs_for(args.arch, rows_per_stack, args.epochs), data, args.reps)
        rows.append({"rows": rows_per_stack, "seconds": seconds, "samples_per_s": per_s,
                     "floor_samples_per_s": floor, "floor_over_measured": floor / per_s})
        log(f"stack of {rows_per_stack:3d}: {per_s:12,.0f} samples/s   ({seconds:6.2f} s)   "
            f"floor / measured {floor / per_s:8.1f}x")
    report = {"flops_per_sample": flops, "matmul_flop_per_s": rate, "stacks": rows}
    if args.profile:
        report["profile"] = profile_stack(specs_for(args.arch, 3, args.epochs), data, log)
    if args.results is not None:
        report["demo_train_s"] = demo_core_seconds(args.results)
        log("demo training core-seconds: " + ", ".join(f"{k} {v:,.0f} s" for k, v in report["demo_train_s"].items())
            + f"  (total {sum(report['demo_train_s'].values()):,.0f} s)")
    return report


if __name__ == "__main__":
    main()
