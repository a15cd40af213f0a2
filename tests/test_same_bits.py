"""Same spec, same bits: a run's files are a function of its spec on a given machine, whether it trained
alone, in a stack with other seeds, or was killed and resumed. Timings (and the record of how many seeds
shared the job) are the only fields allowed to differ."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from warmstart.components.datasets import load_raw
from warmstart.core.io import load_torch, save_torch
from warmstart.jobs.train_runs import execute_runs
from warmstart.core.spec import DatasetSpec, InitSpec, ModelSpec, OptimizerSpec, RunSpec, StopSpec
from warmstart.components.splits import make_split, save_split

DATASET = DatasetSpec("mnist1d", {"num_samples": 1000})
TIMINGS = {"train_time_s", "wall_time_s", "stacked_seeds", "init_time_s"}


def spec(seed: int, max_epochs: int = 120, **fields) -> RunSpec:
    # by default a fixed number of epochs, far past the point where float differences would have shown
    fields.setdefault("stop", StopSpec("epochs", max_epochs=max_epochs))
    return RunSpec(DATASET, ModelSpec("mlp", {"hidden": 32}), OptimizerSpec("adam", lr=0.003), batch_size=64,
                   seed=seed, **fields)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The prepared data file and one split file per seed, as the workflow writes them."""
    root = tmp_path_factory.mktemp("inputs")
    raw = load_raw("mnist1d", root / "raw", num_samples=1000)
    save_torch({"x_train": raw.x_train, "y_train": raw.y_train, "x_test": raw.x_test, "y_test": raw.y_test,
                "num_classes": raw.num_classes, "classes": raw.classes, "input_shape": list(raw.input_shape),
                "name": "mnist1d", "options": dict(DATASET.options)}, root / "data.pt")
    for seed in range(3):
        save_split(make_split(len(raw.x_train), seed), root / f"split{seed}.pt")
    return root


def train(inputs: Path, specs: list[RunSpec], out: Path, **kwargs) -> list[Path]:
    dirs = [out / s.name for s in specs]
    execute_runs(specs, inputs / "data.pt", [inputs / f"split{s.seed}.pt" for s in specs], dirs, device="cpu",
                 threads=1, resume_path=out / "resume.pt", log=lambda m: None, **kwargs)
    return dirs


def assert_same_files(a: Path, b: Path) -> None:
    wa, wb = load_torch(a / "model.pt"), load_torch(b / "model.pt")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    ea, eb = (pd.read_parquet(d / "epochs.parquet").drop(columns="epoch_time_s") for d in (a, b))
    pd.testing.assert_frame_equal(ea, eb, check_exact=True)
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert {k: v for k, v in ma.items() if k not in TIMINGS} == {k: v for k, v in mb.items() if k not in TIMINGS}
    assert (a / "spec.json").read_text() == (b / "spec.json").read_text()


def test_a_seed_trained_alone_and_in_a_stack_of_three_has_the_same_weights_after_120_epochs(inputs, tmp_path):
    alone = train(inputs, [spec(1)], tmp_path / "alone")[0]
    stacked = train(inputs, [spec(0), spec(1), spec(2)], tmp_path / "stack")
    assert_same_files(alone, stacked[1])
    assert json.loads((stacked[1] / "metrics.json").read_text())["stacked_seeds"] == 3
    # and the comparison can fail: another seed's weights differ
    w0, w1 = load_torch(stacked[0] / "model.pt"), load_torch(alone / "model.pt")
    assert not all(torch.equal(w0[k], w1[k]) for k in w0)


def test_a_warm_start_and_seeds_that_stop_apart_give_the_same_bits_alone_and_stacked(inputs, tmp_path):
    """Rows leave the stack when their seed converges; the seeds left keep their own numbers."""
    stop = StopSpec("converged", 0.97, 150)
    parents = [spec(s, train_fraction=0.5, stop=stop) for s in range(3)]
    parent_dirs = train(inputs, parents, tmp_path / "parents")
    children = [spec(p.seed, init=InitSpec("warm"), parent=p, stop=stop) for p in parents]
    kwargs = dict(parent_model_paths=[d / "model.pt" for d in parent_dirs])
    stacked = train(inputs, children, tmp_path / "stack", **kwargs)
    epochs = [json.loads((d / "metrics.json").read_text())["epochs"] for d in stacked]
    assert len(set(epochs)) > 1, epochs  # the point: seeds left the stack at different epochs
    for i in range(3):
        alone = train(inputs, [children[i]], tmp_path / f"alone{i}",
                      parent_model_paths=[parent_dirs[i] / "model.pt"])[0]
        assert_same_files(alone, stacked[i])


def test_kept_checkpoints_of_a_stacked_seed_are_its_weights_after_those_epochs(inputs, tmp_path):
    kept = train(inputs, [spec(s, max_epochs=6, checkpoints=(2, 4)) for s in range(2)], tmp_path / "kept")
    for epochs in (2, 4):
        short = train(inputs, [spec(1, max_epochs=epochs)], tmp_path / f"short{epochs}")[0]
        a, b = load_torch(kept[1] / "checkpoints" / f"epoch{epochs}.pt"), load_torch(short / "model.pt")
        assert all(torch.equal(a[k], b[k]) for k in a)


KILLED_JOB = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_same_bits import spec, train
train(Path({inputs!r}), [spec(0, max_epochs={epochs}), spec(1, max_epochs={epochs})], Path({out!r}),
      checkpoint_every_s=0)
"""


def test_a_job_killed_mid_training_resumes_to_the_bits_of_an_uninterrupted_one(inputs, tmp_path):
    """SIGKILL, no warning: the job runs again and resumes from its last periodic state."""
    epochs = 150
    specs = [spec(0, max_epochs=epochs), spec(1, max_epochs=epochs)]
    whole = train(inputs, specs, tmp_path / "whole")
    out = tmp_path / "killed"
    script = KILLED_JOB.format(tests=str(Path(__file__).parent), inputs=str(inputs), epochs=epochs, out=str(out))
    job = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"})
    resume = out / "resume.pt"
    deadline = time.monotonic() + 120
    while not resume.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # a few more epochs
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert job.returncode == -signal.SIGKILL, "the job finished before it could be killed"
    saved = load_torch(resume)
    assert 0 < len(saved["histories"][0]) < epochs
    assert not (out / specs[0].name / "model.pt").exists()
    resumed = train(inputs, specs, out)
    for a, b in zip(whole, resumed):
        assert_same_files(a, b)
