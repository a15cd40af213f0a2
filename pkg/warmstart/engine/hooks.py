"""Hooks: everything that acts during training, as the one loop (``warmstart.engine.loop.fit``) calls it.

A hook subclasses ``Hook`` and overrides what it needs; the loop calls every hook the same way, at fixed
points, in the order the hooks were given:

* ``start(trainee, seeds)``: once, before the optimiser is built (rows = ``seeds``, in order);
* ``configure_optimizer(optimizer)``: every optimiser the loop builds passes through it (returns it);
* ``loss(batch) -> Tensor[S]``: added to each seed's mean cross-entropy (loss terms);
* ``after_step(params, optimizer, stats)``: after every optimiser step; ``params``: name -> [S, ...]
  views of the weights (interventions, remedies acting between steps);
* ``measure(ctx) -> {column: [S]}``: after each epoch's validation, in eval mode (probes);
* ``on_record(row, seed_index, record)``: per seed, once its epoch record is written (savers);
* ``seed_done(row, optimizer) -> dict``: when a seed finishes: fields of its ``TrainResult``;
* ``keep(rows, index)``: finished seeds drop out: keep only ``rows`` (``keep_rows``);
* ``state_dict()`` / ``load_state_dict(state)``: what a resumed run needs (saved in every checkpoint).

So a hook's state is resumable and stackable by construction: the loop saves every hook's
``state_dict()`` with its own, and calls ``keep`` on every hook when seeds finish. The hooks the
library's runs use are here (``Anchors``, ``TermHook``, ``Probes``, ``ExportAt``, ``KeepOptimizer``) and
in ``warmstart.engine.intervention_hook`` (``Interventions``, which runs the registered interventions);
``warmstart.engine.loop.run_hooks`` puts a run's together.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Collection, Sequence

import torch

from warmstart.components.probes import BoundProbe, ProbeContext
from warmstart.components.terms import BoundTerm, TermBatch
from warmstart.engine.objective import eval_mode
from warmstart.engine.trainees import keep_rows


@dataclass(frozen=True)
class StepStats:
    """What ``after_step`` hears of the step just taken."""

    batch_size: int  # samples per seed in the step's batch


class Hook:
    """The protocol (see the module docstring); every method's default does nothing."""

    def start(self, trainee, seeds: Sequence[int]) -> None:
        self.trainee = trainee

    def configure_optimizer(self, optimizer):
        return optimizer

    def loss(self, batch: TermBatch) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self, params: dict[str, torch.Tensor], optimizer, stats: StepStats) -> None:
        pass

    def measure(self, ctx: ProbeContext) -> dict[str, list[float]]:
        return {}

    def on_record(self, row: int, seed_index: int, record: dict[str, float]) -> None:
        pass

    def seed_done(self, row: int, optimizer) -> dict[str, Any]:
        return {}

    def keep(self, rows: list[int], index: torch.Tensor) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    @property
    def adds_loss(self) -> bool:
        return overrides(self, "loss")


def overrides(hook: Hook, method: str) -> bool:
    """Whether ``hook`` does something at ``method`` (the loop skips the work for hooks that do not)."""
    return getattr(type(hook), method) is not getattr(Hook, method)


class Anchors(Hook):
    """The weights terms and probes measure from, as [S, ...] tensors per name: ``start``, the weights the
    run began training from, and ``origin``, its lineage's first initialisation (for a batch run the fresh
    model under its seed, also its phase-1 parent's initialisation; for an online stream the first
    round's). One dict, shared by the hooks that read it and kept in place."""

    def __init__(self, anchors: dict[str, dict[str, torch.Tensor]]):
        self.anchors = anchors

    def keep(self, rows: list[int], index: torch.Tensor) -> None:
        for name, anchor in self.anchors.items():
            self.anchors[name] = keep_rows(anchor, index)

    def state_dict(self) -> dict[str, Any]:
        return dict(self.anchors)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.anchors.clear()
        self.anchors.update(state)


class TermHook(Hook):
    """One loss term of the run (``warmstart.components.terms``), with the anchors it reads."""

    def __init__(self, term: BoundTerm, anchors: dict[str, dict[str, torch.Tensor]]):
        self.term, self.anchors = term, anchors

    def loss(self, batch: TermBatch) -> torch.Tensor:
        return self.term(replace(batch, anchors=self.anchors))

    def keep(self, rows: list[int], index: torch.Tensor) -> None:
        self.term.state = keep_rows(self.term.state, index)
        self.term.row_options = keep_rows(self.term.row_options, index)

    def state_dict(self) -> dict[str, Any]:
        return {"state": self.term.state, "row_options": self.term.row_options}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.term.state = state["state"]
        self.term.row_options = state.get("row_options", {})


class Probes(Hook):
    """The run's probes (``warmstart.components.probes``), measured after each epoch in eval mode; the
    columns each measured are its result's ``probe_columns``."""

    def __init__(self, probes: Sequence[BoundProbe], anchors: dict[str, dict[str, torch.Tensor]]):
        self.probes, self.anchors = list(probes), anchors
        self.columns: list[list[str]] = []

    def measure(self, ctx: ProbeContext) -> dict[str, list[float]]:
        ctx = replace(ctx, anchors=self.anchors)
        out: dict[str, list[float]] = {}
        self.columns = []
        with eval_mode(ctx.model):
            for probe in self.probes:
                measured = probe(ctx)
                self.columns.append(list(measured))
                for column, values in measured.items():
                    out[column] = values.detach().double().tolist()  # float64: a float32 value stays exact
        return out

    def seed_done(self, row: int, optimizer) -> dict[str, Any]:
        return {"probe_columns": self.columns}


class ExportAt(Hook):
    """After each epoch in ``epochs``, every seed's row is written into its own module (e.g. for a kept
    checkpoint), before the loop's ``on_epoch`` sees the record."""

    def __init__(self, epochs: Collection[int]):
        self.epochs = set(epochs)

    def on_record(self, row: int, seed_index: int, record: dict[str, float]) -> None:
        if record["epoch"] in self.epochs:
            self.trainee.export(row)


class KeepOptimizer(Hook):
    """Each seed's final optimiser state, as its own model's optimiser would hold it (``optimizer_state``
    of its result: a warm start that keeps its parent's optimiser reads it)."""

    def seed_done(self, row: int, optimizer) -> dict[str, Any]:
        return {"optimizer_state": self.trainee.row_optimizer_state(optimizer, row)}
