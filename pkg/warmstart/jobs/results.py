"""Collect finished run directories into an experiment's tables.

``summary.parquet``: one row per planned run of the experiment. Columns:
  experiment, dataset, model, optimizer, lr, batch_size, seed, init, baseline, phase   (the experiment's
  labels: ``init`` is the label of the init in the config, ``baseline`` whether it starts from no parent)
  run_id, run_name, parent_run_id, arch, train_fraction                       (from the run spec)
  val_acc, val_loss, train_acc, train_loss (accuracies are fractions 0-1), test_acc, test_loss (the final
  model on the data set's official test split; NaN without one, and for runs made before it was
  recorded), epochs, train_time_s
  (training only, evaluation excluded), converged (reached the training-accuracy threshold),
  stopped_by ("threshold", "max_epochs" or "epochs"), n_train, n_val, num_parameters, device,
  precision (what ran: fp32 or bf16), stacked_seeds (how many seeds trained together in its job; 1: alone),
  samples_seen (samples processed in training), init_time_s and init_samples (what the init strategy
  spent before training, e.g. a last-layer-first stage; 0 for most), units_reset (by the run's
  interventions), interventions (their names, comma-separated; "" without any), then the probes' values
  after the last epoch (e.g. corr_with_start)
``epochs.parquet``: one row per run and epoch, with the same label columns plus run_id and the per-epoch
record: epoch, train_loss, train_acc, val_loss, val_acc, epoch_time_s, samples_seen, then one column per
value the experiment's probes measure (e.g. grad_norm_old; read from the run's probe tables, so a probe
another experiment added to a shared run does not appear here).
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from warmstart.plan.planned import PlannedRun
from warmstart.plan.plan_files import probe_file
from warmstart.core.records import EPOCH_FIELDS, probe_columns
from warmstart.core.spec import RunSpec, StreamSpec

SUMMARY_METRICS = ("val_acc", "val_loss", "train_acc", "train_loss", "epochs", "train_time_s", "converged",
                   "stopped_by", "n_train", "n_val", "num_parameters", "device")
# metrics added later, with the value every run made before them had (NaN: not measured then; a report
# that needs it says so, e.g. the leaderboard falls back to validation accuracy and says it did)
LATER_METRICS = {"precision": "fp32", "stacked_seeds": 1, "init_time_s": 0.0, "init_samples": 0, "units_reset": 0,
                 "test_acc": float("nan"), "test_loss": float("nan")}


# round columns added later: NaN (not measured) in the rounds of streams run before them
ROUND_LATER = ("test_acc", "test_loss", "units_reset")


def interventions_of(spec: RunSpec) -> str:
    """The names of a run's (or round template's) interventions, comma-separated; "" without any."""
    return ",".join(i.name for i in spec.interventions)


def collect(experiment: str, planned: list[PlannedRun], runs_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    runs_dir = Path(runs_dir)
    rows, epoch_frames = [], []
    for p in (p for p in planned if isinstance(p.spec, RunSpec)):  # an experiment may also plan streams
        run_dir = runs_dir / p.spec.name
        metrics = json.loads((run_dir / "metrics.json").read_text())
        identity = {
            "experiment": experiment, **p.labels,
            "run_id": p.spec.run_id, "run_name": p.spec.name,
            "parent_run_id": None if p.spec.parent is None else p.spec.parent.run_id,
            "arch": p.spec.model.arch, "train_fraction": p.spec.train_fraction,
        }
        epochs = pd.read_parquet(run_dir / "epochs.parquet", columns=list(EPOCH_FIELDS))
        for probe in p.spec.probes:  # the experiment's own probes: what other experiments measure stays out
            table = pd.read_parquet(run_dir / probe_file(probe))
            # a probe of the record's own columns (validation) filled them in epochs.parquet as it measured
            table = table.drop(columns=[c for c in table.columns if c != "epoch" and c in epochs.columns])
            epochs = epochs.merge(table, on="epoch", how="left", validate="one_to_one")
        probed = {c: epochs[c].iloc[-1] for c in probe_columns(epochs.columns)}  # after the last epoch
        rows.append({**identity, **{k: metrics[k] for k in SUMMARY_METRICS},
                     **{k: metrics.get(k, default) for k, default in LATER_METRICS.items()},
                     "samples_seen": metrics.get("samples_seen", metrics["epochs"] * metrics["n_train"]),
                     "interventions": interventions_of(p.spec), **probed})
        epoch_frames.append(epochs.assign(**identity))
    summary = pd.DataFrame(rows)
    epochs = pd.concat(epoch_frames, ignore_index=True)
    # label columns first, then the per-epoch record
    front = list(identity)
    epochs = epochs[front + [c for c in epochs.columns if c not in front]]
    return summary, epochs


def collect_streams(experiment: str, planned: list[PlannedRun], streams_dir: str | Path) -> pd.DataFrame:
    """``rounds.parquet``: one row per stream and round. Columns: the experiment's labels (experiment,
    dataset, model, optimizer, lr, batch_size, seed, policy, init, baseline), stream_id, stream_name,
    round_size, interventions (the round template's, comma-separated), then round, n_samples, val_acc,
    val_loss, test_acc, test_loss (the round's final model on the test split; NaN without one, and for
    streams run before it was recorded), train_acc, train_loss, epochs, train_time_s (this round's training
    only), init_time_s (what its init strategy spent), cumulative_train_time_s (training and init time of
    every round so far), samples_seen (this round's, training and init), cumulative_samples, converged,
    units_reset (by this round's interventions; NaN for streams run before it was recorded), and the
    probes' values after each round's last epoch."""
    frames = []
    for p in (p for p in planned if isinstance(p.spec, StreamSpec)):  # an experiment may also plan runs
        rounds = pd.read_parquet(Path(streams_dir) / p.spec.name / "rounds.parquet").drop(columns=["stream_id"])
        for column in ROUND_LATER:  # streams run before these were recorded: not measured
            if column not in rounds.columns:
                rounds[column] = float("nan")
        identity = {"experiment": experiment, **p.labels, "stream_id": p.spec.stream_id,
                    "stream_name": p.spec.name, "round_size": p.spec.round_size,
                    "interventions": interventions_of(p.spec.round)}
        frames.append(rounds.assign(**identity)[list(identity) + list(rounds.columns)])
    return pd.concat(frames, ignore_index=True)


def load_planned(path: str | Path) -> list[PlannedRun]:
    """An experiment's planned runs (or streams) with their labels, as the workflow writes them."""
    def spec(d):
        return StreamSpec.from_dict(d) if "stream_id" in d else RunSpec.from_dict(d)
    return [PlannedRun(spec(p["spec"]), p["labels"]) for p in json.loads(Path(path).read_text())]
