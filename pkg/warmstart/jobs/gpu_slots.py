"""GPU placement on one machine: which card a training job uses, so no card runs more than ``jobs_per_gpu``.

Snakemake limits how many training jobs run at once (the workflow declares the global resource
``gpu_slots = gpus * jobs_per_gpu`` and each training job takes one) but does not say which card a job
gets. A job calls ``acquire`` first thing, before torch touches CUDA:

    slot = gpu_slots.acquire(gpus=4, jobs_per_gpu=2)   # also sets CUDA_VISIBLE_DEVICES to the card
    ...                                                # import torch / train on "cuda" (= that card)

How: one lock file per (card, slot) in a machine-wide directory, ``/tmp/warmstart-gpu-slots-<uid>/``
(override: environment variable ``WARMSTART_GPU_SLOT_DIR``, or ``lock_dir=``). A job holds one with
``fcntl.flock(LOCK_EX | LOCK_NB)`` for the life of its process; the kernel drops the lock when the process
ends however it ends (exit, exception, crash, ``kill -9``), so a dead job frees its slot and nothing is
ever cleaned up by hand. Every workflow of the same user on the machine uses the same directory, so two
workflows together never put more than ``jobs_per_gpu`` of their jobs on one card; a job that finds every
slot taken (the other workflow holds them) waits, at most ``wait_s``, then fails with a message that names
the directory and how many slots are held by which processes.

Choice of card: the one with the most free slots (ties: the lowest index), so jobs spread over the cards
before any card gets a second job. A short selection lock in the same directory makes concurrent
``acquire`` calls choose one after the other, so their counts are exact.

Which cards:
  * ``gpus == 0``: nothing happens (CPU runs); ``acquire`` returns an inactive ``Slot``.
  * A SLURM job (``SLURM_JOB_ID`` set): nothing happens either. The scheduler gave the job its cards and
    set ``CUDA_VISIBLE_DEVICES`` itself (the SLURM profile submits one job per training run). To share
    the cards of one allocation that runs the whole workflow locally (``srun ... snakemake --cores N``),
    set ``WARMSTART_GPU_SLOTS_UNDER_SLURM=1``; the default lock directory then gets the job id appended,
    since two allocations on one node may both see their cards as "0,1".
  * Otherwise card ``i`` (0 <= i < gpus) is the i-th entry of an existing ``CUDA_VISIBLE_DEVICES`` (set by
    the user: ``CUDA_VISIBLE_DEVICES=2,3`` with ``gpus: 2`` uses physical cards 2 and 3), or the CUDA index
    ``i`` when it is unset. Lock files are named by that entry, not by ``i``, so workflows that see the
    cards through different lists still count per physical card, as long as they name the cards the same
    way (indices, or UUIDs). A list shorter than ``gpus`` is an error.

Pinning sets ``CUDA_VISIBLE_DEVICES`` to the job's card, so the job sees one GPU, ``cuda:0``. CUDA reads
the variable once, when torch initialises it: pin before the first CUDA call (``pin`` raises if torch has
already initialised CUDA in this process). Call ``acquire`` once per process: after pinning, the process
sees one card. Child processes inherit the pinned variable; a forked child (a DataLoader worker) also
inherits the open lock, which is then released when both have ended.

Workflows that share a directory should agree on ``jobs_per_gpu``: slot files are numbered, and one with
``jobs_per_gpu: 3`` uses a slot 2 that one with ``jobs_per_gpu: 2`` never takes, so a card then runs up to
the larger of the two. Different users have different directories and do not see each other's jobs.

Dependency-free (standard library only, no torch), so a job can call it before importing torch.
"""
from __future__ import annotations

import errno
import fcntl
import os
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ENV_DIR = "WARMSTART_GPU_SLOT_DIR"
ENV_UNDER_SLURM = "WARMSTART_GPU_SLOTS_UNDER_SLURM"
_SELECT = "select.lock"


