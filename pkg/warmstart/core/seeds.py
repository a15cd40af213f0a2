"""Every seed a run derives from its own, in one place.

A run has one seed (``RunSpec.seed``); each independent random draw it makes takes a seed derived from it
here, so that no two draws share a stream and none depends on what else runs in the process. The
arithmetic forms are those the published results were computed with: changing one changes every number
that depends on it, so a new draw takes a new ``tag`` of ``derived_seed`` rather than a new formula.
"""
from __future__ import annotations

import hashlib


def derived_seed(seed: int, tag: str) -> int:
    """A seed for another, independent draw of the run (e.g. shrink-perturb's fresh model, a reset unit's
    fresh weights), fixed by the run's seed and a tag: reproducible and unrelated to the run's own
    initialisation."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{tag}".encode()).digest()[:4], "little")


def batch_order_seed(seed: int) -> int:
    """The generator of a seed's batch order (one ``randperm`` per epoch): the seed's alone, so the order
    does not depend on what else is stacked with it."""
    return 2 * seed + 1


def split_seed(seed: int) -> int:
    """The train/validation split's generator: salted, so the split neither depends on nor disturbs any
    other draw."""
    return 1_000_003 * seed + 17


def round_seed(seed: int, round_index: int) -> int:
    """A distinct seed per round of an online stream, so each random round gets its own fresh
    initialisation and batch order."""
    return 1_000_003 * seed + round_index
