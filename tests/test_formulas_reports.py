"""The statistics the reports print, on hand-made rows whose answers are worked out by hand: Table 1's
and Tables 2-5's means, sample stds and converged counts, Figure 1's warm curve, the transfer cross-over,
the Pareto front, Figure 7's damage, and the leaderboard's paired differences and their t intervals, gap
closed (only where there is a gap), the choice on validation and report on test, arms not exercised,
compute and converged counts.
Fast (no training): `make mutate` runs these."""
from __future__ import annotations

import math
import re

import pandas as pd
import pytest

from warmstart.reports.leaderboard import leaderboard_table
from warmstart.reports.stats import paired_interval
from warmstart.reports import (accuracy_cell, baselines, batch_table, batch_table_wide, checkpoint_damage,
                               condition_table, crossover_fraction, gap_closed, init_curves, init_order, init_table,
                               leaderboard, leaderboard_chart, pareto_front, write_leaderboard)


def row(**fields):
    base = dict(dataset="d", model="mlp", optimizer="adam", phase=2, seed=0, init="warm", baseline=False,
                val_acc=0.5, train_time_s=1.0, init_time_s=0.0, epochs=4, converged=True)
    return {**base, **fields}


# -- order, cells ----------------------------------------------------------------------------------------

def test_inits_are_ordered_as_they_first_appear_in_phase_2_with_the_baselines_first():
    frame = pd.DataFrame([row(phase=1, init="phase1 only", baseline=True), row(init="warm"),
                          row(init="sp"), row(init="random", baseline=True), row(init="warm", seed=1),
                          row(init="fresh", baseline=True)])
    assert init_order(frame) == ["random", "fresh", "warm", "sp"]
    assert baselines(frame) == ["random", "fresh"]
    rounds = frame.drop(columns="phase")  # a rounds table has no phase: every row counts
    assert init_order(rounds) == ["phase1 only", "random", "fresh", "warm", "sp"]
    assert baselines(rounds) == ["phase1 only", "random", "fresh"]


def test_a_cell_is_mean_and_std_to_one_decimal_and_names_the_runs_that_did_not_converge():
    assert accuracy_cell(60.04, 10.06, 3, 3) == "60.0 (10.1)"
    assert accuracy_cell(60.04, float("nan"), 1, 1) == "60.0"  # one seed: no std
    assert accuracy_cell(60.0, 10.0, 2, 3) == "60.0 (10.0) [2 of 3 converged]"
    assert accuracy_cell(60.0, float("nan"), 0, 1) == "60.0 [0 of 1 converged]"


# -- Table 1 ---------------------------------------------------------------------------------------------------

def table1_rows():
    rows = [row(phase=1, dataset="b", model="resnet", optimizer="sgd", init="random", baseline=True, val_acc=0.1)]
    for dataset in ("b", "a"):  # the config's order, not the alphabet's
        for (model, optimizer) in (("resnet", "sgd"), ("mlp", "adam")):
            for seed, acc in enumerate((0.50, 0.60, 0.70)):
                rows.append(row(dataset=dataset, model=model, optimizer=optimizer, seed=seed, val_acc=acc,
                                train_time_s=10.0 * (seed + 1), epochs=seed + 2, converged=seed != 2))
            rows.append(row(dataset=dataset, model=model, optimizer=optimizer, init="random", baseline=True,
                            val_acc=0.64, train_time_s=3.0, epochs=9))
    return pd.DataFrame(rows)


def test_table1_is_the_mean_and_sample_std_in_percent_with_converged_counts_per_condition_and_init():
    table = batch_table(table1_rows())
    assert len(table) == 8
    assert list(zip(table["dataset"], table["model"], table["init"]))[:4] == [
        ("b", "resnet", "random"), ("b", "resnet", "warm"), ("b", "mlp", "random"), ("b", "mlp", "warm")]
    warm = table[(table["dataset"] == "a") & (table["model"] == "mlp") & (table["init"] == "warm")].iloc[0]
    assert warm["val_acc_mean"] == pytest.approx(60.0)
    assert warm["val_acc_std"] == pytest.approx(10.0)  # ddof=1: sqrt((100 + 0 + 100) / 2); ddof=0 gives 8.16
    assert warm["train_time_s_mean"] == pytest.approx(20.0) and warm["epochs_mean"] == pytest.approx(3.0)
    assert (warm["converged"], warm["runs"], warm["seeds"]) == (2, 3, 3)
    random = table[(table["dataset"] == "a") & (table["model"] == "mlp") & (table["init"] == "random")].iloc[0]
    assert random["val_acc_mean"] == pytest.approx(64.0) and math.isnan(random["val_acc_std"])  # one seed
    assert (random["converged"], random["runs"], random["seeds"]) == (1, 1, 1)


