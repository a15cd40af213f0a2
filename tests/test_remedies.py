"""The remedies of the leaderboard do what their definitions say on tiny models, and the leaderboard's
numbers (gap closed, best setting, compute, Pareto front) are computed right on hand-made rows."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from warmstart.core.errors import ConfigError
from warmstart.plan.experiments import plan_experiments
from warmstart.components.inits import InitContext, initialise
from warmstart.components.remedy_inits import dash_scales
from warmstart.reports import gap_closed, leaderboard, pareto_front

REPO = Path(__file__).resolve().parents[1]


def mlp(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))


def context(parent_seed=1, **kw):
    parent = mlp(parent_seed).state_dict()
    return InitContext(fresh=mlp(0), seed=0, parent_state=parent, new_model=lambda tag: mlp(99), **kw), parent


def test_interpolation_moves_each_parameter_toward_the_lineages_first_init():
    origin = {n: p.detach().clone() for n, p in mlp(7).named_parameters()}
    ctx, parent = context(origin=origin)
    model = initialise("interpolate_init", {"c": 0.25}, ctx)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), 0.75 * parent[name] + 0.25 * origin[name])


def test_head_reset_changes_only_the_last_layer_to_a_new_draw():
    ctx, parent = context()
    model = initialise("head_reset", {}, ctx)
    new = mlp(99).state_dict()
    for name, value in model.state_dict().items():
        expected = new[name] if name.startswith("3.") else parent[name]
        assert torch.equal(value, expected), name


def test_the_dash_papers_shrink_perturb_touches_weights_only():
    ctx, parent = context()
    model = initialise("shrink_perturb_weights", {"shrink": 0.3, "sigma": 0.0}, ctx)
    for name, value in model.state_dict().items():
        factor = 0.3 if name.endswith("weight") else 1.0
        torch.testing.assert_close(value, factor * parent[name])
    noisy = initialise("shrink_perturb_weights", {"shrink": 1.0, "sigma": 0.01}, context()[0])
    diff = torch.cat([(noisy.state_dict()[n] - parent[n]).flatten() for n in parent if n.endswith("weight")])
    assert 0.005 < diff.std().item() < 0.02
    assert all(torch.equal(noisy.state_dict()[n], parent[n]) for n in parent if n.endswith("bias"))


def test_dash_scale_is_the_hand_computed_cosine_clipped():
    w = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    g = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    # cosines 1, 1/sqrt(2), -1 -> clipped to [0.3, 1]
    torch.testing.assert_close(dash_scales(w, g, 0.3, "kernel"), torch.tensor([1.0, 2 ** -0.5, 0.3]))
    conv = torch.zeros(2, 3, 2, 2)
    conv[0, 0] = 1.0
    direction = torch.ones(2, 3, 2, 2)
    per_kernel = dash_scales(conv + 1e-9, direction, 0.0, "kernel")
    assert per_kernel.shape == (2, 3) and per_kernel[0, 0].item() == pytest.approx(1.0)
    per_filter = dash_scales(conv, direction, 0.0, "filter")
    assert per_filter.shape == (2,) and per_filter[0].item() == pytest.approx(4 / (2 * 12 ** 0.5))
    bias = dash_scales(torch.tensor([1.0, 1.0]), torch.tensor([1.0, -1.0]), 0.3, "kernel")
    assert bias.shape == (1,) and bias.item() == pytest.approx(0.3)


def test_dash_shrinks_each_row_by_its_cosine_with_the_averaged_negative_gradient():
    torch.manual_seed(0)
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    ctx, parent = context(x_train=x, y_train=y)
    model = initialise("dash", {"shrink_min": 0.3, "alpha": 1.0, "batch_size": 64}, ctx)  # one batch: g = -grad
    reference = mlp(0)
    reference.load_state_dict(parent)
    loss = nn.functional.cross_entropy(reference(x), y)
    grads = dict(zip([n for n, _ in reference.named_parameters()], torch.autograd.grad(loss, list(reference.parameters()))))
    for name, p in model.named_parameters():
        scale = dash_scales(parent[name], -grads[name], 0.3, "kernel")
        expected = parent[name] * (scale.unsqueeze(1) if parent[name].dim() == 2 else scale)
        torch.testing.assert_close(p.detach(), expected)
    assert ctx.cost.samples == 64


# -- the leaderboard's numbers --------------------------------------------------------------------------

def test_gap_closed_is_zero_at_the_warm_start_and_one_at_random_init():
    assert gap_closed(0.5, 0.5, 0.6) == 0 and gap_closed(0.6, 0.5, 0.6) == 1
    assert gap_closed(0.55, 0.5, 0.6) == pytest.approx(0.5) and gap_closed(0.65, 0.5, 0.6) == pytest.approx(1.5)


def hand_made_rows():
    rows = []
    accs = {("target", "random", "random"): [0.60, 0.62], ("baseline", "warm", "warm"): [0.50, 0.52],
            ("remedy", "sp", "sp shrink=0.4"): [0.55, 0.57], ("remedy", "sp", "sp shrink=0.8"): [0.52, 0.54],
            ("remedy", "l2i", "l2i coef=0.01"): [0.61, 0.59]}
    time = {"random": 10.0, "warm": 2.0, "sp shrink=0.4": 5.0, "sp shrink=0.8": 3.0, "l2i coef=0.01": 4.0}
    for (role, remedy, setting), values in accs.items():
        for seed, acc in enumerate(values):
            rows.append(dict(dataset="d", model="m", optimizer="o", phase=2, seed=seed, role=role, remedy=remedy,
                             setting=setting, init=setting, baseline=role == "target", val_acc=acc,
                             train_time_s=time[setting], init_time_s=1.0 if remedy == "sp" else 0.0,
                             samples_seen=100, init_samples=0, converged=True))
    return pd.DataFrame(rows)


def test_the_leaderboard_picks_each_remedys_best_setting_and_sorts_by_gap_closed():
    settings, best = leaderboard(hand_made_rows())
    assert len(settings) == 5 and list(best["remedy"]) == ["random", "l2i", "sp", "warm"]
    sp = best.set_index("remedy").loc["sp"]
    assert sp["setting"] == "sp shrink=0.4" and sp["grid_size"] == 2
    assert sp["gap_closed"] == pytest.approx(0.5) and sp["report_split"] == "val"  # these rows have no test_acc
    assert sp["time_rel"] == pytest.approx(6.0 / 10.0)  # training (5 s) plus init (1 s) time, against random init's
    l2i = best.set_index("remedy").loc["l2i"]
    # a ratio of means: mean(0.11, 0.07) / mean(0.10, 0.10) = 0.9
    assert l2i["gap_closed"] == pytest.approx(0.9) and l2i["val_acc_mean"] == pytest.approx(0.60)


def test_the_pareto_front_of_a_remedys_grid():
    grid = pd.DataFrame({"time_rel": [0.3, 0.5, 0.4, 0.9], "val_acc_mean": [0.52, 0.55, 0.50, 0.54]})
    front = pareto_front(grid, "time_rel", "val_acc_mean")
    assert list(front["time_rel"]) == [0.3, 0.5]


# -- planning -------------------------------------------------------------------------------------------

def paper_config():
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_every_remedy_setting_is_planned_on_both_protocols_against_one_target_and_one_baseline():
    plan = plan_experiments(paper_config(), only=["leaderboard"])
    planned = plan.experiments["leaderboard"]
    batch = [p for p in planned if p.labels["protocol"] == "batch" and p.labels["phase"] == 2]
    online = [p for p in planned if p.labels["protocol"] == "online"]
    settings = {p.labels["setting"] for p in batch}
    assert {p.labels["role"] for p in batch} == {"target", "baseline", "remedy"}
    assert {p.labels["setting"] for p in online} <= settings and online
    # one phase-1 run per seed, model and optimiser serves every remedy
    parents = {p.spec.parent.run_id for p in batch if p.spec.parent is not None}
    assert len(parents) == len({(p.labels["seed"], p.labels["model"], p.labels["optimizer"]) for p in batch})
    # a term remedy is a warm start plus the term
    term_runs = [p.spec for p in batch if p.labels["remedy"] == "l2_init"]
    assert term_runs and all(s.init.strategy == "warm" and s.terms for s in term_runs)


def test_a_remedy_label_must_name_exactly_one_init_or_term():
    config = paper_config()
    config["experiments"]["leaderboard"]["remedies"]["nonsense"] = {}
    with pytest.raises(ConfigError, match=r"^experiments\.leaderboard\.remedies\.nonsense: "):
        plan_experiments(config, only=["leaderboard"])


def test_the_paper_config_plans_fifteen_arms_on_three_architectures_and_both_protocols():
    plan = plan_experiments(paper_config(), only=["leaderboard"])
    planned = plan.experiments["leaderboard"]
    arms = {p.labels["remedy"] for p in planned if p.labels.get("remedy")}
    assert len(arms) >= 15
    assert {"redo", "cbp", "snr", "parseval", "fire", "muon", "full_reset", "warm", "sp", "sp_weights"} <= arms
    for protocol in ("batch", "online"):
        assert {p.labels["model"] for p in planned if p.labels["protocol"] == protocol} == {"resnet18", "vgg16", "vit"}
    # an intervention goes with the warm start, in phase 2 only; Muon trains phase 2 (optimizer_phases [2])
    redo = [p.spec for p in planned if p.labels["remedy"] == "redo" and p.labels["protocol"] == "batch"]
    assert redo and all(s.init.strategy == "warm" and s.interventions and not s.parent.interventions for s in redo)
    muon = [p.spec for p in planned if p.labels["remedy"] == "muon" and p.labels["protocol"] == "batch"]
    assert muon and all(s.optimizer.name == "muon" and s.parent.optimizer.name == "adam" for s in muon)


def test_muon_trains_its_own_phase_1_when_asked():
    config = paper_config()
    config["experiments"]["leaderboard"]["optimizer_phases"] = [1, 2]
    plan = plan_experiments(config, only=["leaderboard"])
    muon = [p.spec for p in plan.experiments["leaderboard"]
            if p.labels["remedy"] == "muon" and p.labels["protocol"] == "batch" and p.labels["phase"] == 2]
    assert muon and all(s.parent.optimizer.name == "muon" for s in muon)


def test_an_online_protocol_needs_its_section():
    from test_leaderboard_workflow import tiny_remedies

    config = tiny_remedies(["online"])
    del config["experiments"]["board"]["online"]
    with pytest.raises(ConfigError, match=r"protocols: 'online' needs an 'online:' section"):
        plan_experiments(config)


def test_a_model_may_have_its_own_grid_for_a_remedy_as_the_comparison_sets_per_architecture():
    config = paper_config()
    board = config["experiments"]["leaderboard"]
    board["per_model"] = {"vit": {"parseval": {"coef": [1.0e-5]}}}
    planned = plan_experiments(config, only=["leaderboard"]).experiments["leaderboard"]
    coefs: dict[tuple[str, str], set[float]] = {}
    for p in planned:
        if p.labels["remedy"] == "parseval":
            terms = p.spec.round.terms if p.labels["protocol"] == "online" else p.spec.terms
            coefs.setdefault((p.labels["model"], p.labels["protocol"]), set()).update(t.options["coef"] for t in terms)
    for protocol in ("batch", "online"):
        assert coefs["vit", protocol] == {1.0e-5}
        assert coefs["resnet18", protocol] == coefs["vgg16", protocol] != {1.0e-5}
    # every other arm is planned alike on every model
    arms = {m: {p.labels["setting"] for p in planned if p.labels["model"] == m and p.labels["remedy"] != "parseval"}
            for m in ("resnet18", "vgg16", "vit")}
    assert arms["vit"] == arms["resnet18"] == arms["vgg16"]


@pytest.mark.parametrize("per_model, key", [
    ({"mlp": {"parseval": {"coef": [1.0e-5]}}}, r"per_model\.mlp: not one of the experiment's models"),
    ({"vit": {"nonsense": {}}}, r"per_model\.vit\.nonsense: not one of the experiment's remedies"),
    ({"vit": {"parseval": {"cof": [1.0e-5]}}}, r"per_model\.vit"),
])
def test_a_per_model_grid_names_the_experiments_models_remedies_and_options(per_model, key):
    config = paper_config()
    config["experiments"]["leaderboard"]["per_model"] = per_model
    with pytest.raises(ConfigError, match=key):
        plan_experiments(config, only=["leaderboard"])
