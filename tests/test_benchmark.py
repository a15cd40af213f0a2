"""Smoke test of benchmarks/bench_engine.py: its quick mode runs on CPU and writes a well-formed CSV whose
ratio is the quotient of the two throughputs it measured. Not a timing assertion."""
from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_engine.py"
COLUMNS = ["case", "device", "precision", "engine_samples_per_s", "reference_samples_per_s", "ratio",
           "steps", "batch_size", "reps", "optimizer", "threads", "num_workers"]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_engine", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_quick_mlp_on_cpu_writes_csv(tmp_path):
    bench = load_bench()
    out = tmp_path / "results.csv"
    lines: list[str] = []
    threads = torch.get_num_threads()
    try:
        rows = bench.main(["--quick", "--device", "cpu", "--cases", "mlp", "--out", str(out)], log=lines.append)
    finally:
        torch.set_num_threads(threads)

    with open(out, newline="") as f:
        reader = csv.DictReader(f)
        header, records = reader.fieldnames, list(reader)
    assert header[:len(COLUMNS)] == COLUMNS
    assert len(records) == len(rows) == 1
    r = records[0]
    assert (r["case"], r["device"], r["precision"]) == ("mlp", "cpu", "fp32")
    assert r["batch_size"] == "128" and r["steps"] == "8"  # the quick mode's 8 steps of the mlp case
    engine, reference = float(r["engine_samples_per_s"]), float(r["reference_samples_per_s"])
    # the ratio is of the unrounded medians; the throughputs are written to 0.1 samples/s, so the two may
    # differ in the last digit of the ratio, never by more
    assert abs(float(r["ratio"]) - engine / reference) <= 0.006 + engine * 0.05 / reference ** 2
    assert any("synthetic" in line for line in lines)  # the output says the data are synthetic
