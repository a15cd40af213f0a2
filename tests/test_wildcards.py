"""The wildcard patterns of the workflow's rules match exactly their names (warmstart.plan.wildcards), so
that every file has one rule that writes it: a report rule its experiments, a publish rule its runs."""
from __future__ import annotations

import random
import re

from warmstart.plan.wildcards import NOTHING, hash_starts_pattern, names_pattern


def whole(pattern: str) -> re.Pattern:
    return re.compile(f"(?:{pattern})$")


def test_a_names_pattern_matches_exactly_its_names_also_where_one_is_the_start_of_another():
    rng = random.Random(0)
    for _ in range(300):
        names = {"".join(rng.choice("ab_1.") for _ in range(rng.randint(1, 5))) for _ in range(rng.randint(1, 12))}
        strangers = {"".join(rng.choice("ab_1.") for _ in range(rng.randint(0, 6))) for _ in range(100)}
        pattern = whole(names_pattern(sorted(names)))
        for candidate in names | strangers:
            assert bool(pattern.match(candidate)) == (candidate in names), (sorted(names), candidate)
    assert names_pattern(["table1", "table1_cifar10", "fig1"]) == "(?:fig1|table1(?:_cifar10)?)"


def test_no_names_make_a_pattern_that_matches_nothing():
    assert names_pattern([]) == hash_starts_pattern([], ["0123456789ab"]) == NOTHING
    assert not re.match(NOTHING, "") and not re.match(NOTHING, "x")


def test_a_hash_starts_pattern_matches_its_runs_and_no_run_of_the_others():
    rng = random.Random(1)
    hashes = sorted({f"{rng.getrandbits(48):012x}" for _ in range(3000)})
    twins = ["0123456789a0", "0123456789a1"]  # share all but the last digit, one on each side
    mine, others = hashes[::3] + twins[:1], [h for i, h in enumerate(hashes) if i % 3] + twins[1:]
    labels = ["mnist1d_mlp_adam_warm_f1_s0", "cafe_beef_s12", "x"]  # a label may look like hex digits
    pattern = hash_starts_pattern(mine, others)
    compiled = whole(pattern)
    for label in labels:
        assert all(compiled.match(f"{label}_{h}") for h in mine)
        assert not any(compiled.match(f"{label}_{h}") for h in others)
    assert not compiled.match(f"{twins[0]}") and not compiled.match(f"run_{twins[0]}/model.pt")
    # shorter than the names themselves, which is the point
    assert len(pattern) < len(names_pattern([f"{labels[0]}_{h}" for h in mine])) / 2
