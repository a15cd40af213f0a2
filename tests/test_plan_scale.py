"""The workflow's own cost: planning the paper's config does work in proportion to the number of runs
(counted in hash computations, not timed), so a bigger config does not make `snakemake -n` crawl."""
from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import yaml

import warmstart.core.identity
from warmstart.plan.experiments import plan_experiments
from warmstart.plan.job_blocks import plan_blocks

REPO = Path(__file__).resolve().parents[1]


def plan_counting_hashes(config: dict, monkeypatch) -> tuple[int, int]:
    calls = []

    def sha256(data):
        calls.append(len(data))
        return hashlib.sha256(data)
    monkeypatch.setattr(warmstart.core.identity, "hashlib", SimpleNamespace(sha256=sha256))
    plan = plan_experiments(config)
    blocks = plan_blocks(plan, config["stack_seeds"])
    assert sum(len(b.specs) for b in blocks.values()) == len(plan.runs)  # every run in exactly one block
    return len(plan.runs) + len(plan.streams), len(calls)


def with_seeds(n: int) -> dict:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for experiment in config["experiments"].values():
        experiment["seeds"] = list(range(n))
    return config


def test_planning_work_grows_in_proportion_to_the_number_of_runs(monkeypatch):
    runs_5, hashes_5 = plan_counting_hashes(with_seeds(5), monkeypatch)
    runs_20, hashes_20 = plan_counting_hashes(with_seeds(20), monkeypatch)
    assert runs_20 == 4 * runs_5
    assert hashes_20 <= 4 * hashes_5  # linear (the few per-dataset hashes do not grow at all)
    assert hashes_5 <= 4 * runs_5  # and a small constant per run
