"""Running the registered interventions (``warmstart.components.interventions``) as one hook of the training
loop (``Interventions``): gathering the unit layers' activation statistics during training (each intervention's own ``Needs``: the statistics it reads, recorded only on
the steps its window covers, from each activation module's input and output), resetting units in the
weights and the optimiser state, asking the run's Adam for per-entry step counts where an intervention
needs them (``Interventions.configure_optimizer``), and the interventions' state across steps, finished
seeds and resumes (the hook protocol, ``warmstart.engine.hooks``). Written over the trainee protocol of
``warmstart.engine.trainees`` (S rows), so one definition serves single runs, stacks and online rounds.
"""
from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from warmstart.components.interventions import (INTERVENTIONS, STATISTICS, InterventionCall, LayerStats, Needs,
                                                UnitLayer, unit_layers)
from warmstart.core.seeds import derived_seed
from warmstart.engine.hooks import Hook, StepStats
from warmstart.engine.trainees import keep_rows


class Recorder:
    """One intervention's statistics over its window (``Needs.window``), per unit layer: the sums over
    samples and positions it asks for (``Needs.stats``), the count they were summed over, and the samples
    seen."""

    def __init__(self, layers: Sequence[UnitLayer], needs: Needs):
        self.layers = list(layers)
        self.needs = needs
        self.clear()

    def clear(self) -> None:
        self.sums: dict[str, list[torch.Tensor | None]] = {s: [None] * len(self.layers) for s in self.needs.stats}
        self.count = [0] * len(self.layers)
        self.samples = [0] * len(self.layers)

    def add(self, k: int, pre: torch.Tensor, post: torch.Tensor, stacked: bool,
            index: torch.Tensor | None = None) -> None:
        """``pre``, ``post``: the activation module's input and output, [S, B, ...] (stacked) or [B, ...];
        ``index``: the rows recorded (None: all)."""
        def rows(h: torch.Tensor) -> torch.Tensor:  # [S, samples x positions, U]
            h = h.detach()
            if not stacked:
                h = h.unsqueeze(0)
            if index is not None:
                h = h.index_select(0, index)
            if self.layers[k].channels_first and h.dim() > 3:
                h = h.movedim(2, -1)
            return h.reshape(h.shape[0], -1, h.shape[-1])

        # only the tensors the intervention reads: this runs on every step of CBP and SNR
        post_rows = rows(post) if {"mean_abs", "mean"} & self.needs.stats else None
        for stat in self.needs.stats:
            if stat == "mean_abs":
                value = post_rows.abs().sum(1)
            elif stat == "mean":
                value = post_rows.sum(1)
            else:
                value = (rows(pre) > 0).any(1)
            old = self.sums[stat][k]
            self.sums[stat][k] = value if old is None else (old | value if stat == "fired" else old + value)
        samples = post.shape[1] if stacked else post.shape[0]
        sample = post[0, 0] if stacked else post[0]  # one sample's activation: [C, H, W] or [..., U]
        units = sample.shape[0] if self.layers[k].channels_first and sample.dim() > 1 else sample.shape[-1]
        self.count[k] += samples * (sample.numel() // units)  # what the sums are over: samples x positions
        self.samples[k] += samples

    def stats(self, k: int, layer: UnitLayer, outgoing) -> LayerStats:
        count = max(self.count[k], 1)
        mean_abs, mean, fired = (self.sums.get(s, [None] * len(self.layers))[k] for s in STATISTICS)
        return LayerStats(layer, None if mean_abs is None else mean_abs / count, None if mean is None else mean / count,
                          fired, outgoing)

    def keep(self, index: torch.Tensor) -> None:
        self.sums = keep_rows(self.sums, index)

    def state_dict(self) -> dict:
        return {"sums": self.sums, "count": self.count, "samples": self.samples}

    def load_state_dict(self, saved: dict) -> None:
        self.sums = {s: list(ts) for s, ts in saved["sums"].items()}
        self.count, self.samples = list(saved["count"]), list(saved["samples"])


@dataclass
class BoundIntervention:
    """A configured intervention of one run (or stack): its options, calls so far and ``[S, ...]`` state.
    ``rows``: the trainee rows it acts on, where the rows of a stack differ in its options (``of_rows``:
    one per set of options, each with its own calls, state and statistics, so a row sees what it sees
    alone); None: every row."""

    name: str
    options: dict[str, Any]
    calls: int = 0
    state: dict[str, Any] = field(default_factory=dict)
    rows: list[int] | None = None

    @classmethod
    def of_rows(cls, name: str, options_per_row: Sequence[dict[str, Any]]) -> list["BoundIntervention"]:
        """Intervention ``name`` of a stack whose row r has options ``options_per_row[r]``: one for every
        row where they agree, else one per distinct options (in the order of their first row)."""
        groups: dict[str, list[int]] = {}
        for row, options in enumerate(options_per_row):
            groups.setdefault(json.dumps(options, sort_keys=True), []).append(row)
        if len(groups) == 1:
            return [cls(name, dict(options_per_row[0]))]
        return [cls(name, dict(options_per_row[rows[0]]), rows=rows) for rows in groups.values()]

    @property
    def every(self) -> int:
        return int(self.options.get("every", 1))

    def keep(self, kept: list[int], index: torch.Tensor) -> torch.Tensor:
        """Keep the trainee rows ``kept`` (their old positions; ``index``, as a tensor); returns the index,
        among this one's rows, of those kept, to slice what else it holds per row."""
        if self.rows is not None:
            mine = [i for i, row in enumerate(self.rows) if row in kept]
            index = torch.tensor(mine, dtype=torch.long, device=index.device)
            self.rows = [kept.index(self.rows[i]) for i in mine]
        self.state = keep_rows(self.state, index)
        return index


class UnitResetter:
    """The one definition of resetting units of a trainee (``SingleModel`` or ``StackedModels``), per row."""

    def __init__(self, trainee, layers: Sequence[UnitLayer]):
        self.trainee = trainee
        self.layers = list(layers)

    def outgoing(self, k: int) -> torch.Tensor:
        """Mean |outgoing weight| per unit, [S, U]: over the consumer's outputs, the unit's span of its
        columns and its kernel positions."""
        layer = self.layers[k]
        w = self.trainee.param_rows(f"{layer.consumer}.weight").detach()
        s, units = w.shape[0], w.shape[2] // layer.span
        return w.abs().reshape(s, w.shape[1], units, layer.span, -1).mean((1, 3, 4))

    @torch.no_grad()
    def reset(self, k: int, mask: torch.Tensor, opt, seeds: Sequence[int], tag: str, *, bias: str = "zero",
              bias_moments: str = "zero", next_bias_shift: torch.Tensor | None = None) -> int:
        """Reset the units ``mask`` [S, U] of layer ``k``; row r's fresh weights are drawn under
        ``derived_seed(seeds[r], tag)``. Incoming weights: the fresh draw; their bias: 0 (``bias: zero``)
        or the fresh draw (``init``); a norm's weight 1, bias 0, running statistics 0 and 1; outgoing
        weights 0; every per-entry optimiser state of those entries (momentum, Adam's moments, a per-entry
        step count) 0, the bias's only under ``bias_moments: zero``. ``next_bias_shift`` [S, U]: the
        consumer's bias first gets, per unit, its outgoing weights (summed over span and kernel) times the
        shift added. Returns how many units were reset."""
        layer = self.layers[k]
        n = int(mask.sum())
        if n == 0:
            return 0
        names = self.trainee.trainable_names()
        norm = [] if layer.norm is None else [f"{layer.norm}.{p}" for p in ("weight", "bias")]
        for row in range(mask.shape[0]):
            units = mask[row].nonzero().flatten()
            if len(units) == 0:
                continue
            fresh = self._fresh(row, layer, derived_seed(seeds[row], f"{tag}:{layer.producer}"))
            name = f"{layer.producer}.weight"
            if name in names:
                rows = self.trainee.param_rows(name)
                rows[row, units] = fresh["weight"][units].to(rows.dtype)
                self._zero_state(opt, name, row, (units,))
            name = f"{layer.producer}.bias"
            if name in names:
                rows = self.trainee.param_rows(name)
                rows[row, units] = 0 if bias == "zero" else fresh["bias"][units].to(rows.dtype)
                if bias_moments == "zero":
                    self._zero_state(opt, name, row, (units,))
            for name in norm:
                if name in names:
                    value = 1.0 if name.endswith("weight") else 0.0
                    self.trainee.param_rows(name)[row, units] = value
                    self._zero_state(opt, name, row, (units,))
            if layer.norm is not None:
                for buffer, value in (("running_mean", 0.0), ("running_var", 1.0)):
                    rows = self.trainee.buffer_rows(f"{layer.norm}.{buffer}")
                    if rows is not None:
                        rows[row, units] = value
            columns = (units.unsqueeze(1) * layer.span + torch.arange(layer.span, device=units.device)).flatten()
            out = self.trainee.param_rows(f"{layer.consumer}.weight")[row]
            if next_bias_shift is not None and f"{layer.consumer}.bias" in names:
                w = out[:, columns].reshape(out.shape[0], len(units), -1).sum(2)  # [out, units]
                self.trainee.param_rows(f"{layer.consumer}.bias")[row] += (w * next_bias_shift[row, units]).sum(1)
            out[:, columns] = 0
            self._zero_state(opt, f"{layer.consumer}.weight", row, (slice(None), columns))
        return n

    def _fresh(self, row: int, layer: UnitLayer, seed: int) -> dict[str, torch.Tensor]:
        """A new draw of the producer layer's own initialisation (its ``reset_parameters``)."""
        module = self.trainee.module_of(row).get_submodule(layer.producer)
        fresh = copy.deepcopy(module)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh.reset_parameters()
        return {n: p.detach() for n, p in fresh.named_parameters()}

    def _zero_state(self, opt, name: str, row: int, index: tuple) -> None:
        """Zero the entries ``index`` of row ``row`` in every per-entry state tensor the optimiser holds
        for ``name`` (momentum, Adam's moments, a per-entry step count); a per-tensor step count stays."""
        leaf = self.trainee.leaf(name)
        state = getattr(opt, "state", {}).get(leaf)
        if not state:
            return
        for value in state.values():
            if torch.is_tensor(value) and value.shape == leaf.shape:
                rows = value if self.trainee.stacked else value.unsqueeze(0)
                rows[row][index] = 0



class Interventions(Hook):
    """A run's interventions as one hook of the loop: each one's statistics recorded while the trainee's
    forward runs in training, on the steps its window covers only, and each called after every
    ``every``-th optimiser step with the statistics, the weights and the optimiser."""

    def __init__(self, bound: Sequence[BoundIntervention]):
        self.bound = list(bound)
        self.needs = [INTERVENTIONS[b.name].needs_for(b.options) for b in self.bound]
        self.steps = 0

    def start(self, trainee, seeds: Sequence[int]) -> None:
        """Find the unit layers (where an intervention works on units) and install the recorder."""
        super().start(trainee, seeds)
        self.seeds = list(seeds)  # per row of the trainee
        self.layers = unit_layers(trainee.models()[0]) if any(n.units for n in self.needs) else []
        self.by_activation = {layer.activation: k for k, layer in enumerate(self.layers)}
        self.recorders = [Recorder(self.layers, needs) for needs in self.needs]
        self.resetter = UnitResetter(trainee, self.layers)
        self.resets = [0] * len(self.seeds)  # units reset per row, for metrics.json
        self.device = next(iter(trainee.named_params().values())).device
        self._index_rows()
        self._plan()
        trainee.set_recorder(self.record, set(self.by_activation) if any(n.stats for n in self.needs) else set())

    @property
    def per_entry_step(self) -> bool:
        """Whether an intervention asks the run's Adam for per-entry step counts."""
        return any(needs.per_entry_step for needs in self.needs)

    def configure_optimizer(self, opt):
        """Mark every parameter group for per-entry Adam steps where an intervention asks for them
        (``optim.adam_step``); otherwise leave the optimiser as it is. Returns it."""
        if self.per_entry_step:
            for group in opt.param_groups:
                group["per_entry_step"] = True
        return opt

    def _index_rows(self) -> None:
        """Each intervention's rows as an index tensor (None: every row)."""
        self.indices = [None if b.rows is None else torch.tensor(b.rows, dtype=torch.long, device=self.device)
                        for b in self.bound]

    def _plan(self) -> None:
        """The recorders that record the next step's batch (with the rows they record)."""
        step = self.steps + 1
        self._active = [(r, index) for b, needs, r, index in zip(self.bound, self.needs, self.recorders, self.indices)
                        if needs.stats and b.rows != [] and (needs.window == "since_last_call" or step % b.every == 0)]

    def record(self, activation: str, pre: torch.Tensor, post: torch.Tensor) -> None:
        if not self._active:
            return
        k = self.by_activation[activation]
        for recorder, index in self._active:
            recorder.add(k, pre, post, self.trainee.stacked, index)

    def after_step(self, params: dict[str, torch.Tensor], optimizer, stats: StepStats) -> None:
        self.steps += 1
        for b, recorder, index in zip(self.bound, self.recorders, self.indices):
            if self.steps % b.every or b.rows == []:
                continue
            layers = [recorder.stats(k, layer, functools.partial(self._outgoing, k, index))
                      for k, layer in enumerate(self.layers)]
            samples = recorder.samples[0] if recorder.samples else 0
            # one of several sets of options sees only its rows: not the whole stack's weights and optimiser
            whole = index is None
            call = InterventionCall(layers, b.state, self.steps, stats.batch_size,
                                    functools.partial(self._reset, optimizer, f"{b.name}:{b.calls}", index), samples,
                                    params if whole else {}, optimizer if whole else None)
            INTERVENTIONS[b.name].run(call, **b.options)
            b.calls += 1
            recorder.clear()
        self._plan()

    def _outgoing(self, k: int, index: torch.Tensor | None) -> torch.Tensor:
        outgoing = self.resetter.outgoing(k)
        return outgoing if index is None else outgoing[index]

    def _reset(self, opt, tag: str, index: torch.Tensor | None, k: int, mask: torch.Tensor, **how) -> int:
        if not bool(mask.any()):  # most calls reset nothing: one check, no per-row work
            return 0
        if index is not None:  # the rows of one set of options: the same reset, in the stack's rows
            def in_stack(rows: torch.Tensor) -> torch.Tensor:
                return rows.new_zeros((len(self.seeds), rows.shape[1])).index_copy(0, index, rows)
            mask = in_stack(mask)
            if how.get("next_bias_shift") is not None:
                how["next_bias_shift"] = in_stack(how["next_bias_shift"])
        for row, n in enumerate(mask.sum(1).tolist()):
            self.resets[row] += n
        return self.resetter.reset(k, mask, opt, self.seeds, tag, **how)

    def seed_done(self, row: int, optimizer) -> dict[str, Any]:
        return {"units_reset": self.resets[row]}

    def keep(self, rows: list[int], index: torch.Tensor) -> None:
        self.seeds = [self.seeds[r] for r in rows]
        self.resets = [self.resets[r] for r in rows]
        for b, recorder in zip(self.bound, self.recorders):
            recorder.keep(b.keep(rows, index))
        self._index_rows()
        self._plan()

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "seeds": self.seeds, "resets": self.resets,
                "bound": [{"calls": b.calls, "state": b.state, "rows": b.rows} for b in self.bound],
                "recorders": [r.state_dict() for r in self.recorders]}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.steps, self.seeds, self.resets = saved["steps"], list(saved["seeds"]), list(saved["resets"])
        for b, state in zip(self.bound, saved["bound"]):
            b.calls, b.state, b.rows = state["calls"], state["state"], state.get("rows", b.rows)
        for r, state in zip(self.recorders, saved["recorders"]):
            r.load_state_dict(state)
        self._index_rows()
        self._plan()
