"""Seeded splits of the official training set (the paper's protocol).

A random ``validation_fraction`` (default a third) of the official training set is the validation set;
the rest is the training pool, stored in a seeded random order. A run that trains on a fraction ``f`` of
the pool takes the pool's first ``round(f * len(pool))`` samples, so for one seed the 50% set of phase 1
is contained in the 100% set of phase 2, and the "new" half is exactly the pool's second half.
(torch is imported where a split is made or read: planning only names splits.)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from warmstart.core.io import load_torch, save_torch
from warmstart.core.seeds import split_seed

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Split:
    validation: torch.Tensor  # indices into the official training set
    pool: torch.Tensor  # the remaining indices, in the seeded order that defines every subset

    def train_indices(self, fraction: float) -> torch.Tensor:
        n = round(fraction * len(self.pool))
        if n < 1:
            raise ValueError(f"train_fraction {fraction} selects no sample of a pool of {len(self.pool)}")
        return self.pool[:n]


def make_split(n_train: int, seed: int, validation_fraction: float = 1 / 3) -> Split:
    import torch

    # A generator of its own, salted, so the split does not depend on (or disturb) any global RNG state
    generator = torch.Generator().manual_seed(split_seed(seed))
    order = torch.randperm(n_train, generator=generator)
    n_val = round(validation_fraction * n_train)
    if not 0 < n_val < n_train:
        raise ValueError(f"validation_fraction {validation_fraction} of {n_train} samples leaves an empty set")
    return Split(validation=order[:n_val].sort().values, pool=order[n_val:])


def split_name(dataset_key: str, seed: int, validation_fraction: float) -> str:
    return f"{dataset_key}_val{validation_fraction:.6g}_s{seed}"


def save_split(split: Split, path: str | Path) -> None:
    save_torch({"validation": split.validation, "pool": split.pool}, path)


def load_split(path: str | Path) -> Split:
    d = load_torch(path, what="the split", fix=f"Delete {path} and run the workflow again: it makes the split again")
    return Split(validation=d["validation"], pool=d["pool"])
