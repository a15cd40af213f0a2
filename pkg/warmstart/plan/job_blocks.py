"""Grouping a plan's runs into training jobs (blocks): stackable runs that differ only in their seed,
init strategy, parent, learning rate, loss-term coefficients and unit-reset options (``stack_key``), in
fixed blocks of seeds (``b * size .. b * size + size - 1``), train as one stack; every other run alone;
and online streams that share a job. Blocks are a function of the plan alone, never of what is already
on disk, and how runs are grouped changes no run's numbers (a row of a stack is computed independently
of the others).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

from warmstart.components.inits import STRATEGIES
from warmstart.components.interventions import INTERVENTIONS
from warmstart.components.models import MODELS
from warmstart.components.optimizers import OPTIMIZERS, row_settings
from warmstart.components.terms import ROW_OPTIONS, TERMS
from warmstart.core.identity import short_hash
from warmstart.core.spec import RunSpec, StreamSpec
from warmstart.plan.planned import Plan


@dataclass(frozen=True)
class Block:
    """Runs trained by one job: one or more stacks (``stacked``: rows that share a ``stack_key``), or a
    single run."""

    name: str
    specs: tuple[RunSpec, ...]
    stacked: bool


def stackable(spec: RunSpec) -> bool:
    """Whether ``spec`` trains on the stacked engine (as a row of ``[S, ...]`` tensors; a stack of one when
    it trains alone), so that it can share a stack (``stack_key``): a stackable model, an elementwise (or
    per-row) optimiser, and an init strategy, terms and interventions that work per row. Decided by what
    changes the run's numbers only, never by its probes, kept checkpoints or kept optimiser state (which
    other experiments may add or remove) nor by speed options: a run gets the same engine, and so the
    same bits, whichever experiments ask for it and however its runs are grouped."""
    model = MODELS[spec.model.arch].stackable  # a bool, or (arch: python) a function of the model's options
    return ((model(spec.model.options) if callable(model) else model) and OPTIMIZERS[spec.optimizer.name].stackable
            and STRATEGIES[spec.init.strategy].stackable(spec.init.options)
            and all(TERMS[t.name].stackable for t in spec.terms)
            and all(INTERVENTIONS[i.name].stackable for i in spec.interventions))


def plan_blocks(plan: Plan, stack_seeds: int, stacks_per_job: int = 1) -> dict[str, Block]:
    """The training jobs of ``plan``: stackable runs (``stackable``) with one ``stack_key`` whose seeds
    fall in the same block of ``stack_seeds`` consecutive seeds train as one stack, whatever their init
    strategy, parent, learning rate, term coefficients and unit-reset options (a wide stack: the arms of a
    comparison, the points of a sweep, side by side); with ``stack_seeds`` 1, a stack per seed. Every
    other run trains alone, in a block named after it. With ``stacks_per_job`` > 1, up to that many
    stacks whose runs start from the same parent stacks (or from none) share one job, one stack after the
    other: a job's start-up costs more than a small model's training. A pure function of the plan: the
    same blocks before, during and after training. How runs are grouped changes no run's numbers
    (``warmstart.jobs``; each stack trains on its own, and each row of it as it would alone)."""
    groups: dict[tuple, list[RunSpec]] = {}
    blocks: dict[str, Block] = {}
    for spec in plan.runs.values():
        if stackable(spec):
            groups.setdefault((stack_key(spec), spec.seed // stack_seeds), []).append(spec)
        else:
            blocks[spec.name] = Block(spec.name, (spec,), stacked=False)
    stacks: dict[tuple, list[tuple[str, tuple[RunSpec, ...]]]] = {}
    for (key, index), members in groups.items():
        # rows that share a learning rate side by side: the optimiser steps each run of them in one go
        # (``optimizer_algorithms.base.row_segments``)
        members.sort(key=lambda s: (s.optimizer.lr, s.seed, s.name))
        name = f"{stack_label(members[0])}_b{index}_{key[:10]}"
        parents = tuple(sorted({stack_key(m.parent) for m in members if m.parent is not None}))
        stacks.setdefault((parents, members[0].dataset.key, index), []).append((name, tuple(members)))
    for shared, named in stacks.items():
        named.sort()
        for start in range(0, len(named), stacks_per_job):
            chunk = named[start:start + stacks_per_job]
            if len(chunk) == 1:
                name = chunk[0][0]
            else:
                name = f"{chunk[0][0].rsplit('_', 2)[0]}_x{len(chunk)}_{short_hash([n for n, _ in chunk], 10)}"
            blocks[name] = Block(name, tuple(s for _, members in chunk for s in members), stacked=True)
    return blocks


def stack_label(spec: RunSpec) -> str:
    """The readable part of the name of ``spec``'s stack: what its rows share,
    ``<dataset>_<model>_<opt>_gen<generation>_f<frac>`` (not an init strategy: the name of a stack does not
    depend on which arms a config lists)."""
    frac = f"{spec.train_fraction:g}".replace(".", "p")
    return f"{spec.dataset.name}_{spec.model.arch}_{spec.optimizer.name}_gen{generation(spec)}_f{frac}"


def plan_stream_blocks(plan: Plan, streams_per_job: int = 1) -> dict[str, tuple[StreamSpec, ...]]:
    """Online streams that share a training job, one after the other (``streams_per_job`` > 1): up to that
    many streams of one dataset, in name order. A stream not listed trains in a job of its own. A pure
    function of the plan; grouping changes no stream's numbers (each runs on its own)."""
    if streams_per_job <= 1:
        return {}
    by_data: dict[str, list[StreamSpec]] = {}
    for spec in plan.streams.values():
        by_data.setdefault(spec.round.dataset.key, []).append(spec)
    blocks = {}
    for key, specs in by_data.items():
        specs.sort(key=lambda s: s.name)
        for start in range(0, len(specs), streams_per_job):
            chunk = tuple(specs[start:start + streams_per_job])
            if len(chunk) > 1:
                blocks[f"{key}_streams_x{len(chunk)}_{short_hash([s.name for s in chunk], 10)}"] = chunk
    return blocks


