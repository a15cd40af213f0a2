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
third-party libraries (``PRELOAD``), never warmstart, so a job uses the library of its own repository.
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

Standard library only at module level, so a client pays nothing for importing it.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV_VAR = "WARMSTART_JOB_SERVER"  # "<pid of the Snakemake process>:<socket path>", set by ``start``
IN_CHILD_VAR = "WARMSTART_IN_JOB_SERVER"  # set in a forked child: the job is where it runs
# What the jobs import first: the training jobs torch, the summaries pandas and pyarrow, the reports
# matplotlib and seaborn too. Imported in this order; one that is missing is skipped.
PRELOAD = ("torch", "numpy", "pandas", "pyarrow.parquet", "matplotlib.pyplot", "seaborn",
           "snakemake.iocontainers", "snakemake.logging")
_STARTED: list["Server"] = []
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


# -- messages: a 4-byte length, then JSON ----------------------------------------------------------------

def _send(sock: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    head = struct.pack("!I", len(data))
    if fds:  # the descriptors ride on the 4-byte length, which a stream socket sends whole
        socket.send_fds(sock, [head], fds)
        sock.sendall(data)
    else:
        sock.sendall(head + data)


def _recv_exact(sock: socket.socket, n: int, fds: list[int] | None = None) -> bytes | None:
    data = b""
    while len(data) < n:
        if fds is not None and not data:
            chunk, received, _, _ = socket.recv_fds(sock, n, 3)
            fds.extend(received)
        else:
            chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _recv(sock: socket.socket, fds: list[int] | None = None) -> dict | None:
    """The next message (None: the other side closed); file descriptors sent with it go to ``fds``."""
    head = _recv_exact(sock, 4, fds)
    if head is None:
        return None
    body = _recv_exact(sock, struct.unpack("!I", head)[0])
    return None if body is None else json.loads(body)


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
        _remove_socket(self.socket_path)


def _remove_socket(socket_path: Path) -> None:
    """The socket and the temporary directory ``start`` made for it."""
    socket_path.unlink(missing_ok=True)
    try:
        socket_path.parent.rmdir()
    except OSError:
        pass


def forget_inherited() -> None:
    """Forget a server this process inherited (a workflow run from inside another's job): its jobs are
    not that server's, whether or not this process starts one of its own."""
    os.environ.pop(ENV_VAR, None)


def start(log_path: str | os.PathLike) -> Server | None:
    """Start a job server for the jobs this process (Snakemake) will start, and tell them where it is
    (``ENV_VAR`` in this process's environment, which local jobs inherit). None where the platform has
    no fork or no ``/proc``. The server's own messages go to ``log_path`` (appended)."""
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
        process = subprocess.Popen([sys.executable, __file__, str(socket_path), str(os.getpid())],
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
        _send(sock, {"executable": sys.executable, "pythonpath": os.environ.get("PYTHONPATH"),
                     "argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ), "path": sys.path,
                     "umask": _umask()}, fds=[0, 1, 2])
        reply = _recv(sock)
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
    status = _recv(sock)  # a forwarded signal does not interrupt it (PEP 475)
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


# -- the server ----------------------------------------------------------------------------------------

def _run_child(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """In the forked child: become the job's process and run its script. The script's end ends the process
    (an exception or SystemExit goes up through the server's frames to the interpreter, which prints it and
    runs the exit handlers as in any Python process), so this never returns to the server's loop."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    for sig in FORWARDED + (signal.SIGCHLD,):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ[IN_CHILD_VAR] = "1"
    os.umask(request["umask"])
    sys.argv, sys.path[:] = request["argv"], request["path"]
    import random
    import runpy
    random.seed()  # the global generators, seeded afresh as in a new process (torch's has a fixed default)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    _watch_client(conn)
    runpy.run_path(sys.argv[0], run_name="__main__")
    raise SystemExit(0)


def _watch_client(conn: socket.socket) -> None:
    """SIGTERM this process when its client goes away without a word (killed with SIGKILL)."""
    import threading

    def watch():
        try:
            while conn.recv(1024):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="job-server-client-watch", daemon=True).start()


def _preload() -> str:
    t0, loaded = time.perf_counter(), []
    for name in PRELOAD:
        try:
            __import__(name)
            loaded.append(name)
        except Exception:  # noqa: BLE001  (a library a job never needs may be missing or broken)
            pass
    return f"imported {', '.join(loaded)} in {time.perf_counter() - t0:.1f} s"


class _Serving:
    """The server's state: its listening socket and, per running child, the client's connection."""

    def __init__(self, socket_path: str):
        self.socket_path = socket_path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(socket_path)
        self.listener.listen(64)
        self.children: dict[int, tuple[socket.socket, str, float]] = {}

    def accept(self) -> None:
        """Take one job: fork a child for it, or tell its client to run it itself."""
        conn, _ = self.listener.accept()
        fds: list[int] = []
        try:
            conn.settimeout(10)
            request = _recv(conn, fds)
            conn.settimeout(None)
        except OSError:
            request = None
        if request is None or request["executable"] != sys.executable or \
                request["pythonpath"] != os.environ.get("PYTHONPATH"):
            for fd in fds:
                os.close(fd)
            self._tell(conn, {"run_here": True})
            conn.close()
            return
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            self.listener.close()
            for other, _, _ in self.children.values():
                other.close()  # so that a client sees the end of its connection when its own child ends
            _run_child(conn, request, fds)
        for fd in fds:
            os.close(fd)
        self.children[pid] = (conn, request["argv"][0], time.perf_counter())
        self._tell(conn, {"pid": pid})

    def reap(self) -> None:
        """Tell the client of every child that ended how it ended."""
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn, script, started = self.children.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            print(f"job {pid} {script}: exit {code} after {time.perf_counter() - started:.1f} s", flush=True)
            self._tell(conn, {"exit": code})
            conn.close()

    @staticmethod
    def _tell(conn: socket.socket, message: dict) -> None:
        try:
            _send(conn, message)
        except OSError:  # the client is gone
            pass

    def close(self) -> None:
        self.listener.close()
        _remove_socket(Path(self.socket_path))  # when Snakemake ended without stop()
        for pid in self.children:  # Snakemake is gone, and so are the clients: end their jobs as it would
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def serve(socket_path: str, owner_pid: int, poll_s: float = 0.05) -> None:
    """Listen on ``socket_path`` until ``owner_pid`` (Snakemake) is gone or SIGTERM; fork a child per job."""
    for sig in (signal.SIGINT, signal.SIGHUP):  # a Ctrl-C reaches the jobs through their clients, and
        signal.signal(sig, signal.SIG_IGN)      # the server ends when Snakemake does
    serving = _Serving(socket_path)  # listening before the imports: a job that comes early waits for them
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    print(f"job server {os.getpid()}: {socket_path}; {_preload()}", flush=True)
    selector = selectors.DefaultSelector()
    selector.register(serving.listener, selectors.EVENT_READ)
    while not stopping and os.getppid() == owner_pid:
        for _ in selector.select(poll_s):
            serving.accept()
        serving.reap()
    serving.close()


if __name__ == "__main__":
    sys.path.pop(0)  # this file's directory: its sibling modules are not top-level modules
    serve(sys.argv[1], int(sys.argv[2]))
