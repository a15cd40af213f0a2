"""The numbers behind the headline outputs, computed on hand-made rows: Table 1's mean and std, the
transfer cross-over, Figure 1's warm curve, and any number of inits with the baseline first."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from warmstart.reports import (REPORTS, batch_table, batch_table_wide, crossover_fraction, init_curves, init_order,
                               plot_learning_curves, plot_online, plot_transfer, write_table)


def summary_rows(inits=(("warm", False, [0.50, 0.60, 0.70]), ("random", True, [0.62, 0.64, 0.66])),
                 converged=None):
    rows = []
    for init, baseline, accs in inits:
        for seed, acc in enumerate(accs):
            rows.append(dict(dataset="d", model="mlp", optimizer="adam", init=init, baseline=baseline, phase=2,
                             seed=seed, val_acc=acc, train_time_s=10.0 * (seed + 1), epochs=5,
                             converged=True if converged is None else converged(init, seed)))
    for seed in range(3):
        rows.append(dict(dataset="d", model="mlp", optimizer="adam", init="random", baseline=True, phase=1,
                         seed=seed, val_acc=0.4, train_time_s=1.0, epochs=3, converged=True))
    return pd.DataFrame(rows)


def test_table1_cells_are_the_mean_and_sample_std_over_seeds_in_percent():
    table = batch_table(summary_rows())
    warm = table[table["init"] == "warm"].iloc[0]
    assert warm["val_acc_mean"] == pytest.approx(60.0)
    assert warm["val_acc_std"] == pytest.approx(10.0)  # ddof=1: sqrt((100 + 0 + 100) / 2)
    random = table[table["init"] == "random"].iloc[0]
    assert random["val_acc_mean"] == pytest.approx(64.0) and random["val_acc_std"] == pytest.approx(2.0)
    assert warm["train_time_s_mean"] == pytest.approx(20.0)
    wide = batch_table_wide(table)
    assert wide.loc[wide["row"] == "warm val. acc. %", "mlp adam"].item() == "60.0 (10.0)"
    assert wide.loc[wide["row"] == "phase-2 train s (random / warm)", "mlp adam"].item() == "20.0 / 20.0"


def test_the_baseline_comes_first_and_any_number_of_inits_is_shown():
    rows = summary_rows(inits=(("warm", False, [0.5, 0.6]), ("sp", False, [0.55, 0.65]),
                               ("random", True, [0.6, 0.7])))
    assert init_order(rows) == ["random", "warm", "sp"]
    table = batch_table(rows)
    assert list(table["init"]) == ["random", "warm", "sp"]
    wide = batch_table_wide(table)
    assert list(wide["row"]) == ["random val. acc. %", "warm val. acc. %", "sp val. acc. %",
                                 "phase-2 train s (random / warm / sp)"]


def test_a_cell_with_runs_that_hit_the_epoch_cap_says_how_many_converged():
    rows = summary_rows(converged=lambda init, seed: not (init == "warm" and seed == 2))
    wide = batch_table_wide(batch_table(rows))
    assert wide.loc[wide["row"] == "warm val. acc. %", "mlp adam"].item() == "60.0 (10.0) [2 of 3 converged]"
    assert wide.loc[wide["row"] == "random val. acc. %", "mlp adam"].item() == "64.0 (2.0)"


def test_the_transfer_crossover_is_interpolated_in_log_fraction():
    rows = []
    for fraction, warm, random in ((0.01, 0.30, 0.20), (0.1, 0.52, 0.50), (1.0, 0.60, 0.62)):
        for init, acc, baseline in (("transfer", warm, False), ("random", random, True)):
            rows.append(dict(phase=2, fraction=fraction, init=init, baseline=baseline, val_acc=acc))
    summary = pd.DataFrame(rows)
    # the gap goes +0.02 -> -0.02 between 0.1 and 1.0: half way in log space
    assert crossover_fraction(summary, "transfer", "random") == pytest.approx(math.sqrt(0.1))
    # never crossing in that direction: None
    assert crossover_fraction(summary, "random", "transfer") is None
    assert crossover_fraction(summary, "transfer", "missing") is None


def test_figure1_warm_curve_continues_after_the_phase1_epochs_and_the_baseline_starts_at_one():
    rows = []
    for seed in (0, 1):
        for epoch in (1, 2, 3):
            rows.append(dict(phase=1, init="random", baseline=True, seed=seed, epoch=epoch, val_acc=0.1 * epoch,
                             parent_run_id=None))
        for epoch in (1, 2):
            rows.append(dict(phase=2, init="warm", baseline=False, seed=seed, epoch=epoch, val_acc=0.5 + 0.1 * epoch,
                             parent_run_id=f"p{seed}"))
            rows.append(dict(phase=2, init="random", baseline=True, seed=seed, epoch=epoch, val_acc=0.2 * epoch,
                             parent_run_id=None))
    curves = init_curves(pd.DataFrame(rows))
    assert list(curves) == ["random", "warm"]
    warm = curves["warm"].groupby("epoch")["val_acc"].mean()
    assert list(warm.index) == [1, 2, 3, 4, 5]
    assert list(warm.round(6)) == [0.1, 0.2, 0.3, 0.6, 0.7]
    random = curves["random"].groupby("epoch")["val_acc"].mean()
    assert list(random.index) == [1, 2] and list(random.round(6)) == [0.2, 0.4]


def test_every_report_draws_three_inits(tmp_path):
    rows = summary_rows(inits=(("warm", False, [0.5, 0.6]), ("sp", False, [0.55, 0.65]), ("random", True, [0.6, 0.7])))
    write_table(rows, tmp_path / "t.csv", tmp_path / "t.md", tmp_path / "t.pdf", title="t")
    assert pd.read_csv(tmp_path / "t.csv")["init"].tolist() == ["random", "warm", "sp"]
    epochs = rows.assign(epoch=1, train_acc=0.9, parent_run_id=[None if b else "p" for b in rows["baseline"]])
    plot_learning_curves(epochs, tmp_path / "c.pdf")
    rounds = rows[rows["phase"] == 2].drop(columns="phase").assign(policy="random", n_samples=100)
    plot_online(rounds, tmp_path / "o.pdf")
    plot_transfer(rows.assign(fraction=1.0), tmp_path / "f.pdf")
    for name in ("t.pdf", "c.pdf", "o.pdf", "f.pdf"):
        assert (tmp_path / name).read_bytes().startswith(b"%PDF")
    # every registered report reads only tables an experiment writes
    assert {t for name in REPORTS for t in REPORTS[name].tables} <= {"summary", "epochs", "rounds"}


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_every_report_says_what_it_shows_on_the_front_page(name):
    """The front page (figures/<...>/index.html) captions each experiment with its report's first paragraph."""
    from warmstart.reports import first_paragraph

    assert len(first_paragraph(REPORTS[name].draw.__doc__)) > 20
