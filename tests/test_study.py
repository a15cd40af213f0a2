"""Section 3 of the paper ("Did you see whether X helped?"): each loss term's gradient against a hand
computation, the init strategies of Tables 3, 4 and Section 3.5, the phase-1 checkpoints of Figure 7,
and how the sweep, grids and checkpoints are planned."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
import yaml
from torch import nn
from torch.nn import functional as F

from test_stacks import DATASET, spec
from warmstart.components.datasets import DeviceData, load_raw
from warmstart.core.errors import ConfigError
from warmstart.plan.experiments import plan_experiments
from warmstart.components.inits import InitContext, initialise
from warmstart.core.io import load_torch
from warmstart.components.models import head_parameter_names
from warmstart.reports import checkpoint_damage, condition_table, init_table, pareto_front
from warmstart.jobs.train_block import run_training, run_training_stacked
from warmstart.jobs.train_runs import execute_run
from warmstart.core.spec import InitSpec, StopSpec, TermSpec
from warmstart.components.splits import make_split, save_split
from warmstart.components.terms import TERMS, TermBatch, diagonal_fisher

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    raw = load_raw("mnist1d", tmp_path_factory.mktemp("mnist1d"), **DATASET.options)
    return DeviceData(raw.x_train, raw.y_train, raw.x_test, raw.y_test, raw.num_classes, raw.input_shape)


# -- loss terms against hand computations, on a linear model ---------------------------------------------

def linear_batch(seed=0, s=2, b=5, d=4, c=3):
    """A stacked linear model: logits[s] = x[s] @ W[s].T, with its TermBatch."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(s, c, d, generator=g, requires_grad=True)
    x = torch.randn(s, b, d, generator=g)
    y = torch.randint(0, c, (s, b), generator=g)

    def forward(inputs):
        return torch.bmm(inputs, W.transpose(1, 2))
    logits = forward(x)
    ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(s, -1).mean(1)
    start = {"w": torch.randn(s, c, d, generator=g)}
    batch = TermBatch(logits=logits, targets=y, inputs=x, cross_entropy=ce, params={"w": W},
                      anchors={"start": start, "origin": start}, state={}, forward=forward)
    return W, x, y, batch


def test_l2_gradient_is_twice_the_coefficient_times_the_weights():
    W, _, _, batch = linear_batch()
    (grad,) = torch.autograd.grad(TERMS["l2"].penalty(batch, coef=0.3).sum(), W)
    torch.testing.assert_close(grad, 2 * 0.3 * W.detach())


def test_confidence_penalty_gradient_is_minus_the_entropys_gradient():
    W, x, y, batch = linear_batch()
    value = TERMS["confidence"].penalty(batch, coef=0.2)
    p = torch.softmax(batch.logits.detach(), -1)
    entropy = -(p * p.log()).sum(-1).mean(-1)
    torch.testing.assert_close(value, -0.2 * entropy)
    # by hand: dH/dz_k = -p_k (log p_k + H_sample), averaged over the batch; dz/dW = x
    log_p = p.log()
    h = -(p * log_p).sum(-1, keepdim=True)
    dH_dz = -p * (log_p + h) / x.shape[1]
    expected = -0.2 * torch.bmm(dH_dz.transpose(1, 2), x)
    (grad,) = torch.autograd.grad(value.sum(), W)
    torch.testing.assert_close(grad, expected)


def test_adversarial_term_is_the_cross_entropy_on_fgsm_inputs_with_a_constant_perturbation():
    W, x, y, batch = linear_batch()
    eps, coef = 0.1, 0.5
    value = TERMS["adversarial"].penalty(batch, coef=coef, epsilon=eps)
    # by hand: d CE_sum / dx = (p - onehot) W, so x_adv = x + eps * sign((p - onehot) W)
    p = torch.softmax(batch.logits.detach(), -1)
    onehot = F.one_hot(y, 3).float()
    x_adv = x + eps * torch.sign(torch.bmm(p - onehot, W.detach()))
    logits_adv = torch.bmm(x_adv, W.detach().transpose(1, 2))
    expected = coef * F.cross_entropy(logits_adv.flatten(0, 1), y.flatten(), reduction="none").view(2, -1).mean(1)
    torch.testing.assert_close(value, expected)
    # its gradient flows through the second pass only: coef * (p_adv - onehot)^T x_adv / B
    p_adv = torch.softmax(logits_adv, -1)
    (grad,) = torch.autograd.grad(value.sum(), W)
    torch.testing.assert_close(grad, coef * torch.bmm((p_adv - onehot).transpose(1, 2), x_adv) / x.shape[1])


