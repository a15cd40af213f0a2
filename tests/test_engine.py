"""The training engine: the paper trains "to convergence" (99% training accuracy), records every epoch,
is reproducible per seed, and (here) survives being killed by resuming from its checkpoint."""
from __future__ import annotations

import math

import pytest
import torch

from warmstart.components.models import build_model
from warmstart.core.spec import ModelSpec, OptimizerSpec, StopSpec
from warmstart.core.records import EPOCH_FIELDS
from warmstart.core.errors import CorruptFileError
from warmstart.engine.checkpoint import Checkpointing, save_resume
from warmstart.engine.loop import train
from warmstart.engine.objective import evaluate

N, DIM = 200, 10
METRICS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "samples_seen")  # all but timing



def separable(seed: int = 0, n: int = N, margin: float = 1.0):
    """Two classes split by the sign of the first feature, with a margin: linearly separable."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, DIM, generator=g)
    y = (x[:, 0] > 0).long()
    x[:, 0] += torch.where(y == 1, margin, -margin)
    return x, y


def noise(seed: int = 0, n: int = N):
    """Random labels: no model here fits them perfectly in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, DIM, generator=g), torch.randint(0, 4, (n,), generator=g)


def model_for(seed: int, arch: str = "mlp", num_classes: int = 2, **options):
    torch.manual_seed(seed)
    return build_model(ModelSpec(arch, options), (DIM,), num_classes)


def fit(model, data, *, stop, seed=0, optimizer=OptimizerSpec("adam", lr=0.01), batch_size=32, **kw):
    x, y = data
    xv, yv = data[0][:50], data[1][:50]
    return train(model, optimizer, x, y, xv, yv, batch_size=batch_size, stop=stop, seed=seed,
                 log=kw.pop("log", None), **kw)


def metrics(history):
    """The records' metrics, one not measured (NaN: validation before the last epoch) as None."""
    return [{k: None if r[k] != r[k] else r[k] for k in METRICS} for r in history]


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -- stopping -------------------------------------------------------------------------------------------

def test_training_stops_as_soon_as_train_accuracy_reaches_the_threshold():
    # a narrow margin, so convergence takes a few epochs (here the last one is at exactly 198/200 = 0.99)
    result = fit(model_for(0), separable(margin=0.05), stop=StopSpec("converged", threshold=0.99, max_epochs=50))
    assert result.stopped_by == "threshold" and result.converged
    assert result.final["train_acc"] >= 0.99
    assert 2 < len(result.history) < 50
    # it stopped at the first epoch that reached the threshold, not later
    assert all(r["train_acc"] < 0.99 for r in result.history[:-1])


def test_reaching_the_threshold_on_the_last_allowed_epoch_counts_as_converged():
    data = separable(margin=0.1)
    k = len(fit(model_for(0), data, stop=StopSpec("converged", 0.99, max_epochs=50)).history)
    assert k > 1
    result = fit(model_for(0), data, stop=StopSpec("converged", 0.99, max_epochs=k))
    assert len(result.history) == k and result.stopped_by == "threshold" and result.converged


@pytest.mark.parametrize("data, stop", [
    (noise(), StopSpec("converged", threshold=1.0, max_epochs=4)),  # unreachable threshold
    (separable(), StopSpec("converged", threshold=0.99, max_epochs=1)),  # a cap too small to get there
], ids=["unreachable", "tiny-cap"])
def test_without_reaching_the_threshold_training_stops_at_max_epochs_and_says_so(data, stop):
    result = fit(model_for(0, num_classes=4), data, stop=stop,
                 optimizer=OptimizerSpec("sgd", lr=0.001))
    assert result.stopped_by == "max_epochs" and not result.converged
    assert len(result.history) == stop.max_epochs
    assert result.final["train_acc"] < stop.threshold


def test_fixed_epochs_rule_trains_exactly_max_epochs_even_past_the_threshold():
    result = fit(model_for(0), separable(), stop=StopSpec("epochs", threshold=0.99, max_epochs=12))
    assert len(result.history) == 12 and result.stopped_by == "epochs"
    assert not result.converged
    assert any(r["train_acc"] >= 0.99 for r in result.history[:-1])  # it kept going past convergence


