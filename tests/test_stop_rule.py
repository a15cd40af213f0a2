"""The stop rule: "trained to convergence" is the first epoch whose running training accuracy reaches the
threshold (99% in the paper), else the epoch cap; a fixed-epochs run trains exactly max_epochs. What the
run reports (stopped_by, converged) follows. Tiny linear models, a few epochs: `make mutate` runs these."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from warmstart.core.spec import OptimizerSpec, StopSpec
from warmstart.engine.checkpoint import Checkpointing
from warmstart.engine.loop import TrainData, TrainResult, fit, train, train_epoch
from warmstart.engine.trainees import SingleModel, StackedModels

N, DIM = 200, 5


def separable(margin: float, seed: int = 0):
    """Two classes split by the sign of the first feature, pushed apart by ``margin``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, DIM, generator=g)
    y = (x[:, 0] > 0).long()
    x[:, 0] += torch.where(y == 1, margin, -margin)
    return x, y


def linear(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(DIM, 2))


def run(stop: StopSpec, margin: float = 0.05, seed: int = 0, lr: float = 0.05) -> TrainResult:
    x, y = separable(margin, seed)
    return train(linear(seed), OptimizerSpec("adam", lr=lr), x, y, x[:20], y[:20], batch_size=50, stop=stop,
                 seed=seed, log=None)


def accuracies(result: TrainResult) -> list[float]:
    return [r["train_acc"] for r in result.history]


def test_reaching_the_threshold_is_at_or_above_it_under_the_converged_rule_only():
    stop = StopSpec("converged", threshold=0.9, max_epochs=10)
    assert stop.reached(0.9) and stop.reached(0.95) and stop.reached(1.0)
    assert not stop.reached(0.89999)
    fixed = StopSpec("epochs", threshold=0.9, max_epochs=10)
    assert not fixed.reached(0.9) and not fixed.reached(1.0)


def test_a_run_that_never_reaches_the_threshold_says_why_it_stopped():
    assert StopSpec("converged", 0.99, 5).cap_reason == "max_epochs"
    assert StopSpec("epochs", 0.99, 5).cap_reason == "epochs"


def test_training_stops_after_the_first_epoch_that_reaches_the_threshold():
    """The whole trajectory under the cap, then the same run with a threshold that one epoch reaches
    exactly (a new best accuracy): it is the trajectory's prefix up to that epoch (equal counts)."""
    acc = accuracies(run(StopSpec("epochs", max_epochs=15)))
    k = [e for e in range(1, 15) if acc[e] > max(acc[:e])][-2]  # the second-last new best
    assert 1 < k < 14 and acc[k] < 1
    result = run(StopSpec("converged", threshold=acc[k], max_epochs=15))
    assert accuracies(result) == acc[:k + 1]
    assert result.stopped_by == "threshold" and result.converged


def test_reaching_the_threshold_on_the_last_allowed_epoch_counts_as_converged():
    k = len(run(StopSpec("converged", threshold=0.99, max_epochs=40)).history)
    result = run(StopSpec("converged", threshold=0.99, max_epochs=k))
    assert len(result.history) == k and result.stopped_by == "threshold" and result.converged


def test_a_run_that_hits_the_cap_first_stops_there_and_is_not_converged():
    k = len(run(StopSpec("converged", threshold=0.99, max_epochs=40)).history)
    result = run(StopSpec("converged", threshold=0.99, max_epochs=k - 1))
    assert len(result.history) == k - 1 and result.stopped_by == "max_epochs" and not result.converged
    assert max(accuracies(result)) < 0.99


def test_a_fixed_epochs_run_trains_exactly_max_epochs_past_the_threshold_and_is_not_converged():
    result = run(StopSpec("epochs", threshold=0.99, max_epochs=6), margin=1.0)
    assert len(result.history) == 6 and result.stopped_by == "epochs" and not result.converged
    assert accuracies(result)[1] >= 0.99  # it reached the threshold at epoch 2 and kept going


def test_each_seed_of_a_stack_stops_at_its_own_first_epoch_at_the_threshold():
    """Three seeds trained together: seed 1 converges fast, seed 0 slowly, seed 2 never within the cap;
    each stops and reports as it would alone."""
    data = [separable(0.05, 0), separable(1.0, 1), separable(0.0, 2)]
    alone_models = [linear(s) for s in range(3)]
    alone = [train(m, OptimizerSpec("adam", lr=0.05), x, y, x[:20], y[:20], batch_size=50,
                   stop=StopSpec("converged", 0.99, 15), seed=s, log=None)
             for s, (m, (x, y)) in enumerate(zip(alone_models, data))]
    assert [r.stopped_by for r in alone] == ["threshold", "threshold", "max_epochs"]
    assert len(alone[1].history) < len(alone[0].history) < 15 == len(alone[2].history)
    x = torch.cat([d[0] for d in data] + [d[0][:20] for d in data])
    y = torch.cat([d[1] for d in data] + [d[1][:20] for d in data])
    train_idx = torch.arange(3 * N).view(3, N)
    val_idx = 3 * N + torch.arange(60).view(3, 20)
    modules = [linear(s) for s in range(3)]
    initial = [m[0].weight.detach().clone() for m in modules]
    stacked = fit(StackedModels(modules), OptimizerSpec("adam", lr=0.05), TrainData(x, y, train_idx, val_idx),
                  [0, 1, 2], batch_size=50, stop=StopSpec("converged", 0.99, 15), log=None)
    for together, single, module, start, own in zip(stacked, alone, modules, initial, alone_models):
        assert together.stopped_by == single.stopped_by and together.converged == single.converged
        assert accuracies(together) == pytest.approx(accuracies(single), abs=0.011)
        assert len(together.history) == len(single.history)
        # a seed's last epoch, at the threshold or at the cap, is evaluated, and its weights written out
        assert together.final["val_acc"] == pytest.approx(single.final["val_acc"], abs=0.051)
        assert all(math.isnan(r["val_acc"]) for r in together.history[:-1])
        assert not torch.equal(module[0].weight, start)
        torch.testing.assert_close(module[0].weight, own[0].weight, atol=1e-3, rtol=0)


# -- the authors' restarting counts ------------------------------------------------------------------------

def frozen(seed: int = 0):
    """A linear model that SGD at lr 1e-30 cannot move (the steps vanish in rounding), and its predictions."""
    model = linear(seed)
    x = torch.randn(40, DIM, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        pred = model(x).argmax(1)
    return model, x, pred


def test_train_epoch_counts_the_samples_since_the_counts_last_restarted():
    """Batches of 5 over 38 samples (8 batches, the last of 3); restarting every 3 batches restarts at
    batches 0, 3 and 6: the counts then cover samples 30-37 (two of them wrong)."""
    model, x, pred = frozen()
    x = x[:38]
    y = pred[:38].clone()
    wrong = torch.tensor([2, 11, 31, 36])
    y[wrong] = 1 - y[wrong]
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    order = torch.arange(38).unsqueeze(0)
    for restart_every, (recent, since) in ((None, (34, 38)), (3, (6, 8)), (4, (16, 18)), (1, (2, 3))):
        loss_sum, correct, (counted, n) = train_epoch(SingleModel(model), opt, x, y, order, 5,
                                                      restart_every=restart_every)
        assert (correct.item(), counted.item(), n) == (34, recent, since), restart_every
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(model(x), y, reduction="sum")
    assert loss_sum.item() == pytest.approx(expected.item(), rel=1e-6)  # summed, not averaged


def test_with_restarting_counts_the_rule_reads_the_accuracy_since_the_last_restart():
    """The authors' code restarts its counts every k batches: the threshold is compared with the accuracy
    since then; the reported train_acc is the whole epoch's. Epoch 1's order is fit's documented one
    (``randperm`` from ``manual_seed(2 * seed + 1)``): its errors are put before the last restart."""
    model, x, pred = frozen()
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(2 * 0 + 1))
    y = pred.clone()
    y[perm[:4]] = 1 - y[perm[:4]]  # 4 errors, all in batch 0 of 8; restarts at batches 0, 3 and 6
    common = dict(batch_size=5, seed=0, log=None)
    sgd = OptimizerSpec("sgd", lr=1e-30)
    windowed = train(model, sgd, x, y, x[:5], y[:5], stop=StopSpec("converged", 1.0, 3, restart_every=3), **common)
    assert len(windowed.history) == 1 and windowed.stopped_by == "threshold"
    assert windowed.final["train_acc"] == 36 / 40
    whole = train(model, sgd, x, y, x[:5], y[:5], stop=StopSpec("converged", 1.0, 3), **common)
    assert len(whole.history) == 3 and whole.stopped_by == "max_epochs"
    assert accuracies(whole) == [36 / 40] * 3


# -- resuming ----------------------------------------------------------------------------------------------------

class Killed(Exception):
    pass


def test_a_resumed_run_stops_where_the_uninterrupted_run_stops(tmp_path):
    stop = StopSpec("converged", threshold=0.99, max_epochs=15)
    reference = run(stop)
    assert 4 < len(reference.history) < 15

    def kill_after_3(record):
        if record["epoch"] == 3:
            raise Killed
    x, y = separable(0.05)
    ckpt = Checkpointing(tmp_path / "resume.pt", every_s=0, tag="a")
    settings = dict(batch_size=50, stop=stop, seed=0, log=None, checkpointing=ckpt)
    with pytest.raises(Killed):
        train(linear(0), OptimizerSpec("adam", lr=0.05), x, y, x[:20], y[:20], on_epoch=kill_after_3, **settings)
    resumed = train(linear(0), OptimizerSpec("adam", lr=0.05), x, y, x[:20], y[:20], **settings)
    assert [r["epoch"] for r in resumed.history] == [r["epoch"] for r in reference.history]
    assert accuracies(resumed) == accuracies(reference) and resumed.stopped_by == "threshold"