def test_table1_counts_seeds_apart_from_runs():
    rows = pd.DataFrame([row(seed=0), row(seed=0, val_acc=0.7), row(seed=1, converged=False),
                         row(init="random", baseline=True)])
    warm = batch_table(rows).set_index("init").loc["warm"]
    assert (warm["runs"], warm["seeds"], warm["converged"]) == (3, 2, 2)


def test_table1_in_the_papers_layout():
    wide = batch_table_wide(batch_table(table1_rows()))
    assert list(wide.columns) == ["dataset", "row", "resnet sgd", "mlp adam"]
    assert list(wide["dataset"]) == ["b", "b", "b", "a", "a", "a"]  # the config's order
    assert list(wide["row"][:3]) == ["random val. acc. %", "warm val. acc. %", "phase-2 train s (random / warm)"]
    a = wide[wide["dataset"] == "a"].set_index("row")
    assert a.loc["warm val. acc. %", "mlp adam"] == "60.0 (10.0) [2 of 3 converged]"
    assert a.loc["random val. acc. %", "resnet sgd"] == "64.0"
    assert a.loc["phase-2 train s (random / warm)", "mlp adam"] == "3.0 / 20.0"


# -- Figure 1 ----------------------------------------------------------------------------------------------------

def test_the_warm_curve_continues_after_each_seeds_own_phase1_epochs():
    rows = []
    for seed, phase1_epochs in ((0, 3), (1, 2)):
        for epoch in range(1, phase1_epochs + 1):
            rows.append(dict(phase=1, init="random", baseline=True, seed=seed, epoch=epoch, val_acc=0.1 * epoch,
                             parent_run_id=None))
        for epoch in (1, 2):
            rows.append(dict(phase=2, init="warm", baseline=False, seed=seed, epoch=epoch, val_acc=0.5 + seed,
                             parent_run_id=f"p{seed}"))
            rows.append(dict(phase=2, init="random", baseline=True, seed=seed, epoch=epoch, val_acc=0.2,
                             parent_run_id=None))
    curves = init_curves(pd.DataFrame(rows))
    assert list(curves) == ["random", "warm"]
    warm = curves["warm"]
    assert sorted(warm.loc[(warm["phase"] == 2) & (warm["seed"] == 0), "epoch"]) == [4, 5]
    assert sorted(warm.loc[(warm["phase"] == 2) & (warm["seed"] == 1), "epoch"]) == [3, 4]
    assert len(warm[warm["phase"] == 1]) == 5  # its curve shows the phase-1 epochs first
    random = curves["random"]
    assert set(random["phase"]) == {2} and sorted(random["epoch"]) == [1, 1, 2, 2]


# -- Figure 3 ----------------------------------------------------------------------------------------------------

def transfer_rows(points):
    rows = [dict(phase=1, fraction=1.0, init="random", baseline=True, val_acc=0.99, seed=0)]
    for fraction, warm, random in points:
        for seed, jitter in enumerate((-0.01, 0.01)):  # means over seeds
            rows.append(dict(phase=2, fraction=fraction, init="transfer", baseline=False, val_acc=warm + jitter,
                             seed=seed))
            rows.append(dict(phase=2, fraction=fraction, init="random", baseline=True, val_acc=random - jitter,
                             seed=seed))
    return pd.DataFrame(rows)


def test_the_crossover_is_interpolated_in_log_fraction_from_the_last_fraction_still_ahead():
    # the gap goes +0.03 -> -0.01 between 0.1 and 1.0: three quarters of the way in log space
    summary = transfer_rows([(0.01, 0.30, 0.20), (0.1, 0.53, 0.50), (1.0, 0.61, 0.62)])
    assert crossover_fraction(summary, "transfer", "random") == pytest.approx(10 ** -0.25)
    assert crossover_fraction(summary, "random", "transfer") is None  # never crosses in that direction
    assert crossover_fraction(summary, "transfer", "missing") is None
    assert crossover_fraction(summary, "missing", "random") is None


def test_the_crossover_is_the_first_one_and_a_tie_counts_as_still_ahead():
    summary = transfer_rows([(0.01, 0.30, 0.20), (0.02, 0.30, 0.30), (0.04, 0.25, 0.30), (0.08, 0.40, 0.30),
                             (0.16, 0.20, 0.30)])
    # ahead, tied (gap 0), behind: it crosses right at the tie, 0.02, not at the later crossing
    assert crossover_fraction(summary, "transfer", "random") == pytest.approx(0.02)


# -- the Pareto front ------------------------------------------------------------------------------------------

def test_the_pareto_front_keeps_for_each_cost_the_best_accuracy_at_that_cost_or_less():
    rows = pd.DataFrame({"cost": [2, 1, 1, 3, 4, 4, 5], "acc": [0.6, 0.5, 0.55, 0.6, 0.7, 0.65, 0.7]})
    front = pareto_front(rows, "cost", "acc")
    # cost 1: the better of two; 2 beats it; 3 only ties 2 (not better); 4 the better of two; 5 ties 4
    assert list(zip(front["cost"], front["acc"])) == [(1, 0.55), (2, 0.6), (4, 0.7)]
    assert list(front.index) == [2, 0, 4]  # the rows themselves