# -- the per-epoch record -------------------------------------------------------------------------------

def test_every_epoch_is_recorded_with_its_metrics():
    data = separable()
    model = model_for(0)
    seen = []
    result = fit(model, data, stop=StopSpec("epochs", max_epochs=5), on_epoch=seen.append, batch_size=64)
    assert seen == result.history and len(result.history) == 5
    for i, r in enumerate(result.history, 1):
        # the records hold the documented columns, in order (and EPOCH_FIELDS, the parquet schema, says so)
        assert list(r) == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "epoch_time_s",
                           "samples_seen"] == list(EPOCH_FIELDS)
        assert r["epoch"] == i and r["samples_seen"] == i * N
        assert 0 <= r["train_acc"] <= 1
    assert result.train_time_s == pytest.approx(sum(r["epoch_time_s"] for r in result.history))
    # the validation set is evaluated after the last epoch only (learning curves ask for the validation
    # probe); the last record's validation numbers describe the final model
    assert all(math.isnan(r["val_loss"]) and math.isnan(r["val_acc"]) for r in result.history[:-1])
    val_loss, val_acc = evaluate(model, data[0][:50], data[1][:50])
    assert result.final["val_loss"] == pytest.approx(val_loss, rel=1e-6) and result.final["val_acc"] == val_acc
    assert model.training  # evaluation does not leave the model in eval mode


def test_training_loss_decreases_on_an_easy_problem():
    result = fit(model_for(0), separable(), stop=StopSpec("epochs", max_epochs=5))
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < losses[0] * 0.5


# -- reproducibility ------------------------------------------------------------------------------------

def test_same_spec_and_seed_give_identical_epochs_and_weights():
    stop = StopSpec("epochs", max_epochs=4)
    a_model, b_model = model_for(3, num_classes=4), model_for(3, num_classes=4)
    a = fit(a_model, noise(), stop=stop, seed=3)
    b = fit(b_model, noise(), stop=stop, seed=3)
    assert metrics(a.history) == metrics(b.history)
    assert same_weights(a_model, b_model)


def test_a_different_seed_gives_different_epochs():
    stop = StopSpec("epochs", max_epochs=3)
    a = fit(model_for(3, num_classes=4), noise(), stop=stop, seed=3)
    b = fit(model_for(4, num_classes=4), noise(), stop=stop, seed=4)
    assert [r["train_loss"] for r in a.history] != [r["train_loss"] for r in b.history]
    # the seed alone (same initial weights) changes the batch order and so the trajectory
    c_model, d_model = model_for(3, num_classes=4), model_for(3, num_classes=4)
    c = fit(c_model, noise(), stop=stop, seed=3)
    d = fit(d_model, noise(), stop=stop, seed=4)
    assert [r["train_loss"] for r in c.history] != [r["train_loss"] for r in d.history]
    assert not same_weights(c_model, d_model)


# -- resuming after a kill --------------------------------------------------------------------------------

class Killed(Exception):
    pass


def kill_after(epoch: int):
    def on_epoch(record):
        if record["epoch"] == epoch:
            raise Killed
    return on_epoch


RESUME_CASES = {
    # Adam: its moment estimates must come back too
    "mlp-adam-epochs": dict(arch="mlp", options={}, optimizer=OptimizerSpec("adam", lr=0.01),
                            stop=StopSpec("epochs", max_epochs=6), batch_size=32),
    # SGD with momentum buffers, and BatchNorm running statistics
    "resnet-sgd-converged": dict(arch="resnet18", options={"width": 4},
                                 optimizer=OptimizerSpec("sgd", lr=0.05, momentum=0.9),
                                 stop=StopSpec("converged", threshold=1.0, max_epochs=4), batch_size=50),
}


