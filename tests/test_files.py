"""The tensor files a job reads are the ones a job wrote: a damaged, foreign or booby-trapped model or state
file stops the job with an error naming the file and what to do, and nothing in it runs. And every result
says what produced it (package version, git commit, torch, device, threads)."""
from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch

import warmstart.jobs.provenance as provenance
from warmstart.components.datasets import prepare_dataset
from warmstart.core.errors import CorruptFileError
from warmstart.core.io import TORCH_FORMAT, load_torch, save_torch
from warmstart.jobs.train_runs import execute_run, execute_runs
from warmstart.core.spec import DatasetSpec, InitSpec, ModelSpec, OptimizerSpec, RunSpec, StopSpec, StreamSpec
from warmstart.components.splits import make_split, save_split
from warmstart.jobs.train_streams import execute_stream

DATASET = DatasetSpec("mnist1d", {"num_samples": 600})
PROVENANCE = {"warmstart_version", "git_commit", "torch", "python", "device", "threads"}
PARENT = RunSpec(DATASET, ModelSpec("mlp", {"hidden": 16}), OptimizerSpec("adam", lr=0.01), batch_size=64,
                 stop=StopSpec("epochs", max_epochs=2), seed=0, train_fraction=0.5, keep_optimizer=True)
# continues the parent's weights and its optimiser state: reads both of the parent's files
CHILD = PARENT.replace(train_fraction=1.0, parent=PARENT, init=InitSpec("warm", {"optimizer_state": "keep"}),
                       keep_optimizer=False)
STREAM = StreamSpec(PARENT.replace(train_fraction=1.0, keep_optimizer=False), policy="random",
                    init=InitSpec("warm"), round_size=100, max_samples=200)


class CreatesMarker:
    """Pickles as a call to ``open(marker, "w")``: an unpickler that runs what a file says creates the marker.
    Harmless, and it shows whether loading ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A prepared dataset, a split and a trained parent run directory (model.pt and optimizer.pt)."""
    d = tmp_path_factory.mktemp("inputs")
    prepare_dataset(DATASET, d / "raw", False, d / "data.pt")
    save_split(make_split(len(load_torch(d / "data.pt")["y_train"]), 0), d / "split.pt")
    execute_run(PARENT, d / "data.pt", d / "split.pt", d / "runs" / PARENT.name, device="cpu", threads=1,
                log=lambda m: None)
    return d


@pytest.fixture
def parent_dir(inputs, tmp_path):
    """A copy of the parent's run directory, to damage."""
    return Path(shutil.copytree(inputs / "runs" / PARENT.name, tmp_path / "runs" / PARENT.name))


# -- what each load reads, and how a job reaches it ----------------------------------------------------------

def load_parent_model(inputs, parent_dir, tmp_path):
    return execute_run(CHILD, inputs / "data.pt", inputs / "split.pt", tmp_path / "child", parent_dir / "model.pt",
                       parent_optimizer_paths=[parent_dir / "optimizer.pt"], device="cpu", log=lambda m: None)


def load_parent_optimizer(inputs, parent_dir, tmp_path):
    return execute_runs([CHILD], inputs / "data.pt", [inputs / "split.pt"], [tmp_path / "child"],
                        [parent_dir / "model.pt"], [parent_dir / "optimizer.pt"], device="cpu", log=lambda m: None)


def load_resume_state(inputs, parent_dir, tmp_path):
    return execute_run(PARENT, inputs / "data.pt", inputs / "split.pt", tmp_path / "job", device="cpu",
                       resume_path=tmp_path / "resume.pt", log=lambda m: None)


def load_stream_state(inputs, parent_dir, tmp_path):
    return execute_stream(STREAM, inputs / "data.pt", inputs / "split.pt", tmp_path / "stream", device="cpu",
                          state_path=tmp_path / "state.pt", log=lambda m: None)


def a_state(parent_dir, tag):
    """A resume or stream state shaped like the real ones (its tag is another run's: never used)."""
    model = load_torch(parent_dir / "model.pt")
    return {"tag": tag, "rows": [{"round": 1, "val_acc": 0.5}], "chosen": torch.arange(100), "model": model,
            "histories": [[{"epoch": 1, "train_loss": 1.5}]], "generators": [torch.Generator().get_state()]}


