"""Smoke test of benchmarks/bench_floor.py: it counts the MLP's arithmetic by hand's formula, reports each
stack's rate against the floor as their quotient, and sums a demo's training seconds per phase. Not a timing
assertion."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_floor.py"


def load_bench():
    if str(BENCH.parent) not in sys.path:  # it imports its sibling bench_multiseed, as when run as a script
        sys.path.insert(0, str(BENCH.parent))
    spec = importlib.util.spec_from_file_location("bench_floor", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def fake_demo(root: Path) -> Path:
    """Two runs (a phase-1 parent and its warm child) and a stream of two rounds."""
    for name, parent, seconds in (("p1", None, 2.0), ("p2", {"name": "p1"}, 3.5)):
        (root / "runs" / name).mkdir(parents=True)
        (root / "runs" / name / "metrics.json").write_text(json.dumps({"train_time_s": seconds}))
        (root / "runs" / name / "spec.json").write_text(json.dumps({"parent": parent}))
    (root / "streams" / "s").mkdir(parents=True)
    pd.DataFrame({"train_time_s": [0.25, 0.5]}).to_parquet(root / "streams" / "s" / "rounds.parquet")
    return root


def test_the_floor_is_the_mlps_arithmetic_over_the_matmul_rate_and_the_demo_seconds_add_up(tmp_path):
    bench = load_bench()
    threads = torch.get_num_threads()
    lines: list[str] = []
    try:
        report = bench.main(["--stacks", "1", "2", "--epochs", "1", "--reps", "1", "--profile",
                             "--results", str(fake_demo(tmp_path))], log=lines.append)
    finally:
        torch.set_num_threads(threads)
    # MNIST-1D's 40 inputs, two hidden layers of 100 (depth 3: three linear layers), 10 classes: 6 FLOPs per weight
    assert report["flops_per_sample"] == 6 * (40 * 100 + 100 * 100 + 100 * 10)
    floor = report["matmul_flop_per_s"] / report["flops_per_sample"]
    assert [r["rows"] for r in report["stacks"]] == [1, 2]
    for row in report["stacks"]:
        assert row["floor_samples_per_s"] == floor
        assert row["floor_over_measured"] == floor / row["samples_per_s"]
    assert report["demo_train_s"] == {"phase 1": 2.0, "phase 2": 3.5, "online": 0.75}
    assert any("floor" in line for line in lines)
    # the profile names where a step goes: autograd's backward is among the largest own times
    assert any("run_backward" in name for name, _ in report["profile"])