@pytest.mark.parametrize("case", RESUME_CASES.values(), ids=RESUME_CASES.keys())
def test_an_interrupted_run_resumes_to_exactly_the_uninterrupted_result(tmp_path, case):
    arch, options = case["arch"], case["options"]
    settings = dict(stop=case["stop"], seed=1, optimizer=case["optimizer"], batch_size=case["batch_size"])
    data = noise()

    reference_model = model_for(1, arch, 4, **options)
    reference = fit(reference_model, data, **settings)

    ckpt = Checkpointing(tmp_path / "resume.pt", every_s=0, tag="run-a")
    with pytest.raises(Killed):
        fit(model_for(1, arch, 4, **options), data, checkpointing=ckpt, on_epoch=kill_after(3), **settings)
    assert ckpt.path.exists()

    # The restarted job builds its model afresh (here even from another init, to show the weights come
    # from the checkpoint) and resumes after the last saved epoch.
    messages = []
    resumed_model = model_for(99, arch, 4, **options)
    resumed = fit(resumed_model, data, checkpointing=ckpt, log=messages.append, **settings)
    assert any("resumed" in m and "after epoch 2" in m for m in messages), messages
    assert metrics(resumed.history) == metrics(reference.history)
    assert resumed.stopped_by == reference.stopped_by
    assert same_weights(resumed_model, reference_model)


def test_a_checkpoint_with_another_tag_is_ignored(tmp_path):
    stop = StopSpec("epochs", max_epochs=4)
    path = tmp_path / "resume.pt"
    # another run (other data, other init) leaves a checkpoint at the same path
    with pytest.raises(Killed):
        fit(model_for(7), separable(seed=7), stop=stop, seed=7,
            checkpointing=Checkpointing(path, every_s=0, tag="other-run"), on_epoch=kill_after(3))
    assert path.exists()

    reference_model = model_for(1)
    reference = fit(reference_model, separable(), stop=stop, seed=1)
    messages = []
    model = model_for(1)
    result = fit(model, separable(), stop=stop, seed=1, log=messages.append,
                 checkpointing=Checkpointing(path, every_s=0, tag="this-run"))
    assert not any("resumed" in m for m in messages)
    assert metrics(result.history) == metrics(reference.history) and len(result.history) == 4
    assert same_weights(model, reference_model)


def test_a_resume_file_of_an_earlier_format_is_refused_by_name(tmp_path):
    path = tmp_path / "resume.pt"
    # the loop state an earlier engine saved: its own tag, but not this version's format
    save_resume(path, "this-run", {"active": [0], "histories": [[]], "interventions": None})
    with pytest.raises(CorruptFileError, match=r"resume.pt: a resume file of an earlier warmstart.*Delete it"):
        fit(model_for(1), separable(), stop=StopSpec("epochs", max_epochs=2), seed=1,
            checkpointing=Checkpointing(path, every_s=0, tag="this-run"))


# -- precision --------------------------------------------------------------------------------------------

def test_bf16_and_fp32_reach_validation_accuracies_within_one_point_on_a_demo_condition(monkeypatch, tmp_path):
    """The demo's phase-1 MLP (MNIST-1D, 10,000 samples, Adam 0.001, to 99% training accuracy), 3 seeds.
    bf16 autocast is forced on the CPU here, so the test exercises what CUDA runs by default."""
    from warmstart.core import hardware
    from warmstart.components.datasets import DeviceData, load_raw
    from warmstart.jobs.train_block import run_training_stacked
    from warmstart.core.spec import DatasetSpec, EngineSpec, RunSpec
    from warmstart.components.splits import make_split

    monkeypatch.setattr(hardware, "CPU_BF16", True)
    raw = load_raw("mnist1d", tmp_path, num_samples=10000, seed=42)
    data = DeviceData(raw.x_train.float(), raw.y_train, raw.x_test.float(), raw.y_test, raw.num_classes,
                      raw.input_shape)
    accuracy = {}
    for precision in ("fp32", "bf16"):  # the seeds as one stack, as the workflow trains them
        specs = [RunSpec(DatasetSpec("mnist1d", {"num_samples": 10000, "seed": 42}), ModelSpec("mlp"),
                         OptimizerSpec("adam", lr=0.001), 128, StopSpec("converged", 0.99, 300), seed,
                         train_fraction=0.5, engine=EngineSpec(precision=precision)) for seed in (0, 1, 2)]
        splits = [make_split(len(data.x_train), s.seed) for s in specs]
        runs = []
        for _, _, metrics in run_training_stacked(specs, data, splits, [None] * 3, log=None):
            assert metrics["precision"] == precision  # what ran, not only what was asked
            runs.append(metrics["val_acc"])
        accuracy[precision] = sum(runs) / len(runs)
    assert abs(accuracy["bf16"] - accuracy["fp32"]) <= 0.01, accuracy