# -- Figure 7 ----------------------------------------------------------------------------------------------------

def test_checkpoint_damage_is_the_percent_difference_of_final_accuracy_from_the_same_seeds_first_baseline():
    rows = []
    for seed, base in ((0, 0.5), (1, 0.8)):
        for epoch, acc in ((9, base), (3, 0.01)):  # unsorted epochs: the last epoch is the final model
            rows.append(dict(run_id=f"r{seed}", phase=2, init="random", baseline=True, seed=seed, epoch=epoch,
                             val_acc=acc, checkpoint_epoch=None))
        rows.append(dict(run_id=f"o{seed}", phase=2, init="other", baseline=True, seed=seed, epoch=9, val_acc=0.9,
                         checkpoint_epoch=None))
        rows.append(dict(run_id=f"p{seed}", phase=1, init="random", baseline=True, seed=seed, epoch=9, val_acc=0.3,
                         checkpoint_epoch=None))
        for e, factor in ((5, (0.9, 0.8)), (10, (0.7, 0.7))):
            for epoch, acc in ((9, base * factor[seed]), (2, 0.02)):
                rows.append(dict(run_id=f"w{seed}{e}", phase=2, init="warm", baseline=False, seed=seed, epoch=epoch,
                                 val_acc=acc, checkpoint_epoch=e))
    damage = checkpoint_damage(pd.DataFrame(rows)).set_index("checkpoint_epoch")
    assert damage.loc[5, "mean"] == pytest.approx(-15) and damage.loc[5, "std"] == pytest.approx(math.sqrt(50))
    assert damage.loc[10, "mean"] == pytest.approx(-30) and damage.loc[10, "std"] == pytest.approx(0, abs=1e-9)
    assert set(damage["init"]) == {"warm"} and set(damage["baseline"]) == {"random"}


# -- Tables 2-5 ----------------------------------------------------------------------------------------------------

def condition_rows():
    rows = []
    for cond in ("l2 coef=0.1", "l2 coef=0.01"):
        for init, baseline, accs, conv in (("warm", False, [0.5, 0.7, 0.6], [True, False, True]),
                                           ("random", True, [0.6, 0.6, 0.9], [True, True, True])):
            for seed, (acc, c) in enumerate(zip(accs, conv)):
                rows.append(row(model="m", optimizer="o", condition=cond, init=init, baseline=baseline, seed=seed,
                                val_acc=acc, train_time_s=10.0 + seed, init_time_s=2.0, epochs=4 + seed, converged=c))
    rows.append(row(model="m", optimizer="o", condition="l2 coef=0.1", phase=1, init="random", baseline=True,
                    val_acc=0.0, converged=False))
    return pd.DataFrame(rows)


def test_the_condition_tables_cells_are_mean_sample_std_and_converged_counts():
    table, wide = condition_table(condition_rows())
    warm = table[(table["condition"] == "l2 coef=0.1") & (table["init"] == "warm")].iloc[0]
    assert warm["val_acc_mean"] == pytest.approx(60.0) and warm["val_acc_std"] == pytest.approx(10.0)
    assert (warm["converged"], warm["runs"]) == (2, 3) and warm["train_time_s_mean"] == pytest.approx(11.0)
    assert list(wide.columns) == ["dataset", "model", "optimizer", "condition", "random val. acc. %",
                                  "warm val. acc. %"]
    cells = wide.set_index("condition")
    assert cells.loc["l2 coef=0.1", "warm val. acc. %"] == "60.0 (10.0) [2 of 3 converged]"
    assert cells.loc["l2 coef=0.01", "random val. acc. %"] == "70.0 (17.3)"


def test_the_init_table_gives_accuracy_and_time_to_the_threshold_including_the_inits_own_time():
    long, wide = init_table(condition_rows().drop(columns="condition"))
    assert list(long["init"]) == ["random", "warm"]  # one condition: the baselines first
    warm = long.set_index("init").loc["warm"]
    assert warm["val_acc_mean"] == pytest.approx(60.0)
    assert warm["time_s_mean"] == pytest.approx(13.0)  # mean of 10, 11, 12 plus 2 s of init, per run
    assert (warm["converged"], warm["runs"]) == (4, 6)
    assert warm["val. acc. %"] == "60.0 (8.9) [4 of 6 converged]"  # six runs: both l2 settings' rows
    assert warm["time to threshold (s)"] == "13.0 [4 of 6 converged]" and warm["epochs"] == "5.0"
    random = long.set_index("init").loc["random"]
    assert random["time to threshold (s)"] == "13.0" and random["val. acc. %"] == "70.0 (15.5)"
    assert list(wide.columns) == ["dataset", "model", "optimizer", "init", "val. acc. %", "time to threshold (s)",
                                  "epochs"]


