"""One Python start-up per workflow invocation instead of one per job: the job server.

A Snakemake ``script:`` job is a new Python process that imports torch (about 1.5 s on the development
machine) and pandas before it does anything; the demo runs about 80 such jobs, a test suite hundreds. The
job server imports those libraries once, then runs each job in a forked child of itself. The workflow's
``onstart`` starts it (``start``) for a local invocation and ``onsuccess``/``onerror`` stop it; each rule
script calls ``run_in_job_server()`` before its first heavy import:

* in the job's own process (the client) it hands the job to the server and exits with the child's exit
  status (killed by a signal: the same signal), so Snakemake sees the job exactly as if it had run there;
* in the forked child, and wherever there is no usable server, it returns and the script goes on.

What the child runs is the job's own script file (``sys.argv[0]``, the file Snakemake wrote with its
preamble), in the client's working directory, environment, ``sys.path``, umask and standard streams
(passed over the socket), so the job reads and writes exactly what it would in its own process: a forked
child computes the same bits (``tests/test_job_server.py`` compares whole runs). The server imports only
third-party libraries (``job_forks.PRELOAD``, and those the config's models name, ``preload``), never
warmstart, so a job uses the library of its own repository. The server's process is
``warmstart.jobs.job_forks``, run as a file; this module is the workflow's side (``start``, ``stop_all``)
and the job's (``run_in_job_server``).
CUDA is never touched before the fork (forking after CUDA's initialisation is unsupported; the server
runs no torch operation at all), so a job still pins its card itself (``warmstart.jobs.gpu_slots``).

Signals: a signal to the client (Snakemake cancelling the job, Ctrl-C) is passed on to the child; a client
that dies without passing it on (``kill -9``) closes its socket, and the child then gets SIGTERM, which a
training job answers by saving its resumable state (``warmstart.engine.checkpoint.save_on_signal``).

A job uses the server only where that cannot change what runs: the client must be a descendant of the
Snakemake process that started the server (a cluster job, even on the same node, is not: it runs in its
own process, under the scheduler's limits), run the same Python executable with the same ``PYTHONPATH``
(a ``--use-conda`` environment is another Python), and find the server answering. Otherwise the job runs
in its own process as before; the server is a saving, never a requirement. Linux only (``/proc``, fork).
A job that succeeded ends without the interpreter's teardown of the server's modules, right after its own
threads and exit handlers (``job_forks._exit_when_done``): that teardown cost a forked child about 0.8 s.

Standard library only at module level, so a client pays nothing for importing it.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from warmstart.jobs import job_forks
from warmstart.jobs.job_forks import FORWARDED, IN_CHILD_VAR, recv, remove_socket, send

ENV_VAR = "WARMSTART_JOB_SERVER"  # "<pid of the Snakemake process>:<socket path>", set by ``start``
_STARTED: list["Server"] = []


# -- the workflow's side: start and stop ---------------------------------------------------------------

class Server:
    """A running job server: its process and socket; ``stop()`` ends it (idempotent)."""

    def __init__(self, process: subprocess.Popen, socket_path: Path):
        self.process, self.socket_path = process, socket_path

    def stop(self, timeout_s: float = 5.0) -> None:
        os.environ.pop(ENV_VAR, None)
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        remove_socket(self.socket_path)


def forget_inherited() -> None:
    """Forget a server this process inherited (a workflow run from inside another's job): its jobs are
    not that server's, whether or not this process starts one of its own."""
    os.environ.pop(ENV_VAR, None)


def start(log_path: str | os.PathLike, preload: Sequence[str] = ()) -> Server | None:
    """Start a job server for the jobs this process (Snakemake) will start, and tell them where it is
    (``ENV_VAR`` in this process's environment, which local jobs inherit). None where the platform has
    no fork or no ``/proc``. The server's own messages go to ``log_path`` (appended). ``preload``: more
    third-party libraries for it to import once, beside ``job_forks.PRELOAD`` (the workflow's models'
    ``ModelEntry.libraries``, e.g. torchvision's, about a second each job would import again)."""
    forget_inherited()
    if not hasattr(os, "fork") or not Path("/proc/self/stat").exists():
        return None
    # a short path: a Unix socket's path is limited to about 100 bytes
    socket_path = Path(tempfile.mkdtemp(prefix="warmstart-jobs-")) / "socket"
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        # run as a file, not `-m warmstart...`: the server must not import the library (see the module doc).
        # In Snakemake's session and process group, as its jobs are: the kernel's scheduler shares the CPU
        # between sessions (autogroups), so jobs in a session of their own would take more than their share.
        process = subprocess.Popen([sys.executable, job_forks.__file__, str(socket_path), str(os.getpid()), *preload],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    os.environ[ENV_VAR] = f"{os.getpid()}:{socket_path}"
    _STARTED.append(Server(process, socket_path))
    return _STARTED[-1]


def stop_all() -> None:
    """Stop every server this process started (the workflow's ``onsuccess`` and ``onerror``)."""
    while _STARTED:
        _STARTED.pop().stop()


# -- the job's side -----------------------------------------------------------------------------------

def _parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[1])  # after "pid (comm) state"


def _descends_from(ancestor: int) -> bool:
    pid: int | None = os.getpid()
    for _ in range(64):
        pid = _parent_pid(pid)
        if pid is None or pid <= 1:
            return False
        if pid == ancestor:
            return True
    return False


def _server_address() -> str | None:
    """The socket of a server this job may use, or None (see the module doc)."""
    value = os.environ.get(ENV_VAR)
    if not value or os.environ.get(IN_CHILD_VAR) or ":" not in value:
        return None
    owner, path = value.split(":", 1)
    if not owner.isdigit() or not os.path.exists(path) or not _descends_from(int(owner)):
        return None
    return path


def run_in_job_server() -> None:
    """Hand this job to the job server and exit as its child exits; return where the job should run in
    this process (in the server's child, or where no server may take it)."""
    address = _server_address()
    if address is None:
        return
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(address)
        send(sock, {"executable": sys.executable, "pythonpath": os.environ.get("PYTHONPATH"),
                    "argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ), "path": sys.path,
                    "umask": _umask()}, fds=[0, 1, 2])
        reply = recv(sock)
    except OSError:
        reply = None
    if reply is None or "pid" not in reply:  # no server, or one that cannot run this job: run it here
        sock.close()
        return
    child = reply["pid"]

    def forward(signum, frame):
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for sig in FORWARDED:
        signal.signal(sig, forward)
    status = recv(sock)  # a forwarded signal does not interrupt it (PEP 475)
    sys.stdout.flush()
    sys.stderr.flush()
    if status is None:
        print(f"job server: lost the connection while job process {child} ran; the job failed", file=sys.stderr)
        os._exit(1)
    code = status["exit"]
    if code < 0:  # the child was killed by a signal: die of the same one
        _die_of(-code)
    os._exit(code)


def _die_of(signum: int) -> None:
    if signum not in (signal.SIGKILL, signal.SIGSTOP):  # those two have no handler to reset
        signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # where the signal is blocked


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
