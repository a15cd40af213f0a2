"""Stacked multi-seed training vs one run per seed, side by side in one process.

Both train the same specs (one mlp or logreg condition at S seeds, a fixed number of epochs on MNIST-1D,
generated offline) on the same device; they alternate for ``--reps`` repetitions and the median wall time
of each is reported, with their ratio and the largest per-seed difference in final validation accuracy.
Process start-up and data loading, which a stacked job also pays once instead of S times, are not counted.

    python benchmarks/bench_multiseed.py                     # mlp and logreg, 3 and 5 seeds, CPU
    python benchmarks/bench_multiseed.py --device cuda
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from warmstart.components.datasets import DeviceData, load_raw
from warmstart.jobs.train_block import run_training, run_training_stacked
from warmstart.jobs.train_runs import pick_device
from warmstart.core.spec import DatasetSpec, ModelSpec, OptimizerSpec, RunSpec, StopSpec
from warmstart.components.splits import make_split


def specs_for(arch: str, seeds: int, epochs: int) -> list[RunSpec]:
    return [RunSpec(DatasetSpec("mnist1d", {"num_samples": 10000}), ModelSpec(arch), OptimizerSpec("adam", 1e-3),
                    128, StopSpec("epochs", max_epochs=epochs), seed, train_fraction=0.5) for seed in range(seeds)]


def mnist1d_on(device: torch.device) -> DeviceData:
    """MNIST-1D's 10,000 samples (generated offline), as float32 tensors on ``device``."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = load_raw("mnist1d", tmp, num_samples=10000)
    return DeviceData(raw.x_train.float().to(device), raw.y_train.to(device), raw.x_test.float().to(device),
                      raw.y_test.to(device), raw.num_classes, raw.input_shape)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv=None, log=print) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--archs", nargs="+", default=["mlp", "logreg"])
    p.add_argument("--seeds", nargs="+", type=int, default=[3, 5])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (a workflow CPU job has 1 by default)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    data = mnist1d_on(device)
    log(f"bench_multiseed  torch {torch.__version__}  device {device}  threads {torch.get_num_threads()}  "
        f"MNIST-1D 10,000 samples, phase-1 fraction 0.5, Adam 0.001, batch 128, {args.epochs} epochs")
    rows = []
    for arch in args.archs:
        for n_seeds in args.seeds:
            specs = specs_for(arch, n_seeds, args.epochs)
            splits = [make_split(len(data.x_train), s.seed) for s in specs]
            parents = [None] * n_seeds
            separate, stacked, diff = [], [], 0.0
            for rep in range(args.reps):
                order = ("separate", "stacked") if rep % 2 == 0 else ("stacked", "separate")
                for which in order:
                    if which == "separate":
                        t, outs = timed(lambda: [run_training(s, data, sp, None, log=None)
                                                 for s, sp in zip(specs, splits)])
                        separate.append(t)
                        single_acc = [m["val_acc"] for _, _, m in outs]
                    else:
                        t, outs = timed(lambda: run_training_stacked(specs, data, splits, parents, log=None))
                        stacked.append(t)
                        stacked_acc = [m["val_acc"] for _, _, m in outs]
                diff = max(diff, max(abs(a - b) for a, b in zip(single_acc, stacked_acc)))
            row = {"arch": arch, "seeds": n_seeds, "separate_s": statistics.median(separate),
                   "stacked_s": statistics.median(stacked), "max_val_acc_diff": diff}
            row["speedup"] = row["separate_s"] / row["stacked_s"]
            rows.append(row)
            log(f"{arch:7s} {n_seeds} seeds: one run per seed {row['separate_s']:6.2f} s   stacked "
                f"{row['stacked_s']:6.2f} s   speed-up {row['speedup']:.2f}x   max |val_acc diff| {diff:.4f}")
    return rows


if __name__ == "__main__":
    main()
