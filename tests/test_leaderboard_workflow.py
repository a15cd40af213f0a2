"""A leaderboard of one protocol, batch or online, builds end to end through the workflow, with an init,
a loss term, an intervention and an optimiser as remedies."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_workflow import snakemake  # noqa: E402


def tiny_remedies(protocols: list[str]) -> dict:
    """A leaderboard of one protocol on a small MNIST-1D, with an init, a term, an intervention and an
    optimiser as remedies."""
    return {
        "results_dir": "results", "figures_dir": "figures", "stack_seeds": 2, "stacks_per_job": 4,
        "resources": {"train_gpu": 0, "train_threads": 1},
        "datasets": {"mnist1d": {"num_samples": 600, "seed": 3}},
        "models": {"mlp": {"hidden": 16, "activation": "relu"}},
        "optimizers": {"adam": {"lr": 0.01}, "muon": {"name": "muon", "lr": 0.02}},
        "inits": {"full_reset": {"strategy": "random"}, "warm": {"strategy": "warm"},
                  "sp": {"strategy": "shrink_perturb", "shrink": 0.4, "perturb": 0.1}},
        "terms": {"l2_init": {"term": "l2_init", "coef": 1.0e-3}},
        "interventions": {"redo": {"intervention": "redo", "tau": 0.5, "every": 5}},
        "defaults": {"stop": {"rule": "converged", "threshold": 0.99, "max_epochs": 4}, "batch_size": 64,
                     "validation_fraction": 0.3, "phase1_fraction": 0.5},
        "experiments": {"board": {
            "kind": "remedies", "report": "leaderboard", "datasets": ["mnist1d"], "models": ["mlp"],
            "optimizers": ["adam"], "seeds": [0, 1], "target": "full_reset", "baseline": "warm",
            "remedies": {"sp": {}, "l2_init": {}, "redo": {}, "muon": {}}, "protocols": protocols,
            "online": {"round_size": 100, "max_samples": 200}}},
    }


@pytest.mark.parametrize("protocol", ["batch", "online"])
def test_a_leaderboard_of_one_protocol_builds_from_its_own_table(tmp_path, protocol):
    snakemake(tmp_path, tiny_remedies([protocol]), "figures/board.csv")
    board = pd.read_csv(tmp_path / "figures" / "board.csv")
    assert set(board["protocol"]) == {protocol}
    assert {"full_reset", "warm", "sp", "l2_init", "redo", "muon"} <= set(board["remedy"])
    assert (tmp_path / "figures" / "board.png").exists()
    other = "rounds" if protocol == "batch" else "summary"
    assert not (tmp_path / "results" / "board" / f"{other}.parquet").exists()


