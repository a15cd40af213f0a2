"""The walkthrough's two examples (config/examples/: your own images, your own table) run end to end on tiny
generated files: the study, the remedies' leaderboard and the advice page."""
from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest
import yaml

from test_user_data import make_images, make_table
from test_workflow import REPO, snakemake

EXAMPLES = REPO / "config" / "examples"


def tiny(config: dict, workdir: Path) -> dict:
    """An example config shrunk to seconds: 2 epochs, 2 seeds, one setting per remedy, in ``workdir``."""
    config = copy.deepcopy(config)
    config["results_dir"], config["figures_dir"] = "results", "figures"
    config["resources"].update(train_threads=1)
    config["defaults"].update(batch_size=16, stop={"rule": "epochs", "max_epochs": 2})
    for exp in config["experiments"].values():
        exp["seeds"] = [0, 1]
        if "remedies" in exp:
            exp["remedies"] = {k: ({o: v[:1] for o, v in g.items()} if g else g) for k, g in exp["remedies"].items()}
    return config


@pytest.mark.parametrize("example", ["images", "table"])
def test_the_walkthroughs_example_runs_end_to_end_on_tiny_files(tmp_path, example):
    config = yaml.safe_load((EXAMPLES / f"{example}.yaml").read_text())
    (tmp_path / "data").mkdir()
    if example == "images":  # a few dozen small images at the example's path
        make_images(tmp_path / config["datasets"]["photos"]["path"], classes=("cat", "dog", "owl"), per_class=10)
        config["datasets"]["photos"]["size"] = 8
    else:  # a few hundred rows
        frame = pd.read_parquet(make_table(tmp_path / "rows.parquet"))
        frame.drop(columns="id").rename(columns={"species": "label"}).to_parquet(tmp_path / config["datasets"]["rows"]["path"])
    config = tiny(config, tmp_path)
    snakemake(tmp_path, config)
    figures = tmp_path / "figures"
    for name in ("study", "remedies", "advice"):
        assert (figures / f"{name}.md").exists() and (figures / f"{name}.png").exists()
    page = (figures / "advice.md").read_text()
    assert page.count("**Recommendation: ") == 1 and "A warm start costs" in page
    advice_runs = set(pd.read_parquet(tmp_path / "results" / "advice" / "summary.parquet")["run_id"])
    assert advice_runs == set(pd.read_parquet(tmp_path / "results" / "remedies" / "summary.parquet")["run_id"])
