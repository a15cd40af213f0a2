"""Train several seeds of one condition at once: the cheap models (mlp, logreg) with stacked weights.

A small MLP on mnist1d does too little work per step to keep even one CPU core busy: the per-step cost is
mostly Python and kernel-launch overhead. Stacking the seeds' weights into ``[S, out, in]`` tensors and
running every linear layer as one batched matrix product (``torch.baddbmm``) pays that overhead once for
all S seeds.

Each seed gives what its own ``runner.run_training`` would give, within float tolerance (on CPU the
batched kernels have so far been bitwise equal to the single ones):

* its initial weights are built by ``runner.initial_model`` (its seed, its init strategy, its parent);
* its batch order comes from its own generator, ``manual_seed(2 * seed + 1)``, one ``randperm`` per epoch,
  over its own training indices (the split differs per seed);
* the loss that is back-propagated is the sum of the seeds' mean batch losses, so the gradient of each
  seed's slice of the stacked weights is exactly that seed's own gradient; SGD and Adam are elementwise,
  so one optimiser over the stacked tensors is S independent optimisers (Adam's step count is shared,
  and equal for all seeds still training);
* a seed that reaches the stop rule is evaluated, copied out into its own model, and dropped from the
  stack: the stacked weights and the optimiser state (momentum, Adam's moments) are sliced down to the
  seeds still training, so a finished seed is never touched again (no weight decay, no Adam drift);
* each seed is evaluated after every epoch on its own validation set.

Timing: ``epoch_time_s`` of a seed is the stacked epoch's training time divided by the number of seeds
trained in that epoch (the seeds' share of the shared work), and ``train_time_s`` is the sum of those.

No checkpointing: a stacked job of cheap models is short, and an interrupted one simply starts over.
"""
from __future__ import annotations

import copy
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .datasets import DeviceData, load_prepared
from .runner import initial_model, load_parent, run_metrics, setup_job, write_run
from .spec import RunSpec, short_hash
from .splits import Split, load_split
from .train import OPTIMIZERS, ResolvedEngine, TrainResult, _synchronize, resolve_engine

STACKABLE_ARCHS = ("mlp", "logreg")
METHODS = ("bmm", "vmap")
_ACTIVATIONS = {nn.Tanh: torch.tanh, nn.ReLU: torch.relu}


# -- preconditions ----------------------------------------------------------------------------------------

def _seedless(spec: RunSpec) -> dict:
    """The spec's identity with the seed left out, its parent's (recursively) likewise."""
    d = spec.canonical()
    d.pop("seed")
    d["parent"] = None if spec.parent is None else _seedless(spec.parent)
    return d


def check_stackable(specs: Sequence[RunSpec]) -> None:
    """Raise ValueError unless ``specs`` are one condition at distinct seeds with a stackable model."""
    if not specs:
        raise ValueError("stacked training needs at least one spec")
    first = specs[0]
    if first.model.arch not in STACKABLE_ARCHS:
        raise ValueError(f"model.arch: stacked training supports {STACKABLE_ARCHS}, got {first.model.arch!r}")
    reference = _seedless(first)
    for spec in specs[1:]:
        if _seedless(spec) != reference or spec.engine != first.engine:
            diff = sorted(k for k in reference if _seedless(spec).get(k) != reference[k])
            raise ValueError(f"stacked specs must differ only in their seed: {spec.name} differs from "
                             f"{first.name} in {diff}")
    if first.engine is not None and first.engine.compile:
        raise ValueError("engine.compile: stacked training runs its own batched forward and does not compile")
    seeds = [s.seed for s in specs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"stacked specs must have distinct seeds, got {seeds}")


def stackable(spec: RunSpec) -> bool:
    return spec.model.arch in STACKABLE_ARCHS and not spec.engine.compile


def plan_stacks(specs: Sequence[RunSpec], is_done: Callable[[RunSpec], bool] = lambda spec: False,
                min_seeds: int = 2) -> dict[str, list[RunSpec]]:
    """Group the runs still to do into stacks: the stackable runs of one condition at distinct seeds.

    Runs already done (``is_done``) are left out, so a seed added to the config later stacks only the
    new seed's runs (or, being alone, trains as a single run) and never retrains the others. A condition
    with fewer than ``min_seeds`` runs to do gets no stack. Returns ``{stack name: specs by seed}``; the
    name is readable and unique through a hash of the condition and the seeds.
    """
    groups: dict[str, list[RunSpec]] = {}
    for spec in specs:
        if stackable(spec) and not is_done(spec):
            groups.setdefault(_condition_key(spec), []).append(spec)
    stacks = {}
    for members in groups.values():
        members = sorted({s.seed: s for s in members}.values(), key=lambda s: s.seed)
        if len(members) < min_seeds:
            continue
        first = members[0]
        digest = short_hash({"condition": _seedless(first), "seeds": [s.seed for s in members]}, 10)
        stacks[f"{first.condition_label}_x{len(members)}_{digest}"] = members
    return stacks


def _condition_key(spec: RunSpec) -> str:
    return short_hash({"condition": _seedless(spec), "engine": spec.engine.__dict__}, 16)


# -- the stacked model ------------------------------------------------------------------------------------

def _layers(model: nn.Module) -> list[tuple]:
    """The model as a list of ops the batched forward runs: only Flatten, Linear, Tanh and ReLU."""
    if not isinstance(model, nn.Sequential):
        raise ValueError(f"stacked training needs an nn.Sequential model, got {type(model).__name__}")
    ops: list[tuple] = []
    for name, layer in model.named_children():
        if isinstance(layer, nn.Flatten) and layer.start_dim == 1 and layer.end_dim == -1:
            ops.append(("flatten",))
        elif isinstance(layer, nn.Linear):
            ops.append(("linear", f"{name}.weight", None if layer.bias is None else f"{name}.bias"))
        elif type(layer) in _ACTIVATIONS:
            ops.append(("act", _ACTIVATIONS[type(layer)]))
        else:
            raise ValueError(f"stacked training cannot batch layer {name}: {layer!r}")
    if any(True for _ in model.buffers()):
        raise ValueError("stacked training does not support models with buffers")
    return ops


def _bmm_forward(ops: list[tuple]) -> Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]:
    """Hand-written batched forward: x [S, B, ...] -> logits [S, B, C], one baddbmm per linear layer."""
    def forward(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        h = x
        for op in ops:
            if op[0] == "flatten":
                h = h.flatten(2)
            elif op[0] == "linear":
                w = params[op[1]].transpose(1, 2)
                h = torch.bmm(h, w) if op[2] is None else torch.baddbmm(params[op[2]].unsqueeze(1), h, w)
            else:
                h = op[1](h)
        return h
    return forward


def _vmap_forward(model: nn.Module) -> Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]:
    """The same through torch.func: vmap over functional_call of a weightless copy of the model."""
    base = copy.deepcopy(model).to("meta")

    def one(params, x):
        return torch.func.functional_call(base, params, (x,))
    return torch.vmap(one, in_dims=(0, 0))


# -- the loop ---------------------------------------------------------------------------------------------

def _train_epoch(forward, params: dict[str, torch.Tensor], opt: torch.optim.Optimizer, x: torch.Tensor,
                 y: torch.Tensor, order: torch.Tensor, batch_size: int,
                 resolved: ResolvedEngine) -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch of every stacked seed; ``order`` [S, n] holds each seed's batch order as indices into
    (x, y). Returns per-seed summed losses and correct counts as device tensors [S]."""
    s, n = order.shape
    loss_sum = torch.zeros(s, device=x.device)
    correct = torch.zeros(s, device=x.device, dtype=torch.long)
    for start in range(0, n, batch_size):
        idx = order[:, start:start + batch_size]
        xb, yb = x[idx], y[idx]  # [S, B, ...], [S, B]
        with resolved.context(x.device):
            logits = forward(params, xb).float()
        losses = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none").view(s, -1).mean(1)
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()  # d(sum)/d(slice s) = d(loss s)/d(slice s): each seed's own gradient
        opt.step()
        loss_sum += losses.detach() * idx.shape[1]
        correct += (logits.detach().argmax(-1) == yb).sum(1)
    return loss_sum, correct


@torch.no_grad()
def _evaluate(forward, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, val_idx: torch.Tensor,
              batch_size: int, resolved: ResolvedEngine) -> tuple[list[float], list[float]]:
    """Per-seed mean cross-entropy and accuracy, each seed on its own indices ``val_idx[s]``."""
    s, n = val_idx.shape
    loss_sum = torch.zeros(s, device=x.device)
    correct = torch.zeros(s, device=x.device, dtype=torch.long)
    for start in range(0, n, batch_size):
        idx = val_idx[:, start:start + batch_size]
        yb = y[idx]
        with resolved.context(x.device):
            logits = forward(params, x[idx]).float()
        loss_sum += F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none").view(s, -1).sum(1)
        correct += (logits.argmax(-1) == yb).sum(1)
    n = max(n, 1)
    return [v / n for v in loss_sum.tolist()], [c / n for c in correct.tolist()]


def _keep_rows(params: dict[str, torch.Tensor], opt: torch.optim.Optimizer, keep: torch.Tensor,
               make_opt: Callable[[list[torch.Tensor]], torch.optim.Optimizer]):
    """Drop finished seeds: new leaf tensors holding rows ``keep``, and an optimiser whose per-parameter
    state (momentum buffers, Adam's moments) is sliced the same way; scalar state (Adam's step) is kept."""
    state = opt.state_dict()
    kept = {k: v.detach()[keep].clone().requires_grad_(True) for k, v in params.items()}
    for per_param in state["state"].values():
        for key, value in per_param.items():
            if torch.is_tensor(value) and value.dim() > 0:
                per_param[key] = value[keep]
    new_opt = make_opt(list(kept.values()))
    new_opt.load_state_dict(state)
    return kept, new_opt


def run_training_stacked(specs: Sequence[RunSpec], data: DeviceData, splits: Sequence[Split],
                         parent_states: Sequence[dict | None], *, method: str = "bmm",
                         eval_batch_size: int = 4096, log: Callable[[str], None] | None = print,
                         log_every_s: float = 10.0) -> list[tuple[nn.Module, TrainResult, dict]]:
    """Train ``specs`` (one condition, distinct seeds, mlp or logreg) together; ``splits[i]`` and
    ``parent_states[i]`` belong to ``specs[i]``. Returns, per spec and in order, what
    ``runner.run_training`` returns for it: (model, TrainResult, metrics).

    ``method``: "bmm" (hand-written batched matrix products, the default: faster on CPU) or "vmap"
    (``torch.vmap`` over ``torch.func.functional_call``). See the module docstring for what is shared.
    """
    check_stackable(specs)
    if not len(specs) == len(splits) == len(parent_states):
        raise ValueError(f"got {len(specs)} specs, {len(splits)} splits and {len(parent_states)} parent states")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    spec0 = specs[0]
    device = data.x_train.device
    train_idx = [split.train_indices(spec.train_fraction) for spec, split in zip(specs, splits)]
    val_idx = [split.validation for split in splits]
    if len({len(t) for t in train_idx}) != 1 or len({len(v) for v in val_idx}) != 1:
        raise ValueError(f"stacked seeds need equal set sizes; n_train {[len(t) for t in train_idx]}, "
                         f"n_val {[len(v) for v in val_idx]}")
    n, n_val = len(train_idx[0]), len(val_idx[0])
    train_idx_all = torch.stack(train_idx).to(device)  # [S, n] indices into data.x_train
    val_idx_all = torch.stack(val_idx).to(device)

    models = [initial_model(spec, data.input_shape, data.num_classes, parent, device)
              for spec, parent in zip(specs, parent_states)]
    # precision as a single run would have it; compile does not apply (check_stackable refuses it)
    resolved = resolve_engine(spec0.engine, device, models[0])
    ops = _layers(models[0])
    forward = _bmm_forward(ops) if method == "bmm" else _vmap_forward(models[0])
    params, _ = torch.func.stack_module_state(models)  # {name: [S, ...]} leaves, one row per seed

    def make_opt(tensors):
        return OPTIMIZERS[spec0.optimizer.name](tensors, spec0.optimizer)

    opt = make_opt(list(params.values()))
    gens = [torch.Generator().manual_seed(2 * spec.seed + 1) for spec in specs]
    stop = spec0.stop
    active = list(range(len(specs)))  # positions in specs of the stacked rows, in row order
    histories: list[list[dict[str, float]]] = [[] for _ in specs]
    stopped_by = [stop.cap_reason] * len(specs)
    train_time = [0.0] * len(specs)
    last_log = time.monotonic()

    for epoch in range(stop.max_epochs):
        t0 = time.perf_counter()
        perms = torch.stack([torch.randperm(n, generator=gens[i]) for i in active]).to(device, non_blocking=True)
        order = torch.gather(train_idx_all[active], 1, perms)  # each seed's batch order, as data indices
        loss_sum, correct = _train_epoch(forward, params, opt, data.x_train, data.y_train, order, spec0.batch_size,
                                       resolved)
        _synchronize(device)
        epoch_time = (time.perf_counter() - t0) / len(active)

        val_loss, val_acc = _evaluate(forward, params, data.x_train, data.y_train, val_idx_all[active],
                                      eval_batch_size, resolved)
        done: list[int] = []
        for row, (i, ls, c) in enumerate(zip(active, loss_sum.tolist(), correct.tolist())):
            train_time[i] += epoch_time
            record = {"epoch": epoch + 1, "train_loss": ls / n, "train_acc": c / n, "val_loss": val_loss[row],
                      "val_acc": val_acc[row], "epoch_time_s": epoch_time, "samples_seen": n * (epoch + 1)}
            histories[i].append(record)
            if stop.reached(record["train_acc"]):
                stopped_by[i] = "threshold"
            if stopped_by[i] == "threshold" or epoch + 1 == stop.max_epochs:
                done.append(row)
                with torch.no_grad():
                    for name, p in models[i].named_parameters():
                        p.copy_(params[name][row])
                if log:
                    log(f"[seed {specs[i].seed}] done after epoch {epoch + 1} ({stopped_by[i]}): "
                        f"train_acc {record['train_acc']:.4f}  val_acc {record['val_acc']:.4f}")

        now = time.monotonic()
        if log and now - last_log >= log_every_s:
            log(f"epoch {epoch + 1}/{stop.max_epochs}: {len(active)} seeds training, train_acc "
                + " ".join(f"{histories[i][-1]['train_acc']:.4f}" for i in active))
            last_log = now
        if done:
            keep_rows = [row for row in range(len(active)) if row not in done]
            active = [active[row] for row in keep_rows]
            if not active:
                break
            params, opt = _keep_rows(params, opt, torch.tensor(keep_rows, device=device), make_opt)

    out = []
    for i, spec in enumerate(specs):
        result = TrainResult(history=histories[i], stopped_by=stopped_by[i], train_time_s=train_time[i],
                             engine=resolved)
        out.append((models[i], result, run_metrics(spec, result, models[i], n, n_val, device)))
    return out


# -- files to files ---------------------------------------------------------------------------------------

def execute_runs_stacked(specs: Sequence[RunSpec], data_path, split_paths: Sequence, out_dirs: Sequence,
                         parent_model_paths: Sequence | None = None, *, device: str = "auto",
                         threads: int | None = None, method: str = "bmm",
                         log: Callable[[str], None] | None = None) -> list[dict]:
    """``runner.execute_run`` for several seeds at once: each run's directory gets the same files
    (``runner.RUN_FILES``) a single ``execute_run`` writes. Returns the metrics, in order."""
    started = time.time()
    if parent_model_paths is None:
        parent_model_paths = [None] * len(specs)
    if not len(specs) == len(split_paths) == len(out_dirs) == len(parent_model_paths):
        raise ValueError("specs, split_paths, out_dirs and parent_model_paths must have equal lengths")
    check_stackable(specs)
    if log is None:
        def log(msg: str) -> None:
            print(f"[stacked {len(specs)} seeds] {msg}", file=sys.stderr, flush=True)
    dev = setup_job(device, threads, log)
    data = load_prepared(data_path, dev)
    splits = [load_split(p) for p in split_paths]
    parents = [load_parent(s, p, dev) for s, p in zip(specs, parent_model_paths)]
    outputs = run_training_stacked(specs, data, splits, parents, method=method, log=log)
    wall = time.time() - started
    all_metrics = []
    for spec, out_dir, (model, result, metrics) in zip(specs, out_dirs, outputs):
        metrics["wall_time_s"] = wall  # the stacked job's wall time, shared by its runs
        metrics["threads"] = torch.get_num_threads()
        metrics["stacked_seeds"] = len(specs)
        write_run(spec, Path(out_dir), model, result, metrics)
        all_metrics.append(metrics)
    log(f"done: {len(specs)} runs in {wall:.1f}s wall, "
        f"{sum(m['train_time_s'] for m in all_metrics):.1f}s training in all")
    return all_metrics