def block_stacks(specs: Sequence[RunSpec]) -> list[list[RunSpec]]:
    """A training job's stacks: its runs grouped by ``stack_key``, in the job's order."""
    stacks: dict[str, list[RunSpec]] = {}
    for spec in specs:
        stacks.setdefault(stack_key(spec), []).append(spec)
    return list(stacks.values())


# What a row's start alone decides (``warmstart.jobs.seed_start``): a stack's rows may differ in these.
PER_ROW_FIELDS = ("seed", "init", "parent", "parent_epoch")
# ... and these settings, which training reads per row: an elementwise optimiser's learning rate
# (``optimizers.row_settings``), the loss terms' coefficients (``terms.ROW_OPTIONS``) and the options of
# an intervention that resets units (``unit_intervention_shared``)
PER_ROW_SETTINGS = ("optimizer.lr", *(f"terms.{option}" for option in ROW_OPTIONS), "interventions.options")


def stack_shared(spec: RunSpec) -> dict:
    """The part of ``spec``'s canonical form that every row of its stack has alike: all of it but the
    fields a row's start decides (``PER_ROW_FIELDS``) and the settings each row trains with its own
    (``PER_ROW_SETTINGS``, where the optimiser steps rows at their own rates)."""
    shared = {k: v for k, v in spec.canonical().items() if k not in PER_ROW_FIELDS}
    own = row_settings(spec.optimizer.name)
    shared["optimizer"] = {k: v for k, v in shared["optimizer"].items() if k not in own}
    if "terms" in shared:  # a term's coefficient is each row's own, but whether the run sets it is not
        shared["terms"] = [{**t, "options": {k: "per row" if k in ROW_OPTIONS else v for k, v in t["options"].items()}}
                           for t in shared["terms"]]
    if "interventions" in shared:
        shared["interventions"] = [unit_intervention_shared(i) for i in shared["interventions"]]
    return shared


def unit_intervention_shared(canonical: dict) -> dict:
    """An intervention's canonical form as a stack's rows share it. One that resets units acts on each
    row apart (``BoundIntervention.of_rows``: the rows of each set of options have their own calls, state
    and statistics), so its options are each row's own but for what it asks of the whole stack's
    optimiser (``Needs.per_entry_step``); one that acts on the weights or the optimiser directly
    (``Needs.units`` false, e.g. ``moment_reset``) reaches every row at once, so its rows share them."""
    needs = INTERVENTIONS[canonical["name"]].needs_for(canonical["options"])
    if not needs.units:
        return canonical
    return {**canonical, "options": "per row", "per_entry_step": needs.per_entry_step}


def stack_key(spec: RunSpec) -> str:
    """What the rows of one stack share (``stack_shared``): everything of the spec but a row's start
    (its seed, init strategy and parent), its learning rate (elementwise optimisers), its terms'
    coefficients and its unit interventions' options, all of which each row has its own; so training
    reads the rest the same way for every row (model, data, batch size, optimiser, stop rule, which terms
    and interventions, engine, probes).
    Also the part of the model the run trains (``Strategy.trains``); its generation (``generation``),
    so that no stack holds a run beside its own ancestor and no job waits for a job that waits for it;
    and, for a run with probes, the part of its training set its parent saw (the ``old`` and ``new``
    subsets the probes read, one shape per stack)."""
    shared = stack_shared(spec)
    parent = spec.parent
    old = parent.train_fraction if spec.probes and parent is not None and parent.dataset == spec.dataset else None
    trains = STRATEGIES[spec.init.strategy].trains
    return short_hash({"shared": shared, "generation": generation(spec), "old_fraction": old, "trains": trains,
                       "engine": dataclasses.asdict(spec.engine),
                       "probes": [dataclasses.asdict(p) for p in spec.probes]}, 16)


def generation(spec: RunSpec) -> int:
    """0 for a run that starts from no parent, else one more than its parent's."""
    return 0 if spec.parent is None else 1 + generation(spec.parent)
