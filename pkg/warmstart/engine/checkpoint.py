"""Resume files: one format for runs, stacks and online streams, and the training loop's own state on top.

A resume file is a plain dict ``{"tag": <whose state it is>, **state}`` (tensors and plain values),
written atomically through ``warmstart.core.io.save_torch`` (a temporary file renamed over the old one:
an interrupted write leaves the previous state) and checked when read (``load_torch``). ``load_resume``
returns None where there is nothing to resume: no file, or a file of another run (another tag), so a
job never picks up state that is not its own.

``LoopProgress`` is where ``warmstart.engine.loop.fit`` stands; it saves the trainee's rows, the optimiser
and every hook's ``state_dict()`` beside its own fields, and restores them all (``save`` / ``restore``).
"""
from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from warmstart.core.errors import CorruptFileError
from warmstart.core.io import load_torch, save_torch
from warmstart.core.seeds import batch_order_seed
from warmstart.core.spec import StopSpec


def save_resume(path: str | Path, tag: str, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors and plain values) as the resume file of ``tag``, atomically."""
    save_torch({"tag": tag, **state}, path)


def load_resume(path: str | Path, tag: str, map_location=None, *, what: str = "the resume state",
                fix: str | None = None) -> dict[str, Any] | None:
    """The state ``save_resume`` wrote for ``tag`` at ``path`` (without its tag); None when there is no
    file or it belongs to another tag. An unreadable or damaged file raises ``CorruptFileError`` naming
    the file, ``what`` it held and ``fix`` (by default: delete it, and the job starts from the beginning)."""
    path = Path(path)
    if not path.exists():
        return None
    saved = load_torch(path, what=what, map_location=map_location,
                       fix=fix or f"Delete {path}: the job then starts its runs from the beginning")
    if not isinstance(saved, dict) or saved.get("tag") != tag:
        return None
    return {k: v for k, v in saved.items() if k != "tag"}


# what a loop's resume file holds; a file of another format is refused (named), never half-read
LOOP_FORMAT = "loop/2"


@dataclass
class Checkpointing:
    """Periodic resumable state, so an interrupted long run (or stack) resumes instead of starting over."""

    path: Path
    every_s: float = 300.0
    tag: str = ""  # the run (or stack) id: a resume file of another run is never picked up


@contextlib.contextmanager
def save_on_signal(enabled: bool):
    """While training with checkpointing, SIGTERM (``scancel``, a preemption, Snakemake stopping) and
    SIGUSR1 (SLURM's ``--signal=USR1@<s>`` before the time limit) are recorded instead of killing the
    process; ``fit`` then saves its resumable state at the end of the epoch and exits, so the job resumes
    from there. Yields the list of signal names received. Only the main thread can install handlers."""
    received: list[str] = []
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield received
        return

    def record(signum, frame):
        received.append(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, record) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class LoopProgress:
    """Where ``fit`` stands: everything a resumed run needs to go on with the same bits. Per seed position
    i (the order of ``seeds``): its epoch records, why it stopped, its training time, its batch-order
    generator, and, once done, its final state dict (``finished``) and what the hooks reported for it
    (``outcomes``: TrainResult fields); ``active`` lists the positions still training, in the trainee's
    row order."""

    active: list[int]
    histories: list[list[dict[str, float]]]
    stopped_by: list[str]
    train_time: list[float]
    generators: list[torch.Generator]
    finished: dict[int, dict | None] = field(default_factory=dict)  # exported seeds (state dicts once saved)
    outcomes: dict[int, dict] = field(default_factory=dict)  # finished seed -> its hooks' result fields

    @classmethod
    def start(cls, seeds: Sequence[int], stop: StopSpec) -> "LoopProgress":
        # seed i's batch order depends only on its seed: its own generator
        return cls(list(range(len(seeds))), [[] for _ in seeds], [stop.cap_reason] * len(seeds),
                   [0.0] * len(seeds), [torch.Generator().manual_seed(batch_order_seed(seed)) for seed in seeds])

    @property
    def epoch(self) -> int:
        """Epochs done by the seeds still training."""
        return len(self.histories[self.active[0]]) if self.active else 0

    def save(self, checkpointing: Checkpointing, trainee, opt, hooks: Sequence) -> None:
        models = trainee.models()
        save_resume(checkpointing.path, checkpointing.tag, {
            "format": LOOP_FORMAT, "active": self.active, "histories": self.histories, "stopped_by": self.stopped_by,
            "train_time": self.train_time, "generators": [g.get_state() for g in self.generators],
            "finished": {i: models[i].state_dict() for i in self.finished}, "outcomes": self.outcomes,
            "trainee": trainee.state_dict(), "optimizer": opt.state_dict(),
            "hooks": [hook.state_dict() for hook in hooks]})

    @staticmethod
    def load(checkpointing: Checkpointing, map_location) -> dict[str, Any] | None:
        """The loop state saved for ``checkpointing.tag``; None when there is none. A file of another
        format (an earlier warmstart's) is refused by name, never half-read."""
        saved = load_resume(checkpointing.path, checkpointing.tag, map_location)
        if saved is not None and saved.get("format") != LOOP_FORMAT:
            raise CorruptFileError(checkpointing.path, "a resume file of an earlier warmstart, whose loop state "
                                   "this version does not read", "Delete it: the job then starts its runs from "
                                   "the beginning")
        return saved

    def restore(self, saved: dict, trainee, make_opt: Callable, hooks: Sequence):
        """Take the saved state over (the trainee's rows, its modules of finished seeds, every hook's
        state); returns the optimiser, rebuilt over the saved rows."""
        self.active, self.histories, self.stopped_by, self.train_time = (
            saved["active"], saved["histories"], saved["stopped_by"], saved["train_time"])
        for g, state in zip(self.generators, saved["generators"]):
            g.set_state(state)
        for i, state in saved["finished"].items():
            trainee.models()[i].load_state_dict(state)
            self.finished[i] = state
        self.outcomes = saved["outcomes"]
        trainee.load_state_dict(saved["trainee"])
        opt = make_opt(trainee.optimizer_params())
        opt.load_state_dict(saved["optimizer"])
        for hook, state in zip(hooks, saved["hooks"], strict=True):
            hook.load_state_dict(state)
        return opt