def test_bf16_on_a_cpu_applies_to_convolutional_models_on_cpus_with_native_bf16(monkeypatch):
    from warmstart.core import hardware
    from warmstart.core.spec import EngineSpec
    from warmstart.engine.precision import resolve_engine

    cpu, bf16 = torch.device("cpu"), EngineSpec(precision="bf16")
    resnet = build_model(ModelSpec("resnet18", {"width": 4}), (3, 32, 32), 10)
    mlp = build_model(ModelSpec("mlp"), (1, 28, 28), 10)
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    assert resolve_engine(bf16, cpu, resnet).precision == "bf16"
    assert resolve_engine(bf16, cpu, mlp).precision == "fp32"  # measured slower: runs in fp32
    assert resolve_engine(EngineSpec(), cpu, resnet).precision == "fp32"  # fp32 stays fp32
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    assert resolve_engine(bf16, cpu, resnet).precision == "fp32"
    monkeypatch.setattr(hardware, "CPU_BF16", True)  # the override
    assert resolve_engine(bf16, cpu, mlp).precision == "bf16"


def test_channels_last_applies_to_convolutional_models_only(monkeypatch):
    from warmstart.core import hardware
    from warmstart.core.spec import EngineSpec
    from warmstart.engine.precision import resolve_engine

    resnet = build_model(ModelSpec("resnet18", {"width": 4}), (3, 32, 32), 10)
    mlp = build_model(ModelSpec("mlp"), (1, 28, 28), 10)
    cpu = torch.device("cpu")
    monkeypatch.setattr(hardware, "cpu_channels_last_is_safe", lambda: True)
    assert resolve_engine(EngineSpec(channels_last=True), cpu, resnet).channels_last
    assert not resolve_engine(EngineSpec(channels_last=True), cpu, mlp).channels_last
    assert not resolve_engine(EngineSpec(channels_last=False), cpu, resnet).channels_last


def test_channels_last_stays_off_on_a_cpu_whose_nhwc_kernels_are_reported_wrong(monkeypatch):
    """oneDNN's AVX2 NHWC 1x1 strided convolution backward writes past its workspace (oneDNN#6035)."""
    from warmstart.core.spec import EngineSpec
    from warmstart.engine.precision import resolve_engine

    resnet = build_model(ModelSpec("resnet18", {"width": 4}), (3, 32, 32), 10)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert not resolve_engine(EngineSpec(channels_last=True), torch.device("cpu"), resnet).channels_last
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert resolve_engine(EngineSpec(channels_last=True), torch.device("cpu"), resnet).channels_last


def test_a_channels_last_bf16_resnet_trains_and_its_weights_stay_loadable():
    from warmstart.core.spec import EngineSpec
    from warmstart.core.hardware import cpu_channels_last_is_safe

    model = build_model(ModelSpec("resnet18", {"width": 4}), (3, 8, 8), 3)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 3, 8, 8, generator=g), torch.randint(0, 3, (64,), generator=g)
    result = train(model, OptimizerSpec("adam", lr=0.01), x, y, x, y, batch_size=16,
                   stop=StopSpec("epochs", max_epochs=2), seed=0, log=None,
                   engine=EngineSpec(precision="bf16", channels_last=True))
    assert result.engine.channels_last == cpu_channels_last_is_safe() and len(result.history) == 2
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: fp32 master weights
    fresh = build_model(ModelSpec("resnet18", {"width": 4}), (3, 8, 8), 3)
    fresh.load_state_dict(model.state_dict())
    from warmstart.core.hardware import cpu_has_native_bf16
    assert result.engine.precision == ("bf16" if cpu_has_native_bf16() else "fp32")
