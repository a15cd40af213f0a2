"""The training loop: one training step, one epoch and one loop for every kind of run.

* ``train_epoch``: one pass in batches; the summed objective (``warmstart.engine.objective``) is
  back-propagated, so each seed's slice of stacked weights gets exactly its own gradient; the hooks'
  ``after_step`` run after each optimiser step;
* ``epoch_record``: the per-epoch row of ``epochs.parquet``, with the hooks' measured columns (probes);
* ``fit``: epochs until each seed's stop rule fires; a finished seed is written out of the stack and its
  rows dropped from the trainee, the optimiser and every hook (``keep``); where it stands is one
  ``LoopProgress`` (``warmstart.engine.checkpoint``), saved every ``checkpoint_every_s`` and restored by a
  resumed job. Everything that acts during training is a hook (``warmstart.engine.hooks``).

The hot loop is lean on purpose: the data already live on the device, a batch is an index slice of a
seeded permutation, and losses and accuracies accumulate in device tensors that are read once per epoch,
so there is no per-step host synchronisation and no per-sample Python.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Collection, Sequence

import torch
from torch import nn

from warmstart.components.optimizers import build_optimizer
from warmstart.components.probes import BoundProbe, ProbeContext
from warmstart.components.terms import BoundTerm
from warmstart.core.spec import EngineSpec, OptimizerSpec, StopSpec
from warmstart.engine.checkpoint import Checkpointing, LoopProgress, save_on_signal
from warmstart.engine.hooks import (Anchors, ExportAt, Hook, KeepOptimizer, Probes, StepStats, TermHook,
                                    overrides)
from warmstart.engine.intervention_hook import Interventions
from warmstart.engine.objective import batch_objective, evaluate_rows, summed_cross_entropy
from warmstart.engine.precision import ResolvedEngine, resolve_engine
from warmstart.engine.trainees import SingleModel, keep_rows


@dataclass
class TrainData:
    """Where every seed's samples are: all of them on the device, each seed's sets as index rows."""

    x: torch.Tensor
    y: torch.Tensor
    train_idx: torch.Tensor  # [S, n]
    val_idx: torch.Tensor  # [S, m]
    subsets: dict[str, torch.Tensor] = field(default_factory=dict)  # named [S, k] index rows, for probes

    def rows(self, index: torch.Tensor) -> "TrainData":
        return TrainData(self.x, self.y, self.train_idx[index], self.val_idx[index], keep_rows(self.subsets, index))


@dataclass
class TrainResult:
    history: list[dict[str, float]]
    stopped_by: str  # "threshold" (reached the training-accuracy threshold), "max_epochs" or "epochs"
    train_time_s: float  # training only: evaluation and probes excluded
    engine: ResolvedEngine = field(default_factory=ResolvedEngine)
    optimizer_state: dict | None = None  # the final optimiser state, when asked to keep it
    probe_columns: list[list[str]] = field(default_factory=list)  # per probe of the run: its columns
    units_reset: int = 0  # units the run's interventions reset

    @property
    def converged(self) -> bool:
        return self.stopped_by == "threshold"

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1]


@dataclass(frozen=True)
class LoopSettings:
    """How ``fit`` trains and reports (its keyword arguments besides the hooks, resume and start state)."""

    batch_size: int
    stop: StopSpec
    resolved: ResolvedEngine = ResolvedEngine()
    eval_batch_size: int = 4096
    log: Callable[[str], None] | None = print
    log_every_s: float = 10.0
    on_epoch: Callable[[int, dict[str, float]], None] | None = None  # (seed position, its epoch record)
    row_names: tuple[str, ...] = ()  # what the log calls each row (default: its seed); a wide stack's runs


def run_hooks(*, terms: Sequence[BoundTerm] = (), probes: Sequence[BoundProbe] = (), interventions: Sequence = (),
              anchors: dict | None = None, export_at: Collection[int] = (), keep_optimizer: bool = False,
              ) -> list[Hook]:
    """The hooks of a run (or stack) with these terms, probes, interventions (``BoundIntervention``s) and
    anchors (name -> [S, ...] tensors), in the order the loop calls them: the loss terms in the run's
    order (its objective is cross-entropy + term 1 + term 2 ...), then the probes, the interventions and
    what keeps weights (``export_at``: epochs after which each seed's module holds its row) or the final
    optimiser state (``keep_optimizer``)."""
    anchors = {} if anchors is None else anchors
    hooks: list[Hook] = [Anchors(anchors)] if anchors else []
    hooks += [TermHook(term, anchors) for term in terms]
    hooks += [Probes(probes, anchors)] if probes else []
    hooks += [Interventions(interventions)] if interventions else []
    hooks += [ExportAt(export_at)] if export_at else []
    return hooks + ([KeepOptimizer()] if keep_optimizer else [])


def train_epoch(trainee, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, order: torch.Tensor,
                batch_size: int, hooks: Sequence[Hook] = (), resolved: ResolvedEngine = ResolvedEngine(),
                restart_every: int | None = None) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, int]]:
    """One pass of every seed over its batch order ``order`` [S, n] (indices into x, y). Returns each
    seed's summed cross-entropy and correct count as device tensors [S] (read them once, after the epoch:
    reading per step would synchronise the host every step), and the correct count [S] and sample count
    since the counts last restarted (every ``restart_every`` batches; None: the whole epoch), which the
    stop rule reads (``StopSpec.restart_every``). The hooks' ``after_step`` run after each optimiser step."""
    stepping = [hook for hook in hooks if overrides(hook, "after_step")]
    s, n = order.shape
    loss_sum = torch.zeros(s, device=x.device)
    correct = torch.zeros(s, device=x.device, dtype=torch.long)
    restarted, restarted_at = correct.clone(), 0
    for batch, start in enumerate(range(0, n, batch_size)):
        if restart_every and batch % restart_every == 0:
            restarted, restarted_at = correct.clone(), start
        if s == 1:  # a 1-D gather is cheaper; the views give the same [1, B, ...] shapes
            idx = order[0, start:start + batch_size]
            xb, yb = x[idx].unsqueeze(0), y[idx].unsqueeze(0)
        else:
            idx = order[:, start:start + batch_size]
            xb, yb = x[idx], y[idx]  # [S, B, ...], [S, B]
        objective, ce, logits = batch_objective(trainee, xb, yb, hooks, resolved)
        opt.zero_grad(set_to_none=True)
        objective.sum().backward()  # d(sum)/d(row s) = d(objective s)/d(row s): each seed's own gradient
        opt.step()
        if stepping:
            params, stats = trainee.named_params(), StepStats(yb.shape[1])
            for hook in stepping:
                hook.after_step(params, opt, stats)
        loss_sum += ce.detach() * yb.shape[1]
        correct += (logits.detach().argmax(-1) == yb).sum(1)
    return loss_sum, correct, (correct - restarted, n - restarted_at)