@dataclass
class Slot:
    """A held (card, slot) lock, or an inactive slot when there was nothing to do (``reason`` says why).

    ``card`` is the index 0..gpus-1, ``device`` the ``CUDA_VISIBLE_DEVICES`` entry of that card, ``slot`` the
    slot number on the card (0..jobs_per_gpu-1). The lock is held until ``release()`` or the process ends.
    """

    card: int | None = None
    slot: int | None = None
    device: str | None = None
    path: Path | None = None
    fd: int | None = None
    jobs_per_gpu: int = 0
    reason: str = ""

    @property
    def active(self) -> bool:
        return self.fd is not None

    def release(self) -> None:
        """Free the slot now (closing the file drops the lock); harmless to call twice."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __str__(self) -> str:
        if self.card is None:
            return f"GPU slot: none ({self.reason})"
        return (f"GPU slot: card {self.card} (CUDA_VISIBLE_DEVICES={self.device}), slot {self.slot + 1} of "
                f"{self.jobs_per_gpu}, lock {self.path}" + ("" if self.active else " (released)"))


def default_lock_dir() -> Path:
    """``$WARMSTART_GPU_SLOT_DIR``, else ``/tmp/warmstart-gpu-slots-<uid>`` (plus ``-slurm<job id>`` when
    slots are used inside a SLURM allocation)."""
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR])
    name = f"warmstart-gpu-slots-{os.getuid()}"
    if os.environ.get("SLURM_JOB_ID"):
        name += f"-slurm{os.environ['SLURM_JOB_ID']}"
    return Path("/tmp") / name


def card_ids(gpus: int) -> list[str]:
    """The ``CUDA_VISIBLE_DEVICES`` entry of each of the ``gpus`` cards: the first ``gpus`` entries of an
    existing list, else ``"0" .. str(gpus - 1)``."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [str(i) for i in range(gpus)]
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    if len(entries) < gpus:
        pinned = " (an earlier acquire in this process pinned it to one card)" if _HELD else ""
        raise ValueError(f"resources.gpus is {gpus} but CUDA_VISIBLE_DEVICES={visible!r} lists {len(entries)} "
                         f"card(s){pinned}: lower resources.gpus or unset CUDA_VISIBLE_DEVICES")
    return entries[:gpus]