def test_ewc_gradient_is_the_coefficient_times_fisher_times_the_distance_to_the_start():
    W, _, _, batch = linear_batch()
    fisher = {"w": torch.rand(W.shape, generator=torch.Generator().manual_seed(3))}
    batch.state = fisher
    value = TERMS["ewc"].penalty(batch, coef=0.4)
    (grad,) = torch.autograd.grad(value.sum(), W)
    torch.testing.assert_close(grad, 0.4 * fisher["w"] * (W.detach() - batch.anchors["start"]["w"]))


def test_the_diagonal_fisher_is_the_mean_squared_per_sample_gradient():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    fisher = diagonal_fisher(model, x, y, chunk=3)
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(10):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        for n, p in model.named_parameters():
            expected[n] += p.grad ** 2 / 10
    for n in expected:
        torch.testing.assert_close(fisher[n], expected[n])


def test_ewc_needs_a_parent_and_estimates_its_fisher_on_the_parents_data(data):
    split = make_split(len(data.x_train), 0)
    parent = spec(0, train_fraction=0.5, stop=StopSpec("epochs", max_epochs=2))
    model, _, _ = run_training(parent, data, split, None, log=None)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    child = spec(0, init=InitSpec("warm"), parent=parent, stop=StopSpec("epochs", max_epochs=2),
                 terms=(TermSpec("ewc", {"coef": 1.0}),))
    _, result, _ = run_training(child, data, split, state, log=None)
    assert len(result.history) == 2
    with pytest.raises(Exception, match="terms.ewc: needs a parent"):
        run_training(spec(0, terms=(TermSpec("ewc", {"coef": 1.0}),)), data, split, None, log=None)


# -- init strategies --------------------------------------------------------------------------------------

def test_noise_of_std_s_changes_the_weights_with_measured_std_s():
    torch.manual_seed(0)
    parent = nn.Sequential(nn.Linear(200, 300), nn.Tanh(), nn.Linear(300, 10))
    state = {k: v.clone() for k, v in parent.state_dict().items()}
    for std in (1e-2, 1e-3):
        fresh = nn.Sequential(nn.Linear(200, 300), nn.Tanh(), nn.Linear(300, 10))
        model = initialise("noisy_warm", {"std": std}, InitContext(fresh=fresh, seed=0, parent_state=state))
        diff = torch.cat([(model.state_dict()[k] - state[k]).flatten() for k in state])
        assert diff.std().item() == pytest.approx(std, rel=0.02) and abs(diff.mean().item()) < 0.02 * std
    zero = initialise("noisy_warm", {"std": 0.0}, InitContext(fresh=parent, seed=0, parent_state=state))
    assert all(torch.equal(zero.state_dict()[k], state[k]) for k in state)


def test_the_last_layer_strategy_trains_only_the_last_layer(data):
    split = make_split(len(data.x_train), 0)
    parent = spec(0, train_fraction=0.5, stop=StopSpec("epochs", max_epochs=2))
    model, _, _ = run_training(parent, data, split, None, log=None)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    child = spec(0, init=InitSpec("last_layer"), parent=parent, stop=StopSpec("epochs", max_epochs=3))
    trained, _, _ = run_training(child, data, split, state, log=None)
    head = set(head_parameter_names(trained))
    assert head == {"5.weight", "5.bias"}  # the MLP's last Linear
    for name, value in trained.state_dict().items():
        assert torch.equal(value, state[name]) != (name in head), name
    # LL+WS: the last layer first (counted as init cost), then every layer trains
    both = spec(0, init=InitSpec("last_layer_then_all"), parent=parent, stop=StopSpec("epochs", max_epochs=2))
    trained, _, metrics = run_training(both, data, split, state, log=None)
    assert all(not torch.equal(v, state[k]) for k, v in trained.state_dict().items())
    assert metrics["init_samples"] == 2 * metrics["n_train"] and metrics["init_time_s"] > 0
    # stacked, the frozen layers stay frozen per seed too
    specs = [spec(s, init=InitSpec("last_layer"), parent=spec(s, train_fraction=0.5), stop=StopSpec("epochs", max_epochs=2))
             for s in (0, 1)]
    out = run_training_stacked(specs, data, [make_split(len(data.x_train), s) for s in (0, 1)], [state, state],
                               log=None)
    for m, _, _ in out:
        assert all(torch.equal(v, state[k]) for k, v in m.state_dict().items() if k not in head)