def test_the_init_table_with_one_run_has_no_std_and_one_row_per_condition():
    rows = pd.DataFrame([row(init="random", baseline=True, val_acc=0.5), row(val_acc=0.25, converged=False),
                         row(model="other", val_acc=0.75)])
    long, _ = init_table(rows)
    assert list(zip(long["model"], long["init"])) == [("mlp", "random"), ("mlp", "warm"), ("other", "warm")]
    assert list(long["val. acc. %"]) == ["50.0", "25.0 [0 of 1 converged]", "75.0"]


# -- the leaderboard ------------------------------------------------------------------------------------------------

T_975_2 = 4.302653  # Student's t, 97.5% quantile, 2 degrees of freedom (tables): the 95% interval of 3 seeds


def test_gap_closed_is_the_share_of_the_warm_starts_gap_to_random_init_that_a_remedy_closes():
    assert gap_closed(0.5, 0.5, 0.6) == 0 and gap_closed(0.6, 0.5, 0.6) == 1
    assert gap_closed(0.575, 0.5, 0.6) == pytest.approx(0.75) and gap_closed(0.45, 0.5, 0.6) == pytest.approx(-0.5)
    # over seeds: a ratio of means, not a mean of per-seed ratios ((0.5 + 0.333) / 2)
    assert gap_closed([0.55, 0.60], [0.50, 0.50], [0.60, 0.80]) == pytest.approx(0.15 / 0.40)  # not 0.4167


def test_the_paired_interval_is_students_t_with_n_minus_1_degrees_of_freedom():
    ci = paired_interval([0.05, 0.07, 0.06])
    assert ci["mean"] == pytest.approx(0.06) and ci["std"] == pytest.approx(0.01) and ci["n"] == 3
    assert ci["high"] - ci["mean"] == pytest.approx(T_975_2 * 0.01 / math.sqrt(3), rel=1e-5)
    assert ci["mean"] - ci["low"] == pytest.approx(T_975_2 * 0.01 / math.sqrt(3), rel=1e-5)
    one = paired_interval([0.05])  # one seed: a mean, no interval
    assert one["mean"] == 0.05 and math.isnan(one["low"]) and math.isnan(one["high"]) and one["n"] == 1


# (validation, test) accuracy per seed; the sp setting the validation set prefers (0.4) is not the one the
# test set would (0.8); redo is an intervention that reset no unit; keep ran alone (not stacked)
BOARD = {("target", "random", "random"): ([0.60, 0.70, 0.65], [0.62, 0.69, 0.66]),
         ("baseline", "warm", "warm"): ([0.50, 0.52, 0.51], [0.50, 0.53, 0.50]),
         ("remedy", "sp", "sp 0.4"): ([0.58, 0.66, 0.62], [0.55, 0.60, 0.56]),
         ("remedy", "sp", "sp 0.8"): ([0.55, 0.60, 0.59], [0.60, 0.68, 0.64]),
         ("remedy", "redo", "redo"): ([0.51, 0.53, 0.52], [0.52, 0.55, 0.52]),
         ("remedy", "keep", "keep"): ([0.52, 0.53, 0.52], [0.51, 0.54, 0.51])}
SAMPLES = {"random": 1000, "warm": 400, "sp 0.4": 400, "sp 0.8": 400, "redo": 400, "keep": 400}
TIME = {"random": 10.0, "warm": 4.0, "sp 0.4": 4.0, "sp 0.8": 3.0, "redo": 5.0, "keep": 9.0}


def board_rows(board=BOARD, test=True):
    """Batch: target, baseline and remedies at three seeds, plus a phase-1 row that must not count; online:
    one stream per setting and seed, rounds out of order, the intervention's units reset per round."""
    summary, rounds = [], []
    for (role, remedy, setting), (val, tst) in board.items():
        for seed, (v, t) in enumerate(zip(val, tst)):
            summary.append(dict(dataset="d", model="m", optimizer="o", phase=2, seed=seed, role=role, remedy=remedy,
                                setting=setting, val_acc=v, test_acc=t if test else float("nan"),
                                train_time_s=TIME[setting], init_time_s=1.0 if remedy == "sp" else 0.0,
                                samples_seen=SAMPLES[setting], init_samples=50 if remedy == "sp" else 0,
                                stacked_seeds=1 if remedy == "keep" else 3, units_reset=0,
                                interventions="redo" if remedy == "redo" else "",
                                converged=not (setting == "sp 0.4" and seed)))
            for r in (2, 1):
                rounds.append(dict(dataset="d", model="m", optimizer="o", stream_id=f"{setting}/{seed}", round=r,
                                   seed=seed, role=role, remedy=remedy, setting=setting,
                                   val_acc=v if r == 2 else 0.0, test_acc=(t if test else float("nan")) if r == 2 else 0.0,
                                   cumulative_train_time_s=TIME[setting] * r, cumulative_samples=SAMPLES[setting] * r,
                                   units_reset=r if remedy == "redo" else 0,
                                   interventions="redo" if remedy == "redo" else "", converged=True))
    summary.append(dict(summary[0], phase=1, val_acc=0.99, test_acc=0.99, train_time_s=99.0))
    return pd.DataFrame(summary), pd.DataFrame(rounds)


def test_the_leaderboard_pairs_each_arm_with_the_same_seeds_warm_and_random_runs_on_the_test_split():
    settings, best = leaderboard(board_rows()[0])
    s = settings.set_index("setting")
    assert list(s.index) == ["random", "warm", "sp 0.4", "sp 0.8", "redo", "keep"]
    sp = s.loc["sp 0.4"]
    assert (sp["protocol"], sp["remedy"], sp["role"], sp["report_split"]) == ("batch", "sp", "remedy", "test")
    assert sp["val_acc_mean"] == pytest.approx(0.62) and sp["test_acc_mean"] == pytest.approx(0.57)
    assert sp["test_acc_std"] == pytest.approx(math.sqrt((0.0004 + 0.0009 + 0.0001) / 2))  # ddof=1
    # test accuracy minus warm, per seed: 0.05, 0.07, 0.06 -> mean 0.06, std 0.01, t(0.975, 2) interval
    half = T_975_2 * 0.01 / math.sqrt(3)
    assert sp["test_vs_warm_mean"] == pytest.approx(0.06)
    assert (sp["test_vs_warm_low"], sp["test_vs_warm_high"]) == (pytest.approx(0.06 - half, rel=1e-5),
                                                                 pytest.approx(0.06 + half, rel=1e-5))
    # minus random: -0.07, -0.09, -0.10 -> mean -0.08667, std 0.01528
    d = [-0.07, -0.09, -0.10]
    sd = math.sqrt(sum((x + 0.26 / 3) ** 2 for x in d) / 2)
    assert sp["test_vs_random_mean"] == pytest.approx(-0.26 / 3)
    assert sp["test_vs_random_high"] == pytest.approx(-0.26 / 3 + T_975_2 * sd / math.sqrt(3), rel=1e-5)
    # the gap, random - warm: 0.12, 0.16, 0.16 (interval excludes 0: a gap); gap closed = 0.06 / mean gap
    gap_sd = math.sqrt(((0.12 - 0.44 / 3) ** 2 + 2 * (0.16 - 0.44 / 3) ** 2) / 2)
    assert sp["test_gap_mean"] == pytest.approx(0.44 / 3)
    assert sp["test_gap_low"] == pytest.approx(0.44 / 3 - T_975_2 * gap_sd / math.sqrt(3), rel=1e-5)
    assert bool(sp["gap_exists"]) and sp["gap_closed"] == pytest.approx(0.06 / (0.44 / 3))
    assert s.loc["random", "gap_closed"] == pytest.approx(1.0) and s.loc["warm", "gap_closed"] == 0
    assert sp["seeds"] == 3 and sp["converged"] == 1 and sp["paired_seeds"] == 3  # capped runs do not count


def test_each_arms_setting_is_chosen_on_validation_and_reported_on_test():
    _, best = leaderboard(board_rows()[0])
    sp = best.set_index("remedy").loc["sp"]
    # validation prefers 0.4 (62% vs 58%); the test set would prefer 0.8 (64% vs 57%): 0.4 it is
    assert sp["setting"] == "sp 0.4" and sp["grid_size"] == 2
    assert sp["test_acc_mean"] == pytest.approx(0.57) and sp["val_acc_mean"] == pytest.approx(0.62)
    assert best.set_index("remedy").loc["redo", "grid_size"] == 1


def test_an_intervention_that_reset_no_unit_is_not_exercised_and_gets_no_gap_closed():
    summary, rounds = board_rows()
    _, best = leaderboard(summary, rounds)
    batch = best[best["protocol"] == "batch"].set_index("remedy")
    assert batch.loc["redo", "status"] == "not exercised" and math.isnan(batch.loc["redo", "gap_closed"])
    assert batch.loc["redo", "units_reset_mean"] == 0 and math.isnan(batch.loc["sp", "units_reset_mean"])
    assert list(best[best["protocol"] == "batch"]["remedy"])[-1] == "redo"  # after every arm that acted
    table = leaderboard_table(best).set_index(["protocol", "arm"])
    assert table.loc[("batch", "redo"), "test acc. - warm (points, 95% CI)"] == "not exercised"
    assert table.loc[("batch", "redo"), "gap closed (test)"] == "not exercised"
    assert table.loc[("batch", "redo"), "units reset / run"] == "0.0" and table.loc[("batch", "sp"), "units reset / run"] == "-"
    # online: a stream's units are its rounds' (1 + 2): exercised
    online = best[best["protocol"] == "online"].set_index("remedy")
    assert online.loc["redo", "status"] == "" and online.loc["redo", "units_reset_mean"] == 3
    # units not recorded (an older stream): unknown, never "not exercised"
    rounds.loc[(rounds["remedy"] == "redo") & (rounds["round"] == 1), "units_reset"] = float("nan")
    rounds.loc[rounds["remedy"] == "redo", "units_reset"] = rounds.loc[rounds["remedy"] == "redo", "units_reset"] * 0
    online = leaderboard(None, rounds)[1].set_index("remedy")
    assert online.loc["redo", "status"] == "" and math.isnan(online.loc["redo", "units_reset_mean"])