def _skip_reason(gpus: int) -> str | None:
    if gpus == 0:
        return "gpus: 0, CPU run"
    if os.environ.get("SLURM_JOB_ID") and os.environ.get(ENV_UNDER_SLURM, "") in ("", "0"):
        return (f"SLURM job {os.environ['SLURM_JOB_ID']}: the scheduler placed it "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')})")
    return None


def _lock_path(lock_dir: Path, device: str, slot: int) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", device)
    return lock_dir / f"gpu{safe}-slot{slot}.lock"


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive lock on ``path``, or None when another open file holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def _prepare_dir(lock_dir: Path) -> None:
    lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    owner = lock_dir.stat().st_uid
    if owner != os.getuid():
        raise PermissionError(f"GPU slot directory {lock_dir} belongs to uid {owner}, not to you "
                              f"(uid {os.getuid()}); set {ENV_DIR} to a directory of yours")


def held(gpus: int, jobs_per_gpu: int, lock_dir: str | os.PathLike | None = None) -> dict[str, list[int]]:
    """Card entry -> the slots held right now (by any process), found by trying each lock (a diagnostic:
    a probe holds a free lock for a moment, which a concurrent ``acquire`` may take for held)."""
    lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    out = {}
    for device in card_ids(gpus):
        out[device] = []
        for s in range(jobs_per_gpu):
            path = _lock_path(lock_dir, device, s)
            if not path.exists():
                continue
            fd = _try_lock(path)
            if fd is None:
                out[device].append(s)
            else:
                os.close(fd)
    return out


def _holders(lock_dir: Path, taken: dict[str, list[int]]) -> str:
    pids = []
    for device, slots in taken.items():
        for s in slots:
            try:
                pid = _lock_path(lock_dir, device, s).read_text().split()[0]
            except (OSError, IndexError):
                continue
            if pid.isdigit():
                pids.append(pid)
    return f"; held by pid {', '.join(sorted(set(pids), key=int))}" if pids else ""


def acquire(gpus: int, jobs_per_gpu: int, *, wait_s: float = 3600.0, poll_s: float = 1.0,
            lock_dir: str | os.PathLike | None = None, pin: bool = True) -> Slot:
    """Take a free slot on the least-loaded card and (``pin=True``) point ``CUDA_VISIBLE_DEVICES`` at it.

    Returns an inactive ``Slot`` (and changes nothing) when ``gpus == 0`` or in a SLURM job (module
    docstring). Waits, polling every ``poll_s``, while all ``gpus * jobs_per_gpu`` slots are held; raises
    ``TimeoutError`` after ``wait_s`` seconds.
    """
    if gpus < 0 or jobs_per_gpu < 1:
        raise ValueError(f"need gpus >= 0 and jobs_per_gpu >= 1, got gpus={gpus}, jobs_per_gpu={jobs_per_gpu}")
    reason = _skip_reason(gpus)
    if reason is not None:
        return Slot(reason=reason, jobs_per_gpu=jobs_per_gpu)
    devices = card_ids(gpus)
    if pin:
        _check_cuda_not_initialised(devices[0])  # fail before waiting for a slot, not after
    lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    _prepare_dir(lock_dir)
    deadline = time.monotonic() + wait_s
    while True:
        slot = _choose(lock_dir, devices, jobs_per_gpu, deadline)
        if slot is not None:
            break
        if time.monotonic() >= deadline:
            taken = held(gpus, jobs_per_gpu, lock_dir)
            n = sum(len(v) for v in taken.values())
            per_card = ", ".join(f"card {d}: {len(v)}" for d, v in taken.items())
            raise TimeoutError(
                f"no free GPU slot after waiting {wait_s:g} s: {n} of {gpus * jobs_per_gpu} slots "
                f"({gpus} card(s) x {jobs_per_gpu} jobs_per_gpu) are held in {lock_dir} ({per_card})"
                f"{_holders(lock_dir, taken)}. Another workflow on this machine may be using the cards: let it "
                f"finish, or wait longer (wait_s)")
        time.sleep(min(poll_s * random.uniform(0.5, 1.5), max(0.0, deadline - time.monotonic())))
    if pin:
        try:
            _pin(slot)
        except BaseException:
            slot.release()
            raise
    _HELD.append(slot)
    return slot


def _choose(lock_dir: Path, devices: list[str], jobs_per_gpu: int, deadline: float) -> Slot | None:
    """Under the selection lock: count the free slots per card, lock one on the card with the most."""
    select = None
    while select is None:
        select = _try_lock(lock_dir / _SELECT)
        if select is None:
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.005 * random.uniform(0.5, 1.5))
    try:
        free: list[tuple[int, int, list[int]]] = []  # (free count, card, free slots)
        for card, device in enumerate(devices):
            slots = []
            for s in range(jobs_per_gpu):
                fd = _try_lock(_lock_path(lock_dir, device, s))
                if fd is not None:
                    os.close(fd)
                    slots.append(s)
            free.append((len(slots), card, slots))
        for _count, card, slots in sorted(free, key=lambda t: (-t[0], t[1])):
            for s in slots:
                path = _lock_path(lock_dir, devices[card], s)
                fd = _try_lock(path)  # None only if a process outside the protocol holds it
                if fd is not None:
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{os.getpid()} {time.time():.3f}\n".encode())
                    return Slot(card=card, slot=s, device=devices[card], path=path, fd=fd,
                                jobs_per_gpu=jobs_per_gpu)
        return None
    finally:
        os.close(select)


def _pin(slot: Slot) -> None:
    """Set ``CUDA_VISIBLE_DEVICES`` to the slot's card (nothing for an inactive slot). Must run before torch
    initialises CUDA in this process: CUDA reads the variable once."""
    if slot.card is None:
        return
    _check_cuda_not_initialised(slot.device)
    os.environ["CUDA_VISIBLE_DEVICES"] = slot.device


def _check_cuda_not_initialised(device: str) -> None:
    torch = sys.modules.get("torch")  # never imported here: only a torch the job already loaded
    cuda = getattr(torch, "cuda", None)
    if cuda is not None and cuda.is_initialized():
        raise RuntimeError(f"torch has already initialised CUDA in this process, so setting "
                           f"CUDA_VISIBLE_DEVICES={device} would have no effect: acquire the GPU slot "
                           f"before the first CUDA call")


pin = _pin  # public name; ``acquire`` has a parameter of that name

_HELD: list[Slot] = []  # this process's slots, for the message when a second acquire sees one card


def peak_overlap(intervals) -> int:
    """The most (start, end) intervals open at one instant: how many jobs ran at once. An end at the same
    instant as a start counts first (those two did not overlap)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak
