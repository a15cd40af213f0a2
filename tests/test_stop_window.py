"""The stop rule's training accuracy: the epoch's running accuracy by default, or (``stop.restart_every``,
the authors' code with 10) the counts since they last restarted every k batches."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from warmstart.engine import loop as engine
from warmstart.core.spec import OptimizerSpec, StopSpec
from warmstart.engine.loop import TrainData, fit, train_epoch
from warmstart.engine.trainees import SingleModel


def frozen_epoch(restart_every):
    """One epoch of a model that does not move (lr 0), so each batch's correct count can be recounted."""
    torch.manual_seed(0)
    x, y = torch.randn(230, 5), torch.randint(0, 3, (230,))
    model = nn.Sequential(nn.Linear(5, 3))
    order = torch.randperm(230).unsqueeze(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    loss_sum, correct, (recent, n_recent) = train_epoch(SingleModel(model), opt, x, y, order, 20,
                                                        restart_every=restart_every)
    with torch.no_grad():
        hits = (model(x[order[0]]).argmax(-1) == y[order[0]]).long()
    per_batch = [int(hits[i:i + 20].sum()) for i in range(0, 230, 20)]
    return int(correct[0]), int(recent[0]), n_recent, per_batch


def test_by_default_the_stop_rule_counts_the_whole_epoch():
    correct, recent, n_recent, per_batch = frozen_epoch(None)
    assert correct == recent == sum(per_batch) and n_recent == 230


@pytest.mark.parametrize("k", [1, 3, 10])
def test_with_restarts_every_k_batches_the_stop_rule_counts_the_batches_since_the_last_restart(k):
    correct, recent, n_recent, per_batch = frozen_epoch(k)
    last = (len(per_batch) - 1) // k * k  # 12 batches: the counts restart at batches 0, k, 2k, ...
    assert correct == sum(per_batch)
    assert recent == sum(per_batch[last:])
    assert n_recent == 230 - 20 * last


def test_fit_stops_on_the_counts_since_the_last_restart_and_reports_the_whole_epoch(monkeypatch):
    """An epoch whose last batches are all right but whose whole is not ends training under
    ``restart_every``; the epoch's record still says the whole epoch's accuracy."""
    def fake_epoch(trainee, opt, x, y, order, batch_size, run, resolved, restart_every, interventions=None):
        s, n = order.shape
        correct = torch.full((s,), n // 2)
        recent = torch.full((s,), 40 if restart_every else n // 2)
        return torch.zeros(s), correct, (recent, 40 if restart_every else n)
    monkeypatch.setattr(engine, "train_epoch", fake_epoch)
    torch.manual_seed(0)
    x, y = torch.randn(120, 4), torch.randint(0, 2, (120,))
    data = TrainData(x, y, torch.arange(100).unsqueeze(0), torch.arange(100, 120).unsqueeze(0))
    for restart_every, epochs, stopped_by in ((10, 1, "threshold"), (None, 5, "max_epochs")):
        stop = StopSpec("converged", 0.99, 5, restart_every=restart_every)
        (result,) = fit(SingleModel(nn.Linear(4, 2)), OptimizerSpec("sgd", lr=0.1), data, [0], batch_size=10,
                        stop=stop, log=None)
        assert (len(result.history), result.stopped_by) == (epochs, stopped_by)
        assert result.history[0]["train_acc"] == 0.5


def test_restart_every_enters_a_runs_identity_only_when_set():
    plain, authors = StopSpec(), StopSpec(restart_every=10)
    assert "restart_every" not in plain.canonical() and authors.canonical()["restart_every"] == 10
