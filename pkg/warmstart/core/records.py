"""The columns of the per-epoch record every run writes (``epochs.parquet``, built by
``warmstart.engine.loop.epoch_record``): the fixed ``EPOCH_FIELDS``, then one column per value its probes
measure. No torch here: the summaries read these columns without loading the engine.
"""
from __future__ import annotations

from typing import Iterable

EPOCH_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "epoch_time_s", "samples_seen")


def probe_columns(columns: Iterable[str]) -> list[str]:
    """The probes' columns among ``columns`` (an epoch record's keys, or the columns of ``epochs.parquet``
    without its run_id), in their order."""
    return [c for c in columns if c not in EPOCH_FIELDS]
