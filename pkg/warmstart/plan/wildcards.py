"""Wildcard patterns for the workflow's rules (workflow/rules/common.smk). Snakemake must find exactly one
rule that writes a file, so a rule that stands for some of the names (the publish rule of one set of run
files, the report rule of one report) matches exactly those. Snakemake copies a rule's pattern into each
of its outputs and scans it whenever it names a job's files, so the patterns are kept short: a tree of
common prefixes rather than a list of names, and for runs the shortest start of each run's hash that
tells it from the runs of the other rules.
"""
from __future__ import annotations

import bisect
import os
import re
from typing import Iterable, Sequence

NOTHING = "(?!x)x"  # matches no name


def names_pattern(names: Iterable[str]) -> str:
    """A pattern matching exactly ``names``, as a tree of their common prefixes: matching a name takes the
    time of its length, not of the number of names."""
    tree: dict = {}
    for name in names:
        node = tree
        for char in name:
            node = node.setdefault(char, {})
        node[""] = {}  # a name ends here

    def pattern(node: dict) -> str:
        branches = [f"{re.escape(char)}{pattern(child)}" for char, child in sorted(node.items()) if char]
        if len(branches) == 1 and "" not in node:
            return branches[0]
        group = f"(?:{'|'.join(branches)})" if branches else ""
        return f"{group}?" if branches and "" in node else group

    return pattern(tree) if tree else NOTHING


def hash_starts_pattern(mine: Sequence[str], others: Sequence[str]) -> str:
    """A pattern matching the names ``<label>_<hash>`` (a hash of lowercase hex digits, as run names end)
    whose hash is one of ``mine``, and none whose hash is one of ``others``: per hash of ``mine``, its
    shortest start that no hash of ``others`` shares (3 KB for the paper config's 1,005 runs with one
    probe, against 13 KB for the tree of their names). A name whose hash is in neither may match too: the
    pattern tells apart the names of the two, the planned runs, and nothing else."""
    if not mine:
        return NOTHING
    others = sorted(others)
    starts = set()
    for h in mine:
        i = bisect.bisect(others, h)
        shared = max((len(os.path.commonprefix([h, o])) for o in others[max(i - 1, 0):i + 1]), default=0)
        starts.add(h[:shared + 1])
    return f"[^/]+_{names_pattern(sorted(starts))}[0-9a-f]*"
