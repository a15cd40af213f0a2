"""A leaderboard of one protocol, batch or online, builds end to end through the workflow, with an init,
a loss term, an intervention and an optimiser as remedies."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_workflow import load_test_config, snakemake  # noqa: E402


def tiny_remedies(protocols: list[str]) -> dict:
    """A leaderboard of one protocol on a small MNIST-1D, with an init, a term, an intervention and an
    optimiser as remedies."""
    config = load_test_config("leaderboard")
    config["experiments"]["board"]["protocols"] = protocols
    return config


@pytest.mark.parametrize("protocol", ["batch", "online"])
def test_a_leaderboard_of_one_protocol_builds_from_its_own_table(tmp_path, protocol):
    snakemake(tmp_path, tiny_remedies([protocol]), "figures/board.csv")
    board = pd.read_csv(tmp_path / "figures" / "board.csv")
    assert set(board["protocol"]) == {protocol}
    assert {"full_reset", "warm", "sp", "l2_init", "redo", "muon"} <= set(board["remedy"])
    assert (tmp_path / "figures" / "board.png").exists()
    # chosen on validation, reported on MNIST-1D's test split: every run (every round) recorded its test accuracy
    assert set(board["report_split"]) == {"test"} and board["test_acc_mean"].between(0, 1).all()
    assert {"test_vs_warm_low", "test_vs_random_high", "gap_exists", "grid_size"} <= set(board.columns)
    arms = board.set_index("remedy")
    assert arms.loc["redo", "units_reset_mean"] >= 0 and arms.loc["redo", "interventions"] == "redo"
    assert (arms.loc["redo", "status"] == "not exercised") == (arms.loc["redo", "units_reset_mean"] == 0)
    table = "summary" if protocol == "batch" else "rounds"
    assert pd.read_parquet(tmp_path / "results" / "board" / f"{table}.parquet")["test_acc"].between(0, 1).all()
    other = "rounds" if protocol == "batch" else "summary"
    assert not (tmp_path / "results" / "board" / f"{other}.parquet").exists()