def epoch_record(epoch: int, loss_sum: float, correct: int, n: int, val_loss: float, val_acc: float,
                 epoch_time_s: float, samples_seen: int, measured: dict[str, float]) -> dict[str, float]:
    """The one definition of a row of ``epochs.parquet`` (EPOCH_FIELDS, then the probes' columns)."""
    return {"epoch": epoch, "train_loss": loss_sum / n, "train_acc": correct / n, "val_loss": val_loss,
            "val_acc": val_acc, "epoch_time_s": epoch_time_s, "samples_seen": samples_seen, **measured}


class _Training:
    """What ``fit`` holds between epochs: the trainee, its optimiser and hooks, the data of the rows
    still training (``subset``) and where the loop stands (``loop``)."""

    def __init__(self, trainee, data: TrainData, seeds: Sequence[int], hooks: list[Hook], settings: LoopSettings):
        self.trainee, self.data, self.seeds, self.hooks, self.settings = trainee, data, list(seeds), hooks, settings
        self.subset = data
        self.loop = LoopProgress.start(seeds, settings.stop)
        for hook in hooks:
            hook.start(trainee, seeds)

    def configured(self, opt):
        for hook in self.hooks:
            opt = hook.configure_optimizer(opt)
        return opt

    def build_optimizer(self, optimizers: Sequence[OptimizerSpec], start_state: dict | None) -> None:
        """The optimiser of the rows still training (``optimizers``: each seed's spec; they differ at most
        in what rows may, ``optimizers.row_settings``), as ``make_opt`` builds it again when rows drop."""
        # the module behind the rows and whether they are stacked: what a per-layer optimiser (Muon) needs
        model, stacked = self.trainee.models()[0], self.trainee.stacked
        lrs = [o.lr for o in optimizers]  # build_optimizer steps rows that all share the first's rate as one
        self.make_opt = lambda params: self.configured(build_optimizer(
            params, optimizers[0], model=model, stacked=stacked, row_lrs=[lrs[i] for i in self.loop.active]))
        self.opt = self.make_opt(self.trainee.optimizer_params())
        if start_state is not None:
            # a copy: load_state_dict keeps same-device tensors as they are, and the steps update them in place
            self.opt.load_state_dict(copy.deepcopy(start_state))
            self.opt = self.configured(self.opt)

    def resume(self, checkpointing: Checkpointing) -> None:
        device = self.data.x.device
        saved = LoopProgress.load(checkpointing, device)
        if saved is None:
            return
        self.opt = self.loop.restore(saved, self.trainee, self.make_opt, self.hooks)
        self.subset = self.data.rows(torch.tensor(self.loop.active, device=device))
        if self.settings.log:
            self.settings.log(f"resumed from {checkpointing.path} after epoch {self.loop.epoch}")

    def epoch(self, epoch: int) -> list[int]:
        """Train the seeds still training for one epoch, evaluate, measure and record it; returns the rows
        that are done (their stop rule fired, or the cap)."""
        s, loop, x, y = self.settings, self.loop, self.data.x, self.data.y
        active, n = loop.active, self.data.train_idx.shape[1]
        t0 = time.perf_counter()
        perms = torch.stack([torch.randperm(n, generator=loop.generators[i]) for i in active]).to(
            x.device, non_blocking=True)
        order = torch.gather(self.subset.train_idx, 1, perms)
        loss_sum, correct, (recent, n_recent) = train_epoch(self.trainee, self.opt, x, y, order, s.batch_size,
                                                            self.hooks, s.resolved, s.stop.restart_every)
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        epoch_time = (time.perf_counter() - t0) / len(active)

        loss_sum, correct, recent = loss_sum.tolist(), correct.tolist(), recent.tolist()
        reached = [s.stop.reached(recent[row] / n_recent) for row in range(len(active))]
        done = [row for row in range(len(active)) if reached[row] or epoch + 1 == s.stop.max_epochs]
        # a row's validation set is evaluated after its last epoch; after the others only when the run asks
        # for learning curves (the ``validation`` probe: its columns fill the record's val_loss, val_acc)
        final_val = [v.tolist() for v in self.evaluate(self.subset.val_idx)] if done else None
        measured = self.measure()
        for row, i in enumerate(active):
            loop.train_time[i] += epoch_time
            val = (final_val[0][row], final_val[1][row]) if row in done else (float("nan"), float("nan"))
            record = epoch_record(epoch + 1, loss_sum[row], correct[row], n, *val, epoch_time, n * (epoch + 1),
                                  {k: v[row] for k, v in measured.items()})
            self.record(row, i, record, reached[row], row in done)
        return done

    def evaluate(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each active row's mean cross-entropy and accuracy [S] on its indices ``idx`` [S, k]."""
        s = self.settings
        return evaluate_rows(self.trainee, self.data.x, self.data.y, idx, s.eval_batch_size, s.resolved)

    def measure(self) -> dict[str, list[float]]:
        """Every measuring hook's columns (the probes') on the rows still training: [S] values each."""
        measuring = [hook for hook in self.hooks if overrides(hook, "measure")]
        if not measuring:
            return {}
        s, data = self.settings, self.data
        ctx = ProbeContext(model=self.trainee, x=data.x, y=data.y, anchors={},
                           subsets={"train": self.subset.train_idx, "val": self.subset.val_idx, **self.subset.subsets},
                           objective=summed_cross_entropy(self.trainee, data.x, data.y, s.resolved),
                           eval_batch_size=s.eval_batch_size, evaluate=self.evaluate)
        return {column: values for hook in measuring for column, values in hook.measure(ctx).items()}

    def record(self, row: int, i: int, record: dict[str, float], reached: bool, done: bool) -> None:
        """Seed position ``i`` (trainee row ``row``) has finished an epoch: keep its record; once done,
        write its weights into its module and keep what the hooks report for it."""
        loop = self.loop
        loop.histories[i].append(record)
        if reached:
            loop.stopped_by[i] = "threshold"
        for hook in self.hooks:
            hook.on_record(row, i, record)
        if self.settings.on_epoch:
            self.settings.on_epoch(i, record)
        if done:
            self.trainee.export(row)
            loop.outcomes[i] = {k: v for hook in self.hooks for k, v in hook.seed_done(row, self.opt).items()}
            if self.settings.log and len(self.seeds) > 1:
                name = self.settings.row_names[i] if self.settings.row_names else f"seed {self.seeds[i]}"
                self.settings.log(f"[{name}] done after epoch {record['epoch']} ({loop.stopped_by[i]}): "
                                  f"train_acc {record['train_acc']:.4f}  val_acc {record['val_acc']:.4f}")

    def drop(self, done: list[int]) -> None:
        """The seeds of rows ``done`` are finished: keep the other rows everywhere (trainee, optimiser,
        hooks, data)."""
        active = self.loop.active
        rows = [row for row in range(len(active)) if row not in done]
        for row in done:
            self.loop.finished[active[row]] = None  # exported: its module holds the final weights
        self.loop.active = [active[row] for row in rows]
        if not self.loop.active:
            return
        index = torch.tensor(rows, device=self.data.x.device)
        state = self.opt.state_dict()
        state["state"] = {k: keep_rows(per_param, index) for k, per_param in state["state"].items()}
        for group in state["param_groups"]:
            if isinstance(group["lr"], list):  # per-row learning rates
                group["lr"] = [group["lr"][row] for row in rows]
        self.trainee.keep(rows, index)
        self.opt = self.make_opt(self.trainee.optimizer_params())
        self.opt.load_state_dict(state)
        for hook in self.hooks:
            hook.keep(rows, index)
        self.subset = self.subset.rows(index)

    def log_progress(self, epoch: int) -> None:
        loop = self.loop
        def shown(record):  # validation only where it was measured (the last epoch, or every with curves)
            val = "" if math.isnan(record["val_acc"]) else f" val_acc {record['val_acc']:.4f}"
            return f"train_acc {record['train_acc']:.4f}{val}"
        self.settings.log(f"epoch {epoch + 1}/{self.settings.stop.max_epochs}: " + "  ".join(
            shown(loop.histories[i][-1]) for i in loop.active) + f"  train_time {max(loop.train_time):.1f}s")

    def results(self) -> list[TrainResult]:
        loop = self.loop
        return [TrainResult(loop.histories[i], loop.stopped_by[i], loop.train_time[i], self.settings.resolved,
                            **loop.outcomes.get(i, {})) for i in range(len(self.seeds))]


def fit(trainee, optimizer: OptimizerSpec | Sequence[OptimizerSpec], data: TrainData, seeds: Sequence[int], *,
        hooks: Sequence[Hook] = (), checkpointing: Checkpointing | None = None, optimizer_state: dict | None = None,
        **settings) -> list[TrainResult]:
    """Train every seed of ``trainee`` until its stop rule fires; returns one TrainResult per seed, in order.
    ``optimizer``: the seeds' optimiser, or one spec per seed when the rows of a stack differ in their
    learning rate (``optimizers.row_settings``: each row steps with its own).
    ``settings``: ``LoopSettings`` (``batch_size`` and ``stop`` required); ``optimizer_state``: the state
    the optimiser starts from (a warm start that keeps its parent's); ``checkpointing``: resume from and
    save to a resume file.

    Seed i's batch order comes from its own generator, ``manual_seed(batch_order_seed(seeds[i]))``, one
    ``randperm`` per epoch over its own training indices, so it depends only on the seed, not on what else
    is stacked. Training accuracy is the running accuracy over the epoch in train mode; the ``converged``
    stop rule compares it (or, with ``stop.restart_every``, its counts since they last restarted, as the
    authors' code does every 10 batches) with the threshold. ``epoch_time_s`` of a seed is the epoch's
    training time divided by the seeds trained in it (its share of the shared work); the hooks'
    ``after_step`` run inside it."""
    run = _Training(trainee, data, seeds, list(hooks), LoopSettings(**settings))
    run.build_optimizer([optimizer] * len(seeds) if isinstance(optimizer, OptimizerSpec) else list(optimizer),
                        optimizer_state)
    if checkpointing is not None:
        run.resume(checkpointing)
    stop, log = run.settings.stop, run.settings.log
    last_checkpoint = last_log = time.monotonic()
    trainee.train(True)
    with save_on_signal(checkpointing is not None) as signalled:
        for epoch in range(run.loop.epoch if run.loop.active else stop.max_epochs, stop.max_epochs):
            done = run.epoch(epoch)
            now = time.monotonic()
            if log and (now - last_log >= run.settings.log_every_s or (len(seeds) == 1 and done)):
                run.log_progress(epoch)
                last_log = now
            if done:
                run.drop(done)
                if not run.loop.active:
                    break
            if checkpointing is not None and (now - last_checkpoint >= checkpointing.every_s or signalled):
                run.loop.save(checkpointing, trainee, run.opt, run.hooks)
                last_checkpoint = now
                if signalled:  # a scheduler's preemption or time-limit warning: stop now, resume later
                    raise SystemExit(f"{signalled[0]}: saved resumable state after epoch {epoch + 1} to "
                                     f"{checkpointing.path}; the job resumes from it when it runs again")
    return run.results()


def train(model: nn.Module, optimizer: OptimizerSpec, x_train: torch.Tensor, y_train: torch.Tensor,
          x_val: torch.Tensor, y_val: torch.Tensor, *, seed: int, engine: EngineSpec | None = None,
          hooks: Sequence[Hook] = (), checkpointing: Checkpointing | None = None,
          on_epoch: Callable[[dict[str, float]], None] | None = None, **settings) -> TrainResult:
    """Train one ``model`` in place on (x_train, y_train), evaluating on (x_val, y_val): ``fit`` with one
    seed, for callers that hold the two sets as separate tensors (``settings``: ``LoopSettings``)."""
    x, y = torch.cat([x_train, x_val]), torch.cat([y_train, y_val])
    idx = torch.arange(len(x), device=x.device)
    data = TrainData(x, y, idx[:len(x_train)].unsqueeze(0), idx[len(x_train):].unsqueeze(0))
    resolved = resolve_engine(engine, x.device, model)
    hook = None if on_epoch is None else (lambda i, record: on_epoch(record))
    return fit(SingleModel(model, resolved), optimizer, data, [seed], hooks=hooks, checkpointing=checkpointing,
               resolved=resolved, on_epoch=hook, **settings)[0]