def test_carried_adam_state_equals_the_phase1_optimisers_state(data, tmp_path):
    """Section 3.5: the warm start that keeps the optimiser state starts phase 2 from exactly the
    optimiser state phase 1 ended with (Adam's moments and step count)."""
    split = make_split(len(data.x_train), 0)
    parent = spec(0, train_fraction=0.5, stop=StopSpec("epochs", max_epochs=3), keep_optimizer=True)
    _, parent_result, _ = run_training(parent, data, split, None, log=None)
    saved = parent_result.optimizer_state
    steps = saved["state"][0]["step"].item()
    assert steps == 3 * -(-round(0.5 * len(split.pool)) // 64)  # 3 epochs of batches of 64
    # the same state, cut out of a stack of seeds, is the single run's
    stacked = run_training_stacked([parent, parent.replace(seed=1)], data,
                                   [split, make_split(len(data.x_train), 1)], [None, None], log=None)
    for k, per_param in saved["state"].items():
        for key, value in per_param.items():
            torch.testing.assert_close(stacked[0][1].optimizer_state["state"][k][key], value)
    # the child continues it: after one more epoch its step count continues from the parent's
    state = {k: v for k, v in run_training(parent, data, split, None, log=None)[0].state_dict().items()}
    for init, first_step in ((InitSpec("warm", {"optimizer_state": "keep"}), steps), (InitSpec("warm"), 0)):
        child = spec(0, init=init, parent=parent, stop=StopSpec("epochs", max_epochs=1), keep_optimizer=True)
        _, result, _ = run_training(child, data, split, state, parent_optimizer_states=[saved], log=None)
        n_batches = -(-len(split.pool) // 64)
        assert result.optimizer_state["state"][0]["step"].item() == first_step + n_batches
    # files: the parent's optimizer.pt is what the child loads
    data_path = tmp_path / "data.pt"
    from warmstart.components.datasets import prepare_dataset
    prepare_dataset(DATASET, tmp_path / "raw", False, data_path)
    save_split(split, tmp_path / "split.pt")
    execute_run(parent, data_path, tmp_path / "split.pt", tmp_path / "parent", device="cpu", log=lambda m: None)
    on_disk = load_torch(tmp_path / "parent" / "optimizer.pt")
    torch.testing.assert_close(on_disk["state"][0]["exp_avg"], saved["state"][0]["exp_avg"])


def test_a_checkpoint_after_k_epochs_equals_a_run_stopped_at_k_epochs(data, tmp_path):
    split = make_split(len(data.x_train), 0)
    save_split(split, tmp_path / "split.pt")
    from warmstart.components.datasets import prepare_dataset
    prepare_dataset(DATASET, tmp_path / "raw", False, tmp_path / "data.pt")
    long = spec(0, train_fraction=0.5, stop=StopSpec("epochs", max_epochs=6), checkpoints=(2, 4))
    execute_run(long, tmp_path / "data.pt", tmp_path / "split.pt", tmp_path / "long", device="cpu", log=lambda m: None)
    for k in (2, 4):
        short = long.replace(stop=StopSpec("epochs", max_epochs=k), checkpoints=())
        execute_run(short, tmp_path / "data.pt", tmp_path / "split.pt", tmp_path / f"short{k}", device="cpu",
                    log=lambda m: None)
        kept = load_torch(tmp_path / "long" / "checkpoints" / f"epoch{k}.pt")
        final = load_torch(tmp_path / f"short{k}" / "model.pt")
        assert kept.keys() == final.keys() and all(torch.equal(kept[n], final[n]) for n in kept)


# -- planning ----------------------------------------------------------------------------------------------

def paper_config():
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_the_sweep_trains_each_phase1_setting_once_for_all_twelve_phase2_settings():
    plan = plan_experiments(paper_config(), only=["fig4"])
    fig4 = plan.experiments["fig4"]
    phase1 = [p for p in fig4 if p.labels["phase"] == 1]
    warm = [p for p in fig4 if p.labels["init"] == "warm"]
    random = [p for p in fig4 if p.labels["init"] == "random" and p.labels["phase"] == 2]
    assert len(phase1) == 12 * 3 and len(warm) == 144 * 3 and len(random) == 12 * 3
    parents = pd.Series([p.spec.parent.run_id for p in warm]).value_counts()
    assert len(parents) == 36 and (parents == 12).all()
    assert {(p.spec.batch_size, p.spec.optimizer.lr) for p in warm} == {(b, lr) for b in (16, 32, 64, 128)
                                                                      for lr in (0.001, 0.01, 0.1)}
    assert len(plan.runs) == 36 + 432 + 36


def test_a_grid_is_written_once_and_plans_one_condition_per_value():
    plan = plan_experiments(paper_config(), only=["table2", "table3", "table5"])
    table2 = plan.experiments["table2"]
    assert len({p.labels["condition"] for p in table2}) == 12
    assert {p.labels["phase"] for p in table2 if p.spec.terms} == {1, 2}  # both phases
    table5 = plan.experiments["table5"]
    assert all(not p.spec.terms for p in table5 if p.labels["phase"] == 1)  # EWC in phase 2 only
    assert {t.options["coef"] for p in table5 for t in p.spec.terms} == {0.1, 0.01, 0.001, 0.0001}
    inits = {p.labels["init"] for p in plan.experiments["table3"] if p.labels["phase"] == 2}
    assert inits == {"random", "noisy std=0.01", "noisy std=0.001", "noisy std=0.0001", "noisy std=1e-05",
                     "noisy std=0"}


def test_figure7_children_start_from_the_checkpoints_of_one_phase1_run():
    plan = plan_experiments(paper_config(), only=["fig7"])
    fig7 = plan.experiments["fig7"]
    phase1 = [p.spec for p in fig7 if p.labels["phase"] == 1]
    # config.yaml: every 20 epochs for 200, across the whole phase-1 run (Figure 7 as the paper means it)
    assert len(phase1) == 5 and all(s.checkpoints == tuple(range(20, 220, 20)) for s in phase1)
    assert all(s.stop == StopSpec("epochs", max_epochs=200) for s in phase1)
    warm = [p for p in fig7 if p.labels["init"] == "warm"]
    assert sorted({p.spec.parent_epoch for p in warm}) == list(range(20, 220, 20)) and len(warm) == 50


def test_section_3_5_asks_the_phase1_runs_to_keep_their_optimiser_state():
    plan = plan_experiments(paper_config(), only=["sec35"])
    keep = [p.spec for p in plan.experiments["sec35"] if p.labels["init"] == "warm_keep"]
    assert keep and all(s.parent.keep_optimizer for s in keep)
    assert all(plan.runs[s.parent.name].keep_optimizer for s in keep)


def test_a_bad_grid_fails_naming_the_key():
    config = paper_config()
    config["experiments"]["table2"]["term_grid"]["l2"] = {"coef": []}
    with pytest.raises(ConfigError, match=r"^experiments\.table2\.term_grid\.l2: "):
        plan_experiments(config, only=["table2"])
    config = paper_config()
    config["experiments"]["table2"]["term_grid"]["l2"] = {"strength": [1.0]}
    with pytest.raises(ConfigError, match=r"^experiments\.table2\.term_grid\.l2: unknown option"):
        plan_experiments(config, only=["table2"])


# -- reports on hand-made rows ------------------------------------------------------------------------------

def test_the_pareto_front_keeps_the_runs_no_other_beats_on_cost_and_accuracy():
    rows = pd.DataFrame({"cost": [1, 2, 3, 4, 5, 2], "acc": [0.5, 0.4, 0.7, 0.6, 0.8, 0.55]})
    front = pareto_front(rows, "cost", "acc")
    assert list(zip(front["cost"], front["acc"])) == [(1, 0.5), (2, 0.55), (3, 0.7), (5, 0.8)]


def test_checkpoint_damage_is_the_percent_difference_from_the_same_seeds_baseline():
    rows = []
    for seed, base in ((0, 0.5), (1, 0.6)):
        rows.append(dict(run_id=f"r{seed}", phase=2, init="random", baseline=True, seed=seed, epoch=9,
                         val_acc=base, checkpoint_epoch=None))
        for e, acc in ((5, base * 0.9), (10, base * 0.8)):
            rows.append(dict(run_id=f"w{seed}{e}", phase=2, init="warm", baseline=False, seed=seed, epoch=9,
                             val_acc=acc, checkpoint_epoch=e))
    damage = checkpoint_damage(pd.DataFrame(rows)).set_index("checkpoint_epoch")
    assert damage.loc[5, "mean"] == pytest.approx(-10) and damage.loc[10, "mean"] == pytest.approx(-20)


def test_condition_and_init_tables_compute_mean_std_and_converged_counts():
    rows = []
    for cond, init, accs, conv in (("l2 coef=0.1", "warm", [0.5, 0.7], [True, False]),
                                   ("l2 coef=0.1", "random", [0.6, 0.6], [True, True])):
        for seed, (acc, c) in enumerate(zip(accs, conv)):
            rows.append(dict(dataset="d", model="m", optimizer="o", condition=cond, init=init,
                             baseline=init == "random", phase=2, seed=seed, val_acc=acc, train_time_s=10.0 + seed,
                             init_time_s=1.0, epochs=4, converged=c))
    summary = pd.DataFrame(rows)
    _, wide = condition_table(summary)
    assert wide.loc[0, "warm val. acc. %"] == "60.0 (14.1) [1 of 2 converged]"
    assert wide.loc[0, "random val. acc. %"] == "60.0 (0.0)"
    assert list(wide.columns)[-2:] == ["random val. acc. %", "warm val. acc. %"]  # baseline first
    long, _ = init_table(summary.drop(columns="condition"))
    assert long.set_index("init").loc["warm", "time_s_mean"] == pytest.approx(11.5)
    assert long["init"].tolist() == ["random", "warm"]