def test_compute_is_samples_relative_to_random_init_and_time_only_where_stacked_alike():
    _, best = leaderboard(board_rows()[0])
    b = best.set_index("remedy")
    assert b.loc["sp", "samples_rel"] == pytest.approx((400 + 50) / 1000)  # training plus the init's samples
    assert b.loc["sp", "time_rel"] == pytest.approx((4.0 + 1.0) / 10.0)  # training plus init time
    # keep ran alone while random init ran in stacks of 3: its per-run time is not comparable
    assert math.isnan(b.loc["keep", "time_rel"]) and not b.loc["keep", "time_comparable"]
    assert b.loc["keep", "samples_rel"] == pytest.approx(0.4)
    table = leaderboard_table(best).set_index("arm")
    assert table.loc["keep", "time vs random"].startswith("n/a") and table.loc["keep", "samples vs random"] == "0.40x"


def test_the_leaderboard_chart_plots_accuracy_minus_warm_against_samples_then_time(monkeypatch, tmp_path):
    from warmstart.reports import style as report_style

    drawn = []
    monkeypatch.setattr(report_style, "FIGURE_HOOKS", [lambda fig, path: drawn.append(fig)])
    _, best = leaderboard(board_rows()[0])
    leaderboard_chart(best, tmp_path / "l.pdf", "t")
    samples, time = [ax for ax in drawn[0].axes if ax.axison]
    assert samples.get_xlabel().startswith("compute: samples") and time.get_xlabel().startswith("compute: time")
    assert samples.get_ylabel() == "test acc. minus warm start (points)"
    at = {t.get_text(): t.xy for t in samples.texts if hasattr(t, "xy")}
    b = best.set_index("remedy")
    for arm in ("random", "warm", "sp", "keep"):
        assert at[arm] == (pytest.approx(b.loc[arm, "samples_rel"]), pytest.approx(100 * b.loc[arm, "test_vs_warm_mean"]))
    assert "redo (not exercised)" in at
    shown = {t.get_text() for t in time.texts if hasattr(t, "xy")}
    assert "keep" not in shown and "sp" in shown  # not comparable in time: left out, and said so
    assert any("left out: keep" in t.get_text() for t in time.texts)


def test_without_a_gap_there_is_no_gap_closed_and_no_full_recovery(tmp_path):
    """warm = random on every seed: no gap to close, in the table, the chart and the advice."""
    board = {("target", "random", "random"): ([0.60, 0.62, 0.61], [0.60, 0.62, 0.61]),
             ("baseline", "warm", "warm"): ([0.60, 0.62, 0.61], [0.60, 0.62, 0.61]),
             ("remedy", "sp", "sp 0.4"): ([0.62, 0.63, 0.62], [0.61, 0.63, 0.62])}
    summary, rounds = board_rows(board)
    _, best = leaderboard(summary, rounds)
    assert not best["gap_exists"].any() and best["gap_closed"].isna().all()
    table = leaderboard_table(best)
    assert set(table["gap closed (test)"]) == {"no gap to close"}
    write_leaderboard(summary, rounds, tmp_path / "b.csv", tmp_path / "b.md", tmp_path / "b.pdf", title="b")
    text = (tmp_path / "b.md").read_text()
    assert "no gap to close (not distinguishable from zero)" in text and "full recovery" not in text
    assert not re.search(r"\| -?\d+\.\d\d \| -", text)  # no gap-closed cell holds a number
    # a gap that is there on average but not distinguishable from zero: still none
    board[("target", "random", "random")] = ([0.60, 0.62, 0.61], [0.64, 0.60, 0.63])
    _, best = leaderboard(board_rows(board)[0])
    assert best["test_gap_mean"].iloc[0] > 0 and not best["gap_exists"].any() and best["gap_closed"].isna().all()


