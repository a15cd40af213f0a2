"""The paper's data protocol: a random third of the official training set is held out for validation,
and phase 1 trains on the first half of the (seeded, shuffled) rest, phase 2 on all of it."""
from __future__ import annotations

import pytest
import torch

from warmstart.components.splits import load_split, make_split, save_split


@pytest.mark.parametrize("n", [10, 100, 601, 1000, 50_000])
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_validation_and_pool_partition_all_indices(n, seed):
    split = make_split(n, seed)
    val, pool = split.validation, split.pool
    assert len(val) == round(n / 3) and len(pool) == n - round(n / 3)
    assert val.dtype == torch.int64 and pool.dtype == torch.int64
    # disjoint, and together every index exactly once
    assert torch.equal(torch.cat([val, pool]).sort().values, torch.arange(n))
    assert len(set(val.tolist()) & set(pool.tolist())) == 0


def test_validation_is_a_random_third_not_a_block():
    split = make_split(3000, 0)
    val = split.validation
    assert not torch.equal(val, torch.arange(1000)) and not torch.equal(val, torch.arange(2000, 3000))
    # a random subset covers the whole index range roughly evenly
    counts = torch.histc(val.float(), bins=3, min=0, max=3000)
    assert ((counts > 250) & (counts < 420)).all(), counts
    # and the pool is stored shuffled, not sorted
    assert not torch.equal(split.pool, split.pool.sort().values)


def test_validation_fraction_is_respected():
    split = make_split(1000, 0, validation_fraction=0.2)
    assert len(split.validation) == 200 and len(split.pool) == 800
    with pytest.raises(ValueError):
        make_split(2, 0, validation_fraction=0.1)  # rounds to an empty validation set


def test_same_seed_same_split_different_seed_different_split():
    a, b, c = make_split(1000, 3), make_split(1000, 3), make_split(1000, 4)
    assert torch.equal(a.validation, b.validation) and torch.equal(a.pool, b.pool)
    assert not torch.equal(a.validation, c.validation)
    assert not torch.equal(a.pool, c.pool)


def test_making_a_split_neither_reads_nor_disturbs_the_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    first = make_split(500, 2)
    after = torch.rand(3)
    assert torch.equal(after, expected)
    torch.manual_seed(123)
    assert torch.equal(make_split(500, 2).pool, first.pool)


@pytest.mark.parametrize("n", [1000, 999, 50_000])
def test_half_the_pool_is_a_prefix_of_the_whole_pool(n):
    split = make_split(n, 5)
    half, full = split.train_indices(0.5), split.train_indices(1.0)
    assert torch.equal(full, split.pool)
    assert len(half) == round(0.5 * len(split.pool))
    assert torch.equal(full[:len(half)], half)
    assert set(half.tolist()) <= set(full.tolist())
    # the samples phase 2 adds are exactly the pool's second part, none seen in phase 1
    new = full[len(half):]
    assert len(new) == len(full) - len(half) and not set(new.tolist()) & set(half.tolist())
    # and training never touches validation samples
    assert not set(full.tolist()) & set(split.validation.tolist())


def test_train_indices_for_other_fractions_and_empty_selection():
    split = make_split(1000, 0)  # pool of 667
    assert len(split.train_indices(0.25)) == round(0.25 * 667)
    assert torch.equal(split.train_indices(0.25), split.train_indices(0.5)[:round(0.25 * 667)])
    with pytest.raises(ValueError):
        split.train_indices(0.0001)


def test_save_load_round_trip(tmp_path):
    split = make_split(1000, 9)
    path = tmp_path / "splits" / "mnist1d_s9.pt"
    save_split(split, path)
    back = load_split(path)
    assert torch.equal(back.validation, split.validation) and torch.equal(back.pool, split.pool)
    assert back.pool.dtype == split.pool.dtype
    assert torch.equal(back.train_indices(0.5), split.train_indices(0.5))
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no partial file left behind

