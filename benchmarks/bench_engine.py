"""Engine vs reference loop, side by side in one process.

Reference: the data path of the authors' public code (JordanAsh/warm_start, run.py): a torchvision-style
Dataset over in-memory uint8 HWC images, ``Compose([ToTensor(), Normalize(0.5, 0.5)])`` applied per sample
through PIL, a ``DataLoader(batch_size=128, sampler=SubsetRandomSampler(indices))``, fp32, and per step:
batch to device, forward, cross-entropy, zero_grad, backward, step, ``loss.item()`` (and the correct count's
``.item()``, as that code does).

Engine: the project's path: the same uint8 images converted once to normalised float32 on the device
(as ``warmstart.components.datasets.load_prepared`` does), then ``warmstart.engine.loop.train_epoch`` on a permutation, with
the loss and accuracy read once at the end.

Both train a fresh copy of the same initialised model with a fresh optimiser on the same data, the same
number of steps of batch 128; both are warmed up first; the two alternate within this process for
``--reps`` repetitions and the median samples/s of each is reported.

    python benchmarks/bench_engine.py                      # CPU, all cases
    python benchmarks/bench_engine.py --device cuda        # adds a bf16 + channels_last engine row
    python benchmarks/bench_engine.py --quick --cases mlp  # smoke run
"""
from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import datetime as dt
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, SubsetRandomSampler
from torchvision import transforms

from warmstart.components.models import build_model, count_parameters
from warmstart.core.spec import ModelSpec, OptimizerSpec
from warmstart.components.optimizers import build_optimizer
from warmstart.engine.loop import train_epoch
from warmstart.engine.precision import ResolvedEngine
from warmstart.engine.trainees import SingleModel

BATCH = 128
NUM_CLASSES = 10
# ResNet-18 (CIFAR form, width 64) costs about 3.3 GFLOP per 3x32x32 image forward + backward, so one
# epoch of 50,000 images is about 166 TFLOP (REFERENCE facts). The floor is that divided by peak FLOP/s.
RESNET64_EPOCH_FLOP = 166e12
EPOCH_IMAGES = 50_000
CSV_FIELDS = ("case", "device", "precision", "engine_samples_per_s", "reference_samples_per_s", "ratio",
              "steps", "batch_size", "reps", "optimizer", "threads", "num_workers")


@dataclass(frozen=True)
class Case:
    arch: str
    options: dict
    shape: tuple[int, int, int]
    steps: dict = field(default_factory=dict)  # per mode: "cpu", "cuda", "quick"


CASES: dict[str, Case] = {
    "mlp": Case("mlp", {}, (1, 28, 28), {"cpu": 200, "cuda": 400, "quick": 8}),
    "logreg": Case("logreg", {}, (1, 28, 28), {"cpu": 200, "cuda": 400, "quick": 8}),
    "resnet18_w16": Case("resnet18", {"width": 16}, (3, 32, 32), {"cpu": 12, "cuda": 100, "quick": 1}),
    "resnet18_w64": Case("resnet18", {"width": 64}, (3, 32, 32), {"cpu": 2, "cuda": 60, "quick": 1}),
}
QUICK_DEFAULT_CASES = ("mlp", "logreg", "resnet18_w16")  # width 64 only when named with --cases


# -- reference data path ------------------------------------------------------------------------------

class InMemoryImages(Dataset):
    """What torchvision's CIFAR10 class does: HWC uint8 numpy images and a list of int targets; every
    ``__getitem__`` makes a PIL image and applies the transform."""

    def __init__(self, data: np.ndarray, targets: list[int], transform):
        self.data, self.targets, self.transform = data, targets, transform

    def __getitem__(self, index):
        img, target = self.data[index], self.targets[index]
        img = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)  # 2-D uint8: mode "L"
        return self.transform(img), target

    def __len__(self):
        return len(self.data)


class WithIndex(Dataset):
    """The authors' ``BuildDataset``: returns (x, y, index)."""

    def __init__(self, base: Dataset):
        self.data = base

    def __getitem__(self, index):
        x, y = self.data[index]
        return x, y, index

    def __len__(self):
        return len(self.data)


def reference_loader(data: np.ndarray, targets: list[int], indices: np.ndarray, seed: int,
                     num_workers: int) -> DataLoader:
    c = data.shape[-1]
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,) * c, (0.5,) * c)])
    dataset = WithIndex(InMemoryImages(data, targets, transform))
    sampler = SubsetRandomSampler(indices.tolist(), generator=torch.Generator().manual_seed(seed))
    return DataLoader(dataset, batch_size=BATCH, sampler=sampler, shuffle=False, num_workers=num_workers)


def reference_epoch(model: nn.Module, opt: torch.optim.Optimizer, loader: DataLoader,
                    device: torch.device) -> tuple[float, float]:
    """The authors' ``train``: per-step host reads of the loss and the correct count."""
    model.train()
    total_loss, correct, total = 0.0, 0, 0
    for inputs, targets, _ in loader:
        inputs, targets = inputs.to(device), targets.to(device)
        opt.zero_grad()
        outputs = model(inputs)
        loss = F.cross_entropy(outputs, targets)
        loss.backward()
        opt.step()
        total_loss += loss.item()
        correct += outputs.max(1)[1].eq(targets).sum().item()
        total += targets.size(0)
    return total_loss, correct / max(total, 1)


def loader_only(loader: DataLoader, device: torch.device) -> int:
    """Iterate the reference loader and move batches to the device, with no model: the data path alone."""
    n = 0
    for inputs, targets, _ in loader:
        inputs, targets = inputs.to(device), targets.to(device)
        n += len(targets)
    return n


# -- engine path --------------------------------------------------------------------------------------

def to_device_normalised(x_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Once per run, as ``load_prepared`` does: uint8 to the device first, then (x/255 - 0.5)/0.5."""
    return x_u8.to(device).float().div_(255).sub_(0.5).div_(0.5)


# -- timing -------------------------------------------------------------------------------------------

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_peak_flops(device: torch.device, quick: bool) -> dict[str, float]:
    """Best-of-several large square matmul, FLOP/s: fp32 on CPU; fp32, tf32 and bf16 on CUDA."""
    def best(n: int, dtype: torch.dtype, reps: int) -> float:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        a @ b
        sync(device)
        rates = []
        for _ in range(reps):
            t0 = time.perf_counter()
            a @ b
            sync(device)
            rates.append(2 * n ** 3 / (time.perf_counter() - t0))
        return max(rates)

    if device.type == "cpu":
        n, reps = (1024, 2) if quick else (2048, 5)
        return {"fp32": best(n, torch.float32, reps), "bf16": best(n, torch.bfloat16, reps)}
    peaks, old = {}, torch.backends.cuda.matmul.allow_tf32
    try:
        n, reps = (4096, 3) if quick else (8192, 10)
        torch.backends.cuda.matmul.allow_tf32 = False
        peaks["fp32"] = best(n, torch.float32, reps)
        torch.backends.cuda.matmul.allow_tf32 = True
        peaks["tf32"] = best(n, torch.float32, reps)
        peaks["bf16"] = best(n, torch.bfloat16, reps)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    return peaks


@dataclass(frozen=True)
class Variant:
    """One engine configuration, as the library applies it (``train.ResolvedEngine``)."""

    precision: str = "fp32"  # "fp32" or "bf16"
    channels_last: bool = False
    compile: bool = False

    @property
    def key(self) -> str:
        return "+".join([self.precision] + ["cl"] * self.channels_last + ["compile"] * self.compile)

    @property
    def engine(self) -> ResolvedEngine:
        return ResolvedEngine(autocast=torch.bfloat16 if self.precision == "bf16" else None,
                              channels_last=self.channels_last, compile=self.compile)


def bench_case(name: str, case: Case, device: torch.device, steps: int, reps: int, warmup: int,
               opt_spec: OptimizerSpec, num_workers: int, variants: list[Variant], breakdown: bool,
               seed: int, log) -> list[dict]:
    n = steps * BATCH
    g = torch.Generator().manual_seed(seed)
    x_u8 = torch.randint(0, 256, (n, *case.shape), generator=g, dtype=torch.uint8)  # N, C, H, W
    y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    data_hwc = x_u8.permute(0, 2, 3, 1).contiguous().numpy()  # N, H, W, C as torchvision keeps CIFAR
    targets = y.tolist()

    torch.manual_seed(seed)
    base = build_model(ModelSpec(case.arch, case.options), case.shape, NUM_CLASSES)
    init_state = copy.deepcopy(base.state_dict())
    log(f"[{name}] {case.arch} {case.options or ''} input {case.shape}, {count_parameters(base):,} params, "
        f"{steps} steps x {BATCH} = {n} samples per timed pass, warm-up {warmup} steps, {reps} reps")

    t0 = time.perf_counter()
    x_dev = to_device_normalised(x_u8, device)
    y_dev = y.to(device)
    sync(device)
    setup_s = time.perf_counter() - t0
    indices = np.arange(n)
    warm_idx = indices[:warmup * BATCH]

    def fresh() -> tuple[nn.Module, torch.optim.Optimizer]:
        model = copy.deepcopy(base)
        model.load_state_dict(init_state)
        model.to(device)
        model.train()
        return model, build_optimizer(model, opt_spec)

    warmup_s: dict[str, list[float]] = {v.key: [] for v in variants}

    def run_engine(variant: Variant, rep: int) -> float:
        """The library's own path: SingleModel (memory format, compile) and train_epoch (autocast)."""
        model, opt = fresh()
        step_model = SingleModel(model, variant.engine)
        wperm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1000 + rep))
        t0 = time.perf_counter()
        train_epoch(step_model, opt, x_dev, y_dev, wperm[:warmup * BATCH].to(device).unsqueeze(0), BATCH,
                    resolved=variant.engine)
        sync(device)
        warmup_s[variant.key].append(time.perf_counter() - t0)  # includes compilation, if any
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + rep)).to(device)
        sync(device)
        t0 = time.perf_counter()
        loss_sum, correct, _ = train_epoch(step_model, opt, x_dev, y_dev, perm.unsqueeze(0), BATCH,
                                        resolved=variant.engine)
        loss_sum.item(), correct.item()  # read once, at the end
        sync(device)
        return n / (time.perf_counter() - t0)

    def run_reference(rep: int) -> float:
        model, opt = fresh()
        reference_epoch(model, opt, reference_loader(data_hwc, targets, warm_idx, seed + 1000 + rep, num_workers),
                        device)  # warm-up
        loader = reference_loader(data_hwc, targets, indices, seed + rep, num_workers)
        sync(device)
        t0 = time.perf_counter()
        reference_epoch(model, opt, loader, device)  # includes making the iterator, as every epoch does
        sync(device)
        return n / (time.perf_counter() - t0)

    eng: dict[str, list[float]] = {v.key: [] for v in variants}
    ref: list[float] = []
    for rep in range(reps):
        order = ["engine", "reference"] if rep % 2 == 0 else ["reference", "engine"]  # alternate the order too
        line = []
        for which in order:
            if which == "reference":
                ref.append(run_reference(rep))
                line.append(f"reference {ref[-1]:9.1f}")
            else:
                for v in variants:
                    eng[v.key].append(run_engine(v, rep))
                    line.append(f"engine[{v.key}] {eng[v.key][-1]:9.1f}")
        log(f"[{name}] rep {rep + 1}/{reps}: " + "  ".join(line) + "  samples/s")

    extra = {}
    if breakdown:
        # The reference data path alone (loader + transfer, no model), and the engine's compute share.
        rates = []
        for rep in range(max(1, min(reps, 3))):
            loader = reference_loader(data_hwc, targets, indices, seed + rep, num_workers)
            sync(device)
            t0 = time.perf_counter()
            loader_only(loader, device)
            sync(device)
            rates.append(n / (time.perf_counter() - t0))
        extra["loader_only_samples_per_s"] = statistics.median(rates)
        log(f"[{name}] breakdown: reference data path alone (no model) {extra['loader_only_samples_per_s']:.1f} "
            f"samples/s = {1e6 / extra['loader_only_samples_per_s']:.1f} us/sample; reference total "
            f"{1e6 / statistics.median(ref):.1f} us/sample; engine fp32 {1e6 / statistics.median(eng['fp32']):.1f} "
            f"us/sample")

    log(f"[{name}] engine one-off setup (uint8 -> normalised float32 on {device.type}): {setup_s * 1e3:.1f} ms, "
        "not in samples/s")
    rows = []
    ref_med = statistics.median(ref)
    for v in variants:
        eng_med = statistics.median(eng[v.key])
        if v.compile:
            # what compiling costs up front, against what it saves per sample afterwards
            plain = next((u for u in variants if u == Variant(v.precision, v.channels_last)), None)
            # the first pass compiles; later ones find the compiled graphs cached in this process
            extra["compile_s"] = round(warmup_s[v.key][0] - (
                statistics.median(warmup_s[plain.key]) if plain else 0.0), 2)
            if plain and eng_med > statistics.median(eng[plain.key]):
                saved_per_sample = 1 / statistics.median(eng[plain.key]) - 1 / eng_med
                extra["compile_pays_after_samples"] = round(extra["compile_s"] / saved_per_sample)
            else:
                extra["compile_pays_after_samples"] = None  # never: compiled is not faster
            log(f"[{name}] compile: {extra['compile_s']:.1f} s up front; pays after "
                f"{extra['compile_pays_after_samples'] or 'never (not faster)'} samples")
        rows.append({
            "case": name, "device": device.type, "precision": v.key,
            "engine_samples_per_s": round(eng_med, 1), "reference_samples_per_s": round(ref_med, 1),
            "ratio": round(eng_med / ref_med, 2), "steps": steps, "batch_size": BATCH, "reps": reps,
            "optimizer": opt_spec.name, "threads": torch.get_num_threads(), "num_workers": num_workers,
            **extra,
        })
    return rows