def test_without_test_accuracy_the_leaderboard_reports_validation_and_says_so(tmp_path):
    summary, _ = board_rows(test=False)
    settings, best = leaderboard(summary)
    assert set(best["report_split"]) == {"val"} and "test_acc_mean" not in best.columns
    assert best.set_index("remedy").loc["sp", "val_vs_warm_mean"] == pytest.approx(0.62 - 0.51)
    write_leaderboard(summary, None, tmp_path / "b.csv", tmp_path / "b.md", tmp_path / "b.pdf", title="b")
    text = (tmp_path / "b.md").read_text()
    assert "Reported on validation accuracy, the same data each arm's setting was chosen on" in text
    assert "| val. acc. - warm (points, 95% CI) |" in text and "test acc." not in text
    one_seed = leaderboard(summary[summary["seed"] == 0])[1]
    assert leaderboard_table(one_seed).set_index("arm").loc["sp", "val. acc. - warm (points, 95% CI)"] == \
        "+8.0 (1 seed: no interval)"  # seed 0: 0.58 - 0.50


def test_the_leaderboards_markdown_names_the_split_of_every_number(tmp_path):
    summary, rounds = board_rows()
    write_leaderboard(summary, rounds, tmp_path / "b.csv", tmp_path / "b.md", tmp_path / "b.pdf", title="b")
    text = (tmp_path / "b.md").read_text()
    for column in ("| val. acc. % (selection) |", "| test acc. % |", "| test acc. - warm (points, 95% CI) |",
                   "| test acc. - random (points, 95% CI) |", "| gap closed (test) |", "| settings tried |",
                   "| units reset / run |", "| samples vs random |", "| time vs random |"):
        assert column in text
    assert "chosen on validation accuracy" in text and "reported on the test split" in text
    assert "batch, d / m / o: random - warm = +14.7 [" in text
    csv = pd.read_csv(tmp_path / "b.csv")
    assert {"val_acc_mean", "test_acc_mean", "test_vs_warm_low", "test_vs_random_high", "gap_closed",
            "grid_size", "units_reset_mean", "samples_rel", "time_rel"} <= set(csv.columns)


def test_online_the_leaderboard_reads_each_streams_last_round_and_its_cumulative_cost():
    summary, rounds = board_rows()
    settings, _ = leaderboard(summary, rounds)
    online = settings[settings["protocol"] == "online"].set_index("setting")
    sp = online.loc["sp 0.4"]
    assert sp["test_acc_mean"] == pytest.approx(0.57) and sp["val_acc_mean"] == pytest.approx(0.62)  # round 2's
    assert sp["time_rel"] == pytest.approx(8.0 / 20.0) and sp["time_s"] == pytest.approx(8.0)
    assert sp["samples_rel"] == pytest.approx(0.4) and sp["converged"] == 3
    assert online.loc["keep", "time_rel"] == pytest.approx(18.0 / 20.0)  # streams run alone: comparable


# -- the layouts: row order, one or two seeds, cells that are absent ---------------------------------------

def test_table1_has_its_columns_and_a_std_from_two_seeds_on():
    rows = pd.DataFrame([row(seed=0, val_acc=0.5), row(seed=1, val_acc=0.7), row(init="random", baseline=True)])
    table = batch_table(rows)
    assert list(table.columns) == ["dataset", "model", "optimizer", "init", "val_acc_mean", "val_acc_std",
                                   "train_time_s_mean", "epochs_mean", "converged", "runs", "seeds"]
    assert table.set_index("init").loc["warm", "val_acc_std"] == pytest.approx(100 * 0.2 / math.sqrt(2))
    assert math.isnan(table.set_index("init").loc["random", "val_acc_std"])


def test_table1s_layout_with_uneven_conditions():
    """Dataset a: a 2 x 2 grid of models and optimisers, no sp runs; dataset b: one column and sp too;
    dataset c: phase 1 only (a source data set). Absent cells are empty; every time cell is its own column's."""
    rows = [row(dataset="c", phase=1, init="random", baseline=True)]
    for model in ("mlp", "cnn"):
        for optimizer, time in (("adam", 1.0), ("sgd", 2.0)):
            for init, baseline in (("random", True), ("warm", False)):
                rows.append(row(dataset="a", model=model, optimizer=optimizer, init=init, baseline=baseline,
                                train_time_s=time + (model == "cnn") * 10 + (init == "warm") * 100))
    for init, baseline in (("random", True), ("warm", False), ("sp", False)):
        rows.append(row(dataset="b", init=init, baseline=baseline, train_time_s=5.0))
    wide = batch_table_wide(batch_table(pd.DataFrame(rows)))
    assert list(wide["dataset"]) == ["a", "a", "a", "b", "b", "b", "b"]  # nothing for c
    assert list(wide.columns) == ["dataset", "row", "mlp adam", "mlp sgd", "cnn adam", "cnn sgd"]
    a = wide[wide["dataset"] == "a"].set_index("row")
    assert list(a.index) == ["random val. acc. %", "warm val. acc. %", "phase-2 train s (random / warm)"]
    assert list(a.loc["phase-2 train s (random / warm)"]) == ["a", "1.0 / 101.0", "2.0 / 102.0", "11.0 / 111.0",
                                                              "12.0 / 112.0"]
    b = wide[wide["dataset"] == "b"].set_index("row")
    assert b.loc["sp val. acc. %", "mlp adam"] == "50.0" and b.loc["sp val. acc. %", "cnn sgd"] == ""
    assert b.loc["phase-2 train s (random / warm / sp)", "mlp adam"] == "5.0 / 5.0 / 5.0"


def test_a_warm_curve_of_a_seed_without_phase1_epochs_starts_at_one():
    rows = [dict(phase=1, init="random", baseline=True, seed=0, epoch=e, val_acc=0.1, parent_run_id=None)
            for e in (1, 2)]
    rows += [dict(phase=2, init="warm", baseline=False, seed=s, epoch=e, val_acc=0.5, parent_run_id="p")
             for s in (0, 1) for e in (1, 2)]
    warm = init_curves(pd.DataFrame(rows))["warm"]
    phase2 = warm[warm["phase"] == 2]
    assert sorted(phase2.loc[phase2["seed"] == 0, "epoch"]) == [3, 4]
    assert sorted(phase2.loc[phase2["seed"] == 1, "epoch"]) == [1, 2]
    assert warm["epoch"].dtype.kind == "i"  # epochs stay whole numbers


def test_curves_that_touch_without_crossing_have_no_crossover():
    summary = transfer_rows([(0.01, 0.30, 0.20), (0.1, 0.50, 0.50), (1.0, 0.62, 0.60)])
    assert crossover_fraction(summary, "transfer", "random") is None


def test_the_condition_table_keeps_the_configs_order_and_gives_no_std_for_one_seed():
    rows = pd.DataFrame([row(condition="z", init="warm", seed=0, val_acc=0.5),
                         row(condition="z", init="warm", seed=1, val_acc=0.7),
                         row(condition="a", init="random", baseline=True, val_acc=0.6, converged=False),
                         row(condition="z", init="random", baseline=True, val_acc=0.6)])
    table, wide = condition_table(rows)
    assert list(zip(table["condition"], table["init"])) == [("z", "warm"), ("a", "random"), ("z", "random")]
    assert table["val_acc_std"].iloc[0] == pytest.approx(100 * 0.2 / math.sqrt(2))
    assert math.isnan(table["val_acc_std"].iloc[1])
    cells = wide.set_index("condition")
    assert cells.loc["a", "random val. acc. %"] == "60.0 [0 of 1 converged]"
    assert cells.loc["z", "warm val. acc. %"] == "60.0 (14.1)"


def test_the_init_table_keeps_the_configs_order_of_conditions_and_takes_a_std_from_two_runs():
    rows = pd.DataFrame([row(model="z", val_acc=0.5), row(model="z", seed=1, val_acc=0.7),
                         row(model="a", val_acc=0.6)])
    long, _ = init_table(rows)
    assert list(long["model"]) == ["z", "a"]
    assert list(long["val. acc. %"]) == ["60.0 (14.1)", "60.0"]


def test_the_leaderboards_rows_keep_the_configs_order_and_its_columns():
    summary, _ = board_rows()
    # another condition first, listed before d; in it two remedies close the gap alike (a tie) and one
    # remedy has a single seed
    extra = []
    for role, remedy, acc in (("target", "random", 0.8), ("baseline", "warm", 0.6), ("remedy", "zz", 0.7),
                              ("remedy", "aa", 0.7)):
        for seed in ((0,) if remedy == "zz" else (0, 1)):
            extra.append(dict(summary.iloc[0], dataset="e", seed=seed, role=role, remedy=remedy, setting=remedy,
                              val_acc=acc, test_acc=acc + 0.01 * seed, converged=True))
    settings, best = leaderboard(pd.concat([pd.DataFrame(extra), summary], ignore_index=True))
    assert list(settings["dataset"].drop_duplicates()) == ["e", "d"]
    assert list(best["dataset"].drop_duplicates()) == ["e", "d"]  # each condition's arms together
    e = best[best["dataset"] == "e"]
    assert list(e["remedy"]) == ["random", "zz", "aa", "warm"]  # the tie in the config's order
    assert e.set_index("remedy").loc["zz", "role"] == "remedy"
    assert list(best.columns) == [
        "protocol", "dataset", "model", "optimizer", "remedy", "setting", "role", "grid_size", "interventions",
        "status", "report_split", "val_acc_mean", "val_acc_std", "test_acc_mean", "test_acc_std",
        "test_vs_warm_mean", "test_vs_warm_low", "test_vs_warm_high", "test_vs_random_mean", "test_vs_random_low",
        "test_vs_random_high", "test_gap_mean", "test_gap_low", "test_gap_high", "paired_seeds", "gap_exists",
        "gap_closed", "units_reset_mean", "samples_rel", "time_rel", "time_s", "stacked_seeds", "time_comparable",
        "seeds", "converged"]
    assert best["grid_size"].dtype.kind == "i" and list(best.index) == list(range(len(best)))