# load -> (the file it reads, how to make a good one, what the fix says)
LOADS = {
    "parent model": (load_parent_model, lambda d, t: d / "model.pt", None,
                     lambda d, t: [f"Delete the parent run's directory {d} and run the workflow again"]),
    "parent optimiser state": (load_parent_optimizer, lambda d, t: d / "optimizer.pt", None,
                               lambda d, t: [f"Delete the parent run's directory {d} and run the workflow again"]),
    "resume state": (load_resume_state, lambda d, t: t / "resume.pt", lambda d: a_state(d, "another run"),
                     lambda d, t: [f"Delete {t / 'resume.pt'}: the job then starts its runs from the beginning"]),
    "stream state": (load_stream_state, lambda d, t: t / "state.pt", lambda d: a_state(d, "another stream"),
                     lambda d, t: [f"Delete {t / 'state.pt'}: the stream then starts again from its first round"]),
}


def good_file(load, parent_dir, tmp_path) -> Path:
    _, where, make, _ = LOADS[load]
    path = where(parent_dir, tmp_path)
    if make is not None:
        save_torch(make(parent_dir), path)
    return path


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])  # e.g. a copy cut short by a full disk


def flip_a_tensor_byte(path: Path) -> None:
    """Flip one byte inside the largest tensor record of the file: PyTorch still loads it (it checks no CRC),
    the tensor just holds another number."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        record = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack("<HH", data[record.header_offset + 26: record.header_offset + 30])
    start = record.header_offset + 30 + name_len + extra_len
    data[start + record.file_size // 2] ^= 0x40
    path.write_bytes(data)
    torch.load(path, weights_only=True)  # still a loadable file


def unknown_format(path: Path) -> None:
    """What an older version (or a hand-made file) holds: the bare payload, saved by plain torch.save."""
    torch.save(load_torch(path), path)


def expect_refusal(load, inputs, parent_dir, tmp_path, path, reason) -> CorruptFileError:
    job, _, _, fix = LOADS[load]
    with pytest.raises(CorruptFileError) as raised:
        job(inputs, parent_dir, tmp_path)
    error = raised.value
    message = str(error)
    assert message.startswith(f"{path}: ") and error.path == str(path)
    assert re.search(reason, error.reason), error.reason
    for part in fix(parent_dir, tmp_path):
        assert part in message, message
    assert not (tmp_path / "child" / "model.pt").exists() and not (tmp_path / "stream" / "rounds.parquet").exists()
    return error


# -- the claims ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("load", LOADS)
def test_a_truncated_file_stops_the_job_naming_the_file_and_the_fix(load, inputs, parent_dir, tmp_path):
    path = good_file(load, parent_dir, tmp_path)
    truncate(path)
    expect_refusal(load, inputs, parent_dir, tmp_path, path, r"is truncated or not a PyTorch file")


@pytest.mark.parametrize("load", LOADS)
def test_a_file_whose_tensor_bytes_changed_is_refused_by_its_checksum(load, inputs, parent_dir, tmp_path):
    path = good_file(load, parent_dir, tmp_path)
    flip_a_tensor_byte(path)
    expect_refusal(load, inputs, parent_dir, tmp_path, path, r"does not match its checksum")


@pytest.mark.parametrize("load", LOADS)
def test_a_file_in_another_format_is_refused(load, inputs, parent_dir, tmp_path):
    path = good_file(load, parent_dir, tmp_path)
    unknown_format(path)
    expect_refusal(load, inputs, parent_dir, tmp_path, path, re.escape(f"is not in the format {TORCH_FORMAT!r}"))


@pytest.mark.parametrize("load", LOADS)
def test_a_planted_file_carrying_a_pickled_object_is_refused_and_runs_nothing(load, inputs, parent_dir, tmp_path):
    """A file dropped into a shared results directory must not run code in the job that loads it."""
    path = good_file(load, parent_dir, tmp_path)
    marker = tmp_path / "marker"
    torch.save({"format": TORCH_FORMAT, "sha256": "0" * 64, "payload": {"tag": "x", "trap": CreatesMarker(marker)}},
               path)
    error = expect_refusal(load, inputs, parent_dir, tmp_path, path, r"holds pickled objects .*refused unread")
    assert "open" in error.reason  # names what it refused
    assert not marker.exists()


def test_a_good_parent_is_loaded_as_written(inputs, parent_dir, tmp_path):
    """The same child, from the undamaged files, trains and writes its directory."""
    load_parent_model(inputs, parent_dir, tmp_path)
    assert (tmp_path / "child" / "model.pt").exists()


def test_a_file_round_trips_with_its_types_and_plain_torch_load_reads_it(tmp_path):
    state = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2, 3)}},
             "param_groups": [{"lr": 0.01, "betas": (0.9, 0.999), "foreach": None, "amsgrad": False,
                               "params": [0]}],
             "generator": torch.Generator().manual_seed(1).get_state(), "half": torch.ones(3, dtype=torch.bfloat16),
             "empty": torch.empty(0, 4), "loss": float("nan"), "name": "é", "shape": torch.Size([2, 3])}
    save_torch(state, tmp_path / "s.pt")
    loaded = load_torch(tmp_path / "s.pt")
    assert loaded["param_groups"] == state["param_groups"] and isinstance(loaded["param_groups"][0]["betas"], tuple)
    assert list(loaded["state"]) == [0] and torch.equal(loaded["state"][0]["exp_avg"], state["state"][0]["exp_avg"])
    assert torch.equal(loaded["generator"], state["generator"]) and loaded["half"].dtype == torch.bfloat16
    assert loaded["loss"] != loaded["loss"] and loaded["name"] == "é" and loaded["shape"] == (2, 3)
    plain = torch.load(tmp_path / "s.pt", weights_only=True)
    assert plain["format"] == TORCH_FORMAT and torch.equal(plain["payload"]["half"], state["half"])


def test_a_value_that_only_pickle_could_restore_is_refused_when_saving(tmp_path):
    with pytest.raises(TypeError, match="cannot be saved"):
        save_torch({"rows": [{"val_acc": __import__("numpy").float64(0.5)}]}, tmp_path / "s.pt")
    assert list(tmp_path.iterdir()) == []


def test_metrics_json_says_what_produced_the_run(inputs):
    metrics = json.loads((inputs / "runs" / PARENT.name / "metrics.json").read_text())
    assert PROVENANCE <= set(metrics)
    assert metrics["torch"] == torch.__version__ and metrics["device"] == "cpu" and metrics["threads"] >= 1
    assert metrics["warmstart_version"] == provenance.package_version() != "unknown"
    assert metrics["git_commit"] == provenance.git_commit()


def test_a_streams_spec_json_says_what_produced_it(inputs, tmp_path):
    execute_stream(STREAM, inputs / "data.pt", inputs / "split.pt", tmp_path, device="cpu", log=lambda m: None)
    written = json.loads((tmp_path / "spec.json").read_text())
    assert set(written["provenance"]) == PROVENANCE and written["provenance"]["device"] == "cpu"
    assert StreamSpec.from_dict(written) == STREAM  # still the stream's spec


def test_the_git_commit_is_the_checkouts_and_none_outside_one(monkeypatch, tmp_path):
    repo = Path(provenance.__file__).resolve().parents[2]
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert re.fullmatch(re.escape(head.stdout.strip()) + r"(-dirty)?", provenance.git_commit())
    monkeypatch.setattr(provenance, "PACKAGE_DIR", tmp_path)  # e.g. installed, outside any checkout
    try:
        provenance.git_commit.cache_clear()
        assert provenance.git_commit() is None
    finally:
        monkeypatch.undo()
        provenance.git_commit.cache_clear()


def test_the_version_falls_back_to_pyproject_when_the_package_is_not_installed(monkeypatch):
    import importlib.metadata

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)
    pyproject = (Path(provenance.__file__).resolve().parents[3] / "pyproject.toml").read_text()
    expected = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE).group(1)
    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert provenance.package_version.__wrapped__() == expected