def format_table(rows: list[dict]) -> str:
    head = ("case", "device", "precision", "engine samples/s", "reference samples/s", "ratio")
    body = [(r["case"], r["device"], r["precision"], f"{r['engine_samples_per_s']:.1f}",
             f"{r['reference_samples_per_s']:.1f}", f"{r['ratio']:.2f}x") for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body])


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--cases", nargs="+", choices=sorted(CASES), default=None,
                   help="default: all four (with --quick: all but resnet18_w64)")
    p.add_argument("--reps", type=int, default=None, help="alternating repetitions (default 5; 1 with --quick)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per pass, all cases (default per case)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps per pass (default 2; 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="tiny step counts: a smoke run")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--num-workers", type=int, default=0, help="reference DataLoader workers (default 0)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--no-bf16", action="store_true", help="CUDA: skip the bf16 + channels_last engine row")
    p.add_argument("--bf16", action="store_true",
                   help="CPU: add a bf16-autocast engine row (to decide warmstart.core.hardware.CPU_BF16)")
    p.add_argument("--compile", action="store_true",
                   help="add a torch.compile engine row and report its compile time and break-even point")
    p.add_argument("--breakdown", action="store_true",
                   help="also time the reference data path alone (loader + transfer, no model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="CSV path (default benchmarks/results-<device>.csv)")
    return p.parse_args(argv)


def main(argv=None, log=print) -> list[dict]:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: CUDA is not available here")
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = args.cases or (list(QUICK_DEFAULT_CASES) if args.quick else list(CASES))
    reps = args.reps or (1 if args.quick else 5)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    mode = "quick" if args.quick else device.type
    opt_spec = OptimizerSpec(args.optimizer, lr=args.lr)
    opt_spec.validate()
    out = args.out or Path(__file__).resolve().parent / f"results-{device.type}.csv"

    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    log(f"bench_engine  {dt.datetime.now().isoformat(timespec='seconds')}  torch {torch.__version__}  "
        f"device {device.type} ({dev_name})  threads {torch.get_num_threads()}  cpus {os.cpu_count()}")
    log(f"data: random synthetic uint8 images (not a real dataset), {NUM_CLASSES} classes; batch {BATCH}; "
        f"optimizer {opt_spec.name} lr {opt_spec.lr:g}; reference DataLoader num_workers {args.num_workers}")

    bf16 = (device.type == "cuda" and not args.no_bf16) or (device.type == "cpu" and args.bf16)

    rows: list[dict] = []
    for name in cases:
        case = CASES[name]
        conv = case.arch == "resnet18"
        vs = [Variant("fp32")]  # the paper's precision, no other option: the like-for-like row
        if conv:
            vs.append(Variant("fp32", channels_last=True))  # the library's fp32 default for a ResNet
        if bf16:
            vs.append(Variant("bf16", channels_last=conv))
        if args.compile:  # compiled on top of the fastest uncompiled row for this model
            vs.append(dataclasses.replace(vs[-1] if conv or device.type == "cuda" else vs[0], compile=True))
        steps = args.steps or case.steps[mode]
        rows += bench_case(name, case, device, steps, reps, warmup, opt_spec, args.num_workers, vs,
                           args.breakdown, args.seed, log)

    if any(r["case"] == "resnet18_w64" for r in rows):
        peaks = measure_peak_flops(device, args.quick)
        log("")
        log("resnet18 width 64: one epoch of 50,000 CIFAR-sized images (~166 TFLOP: 3.3 GFLOP/image fwd+bwd)")
        log("  matmul peak: " + ", ".join(f"{k} {v / 1e12:.3f} TFLOP/s" for k, v in peaks.items()))
        for r in rows:
            if r["case"] != "resnet18_w64":
                continue
            projected = EPOCH_IMAGES / r["engine_samples_per_s"]
            # fp32 on CUDA: cuDNN convolutions use TF32 by default, so show both floors
            keys = ["bf16"] if r["precision"].startswith("bf16") and "bf16" in peaks else [k for k in ("fp32", "tf32") if k in peaks]
            for k in keys:
                floor = RESNET64_EPOCH_FLOP / peaks[k]
                log(f"  engine {r['precision']:8s} projected epoch {projected:9.1f} s  vs floor at {k} peak "
                    f"{floor:9.1f} s  (measured/floor {projected / floor:.2f}x)")
                r["projected_epoch_s"] = round(projected, 1)
                r[f"floor_epoch_s_{k}"] = round(floor, 1)

    log("")
    log(format_table(rows))
    out.parent.mkdir(parents=True, exist_ok=True)
    extra = sorted({k for r in rows for k in r} - set(CSV_FIELDS))
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(CSV_FIELDS) + extra)
        w.writeheader()
        w.writerows(rows)
    log(f"\nwrote {out}")
    return rows


if __name__ == "__main__":
    main()
