"""The job server's own process (``warmstart.jobs.job_server`` starts it and hands it jobs): it imports
the libraries the jobs need once (``PRELOAD``), then runs each job in a forked child of itself, which
becomes the job's process (its directory, environment, streams and script). It is run as a file, never
imported as part of the library in that process, so a job uses the library of its own repository; the
client side imports its messages and names from here. Standard library only at module level.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
from pathlib import Path

IN_CHILD_VAR = "WARMSTART_IN_JOB_SERVER"  # set in a forked child: the job is where it runs
# What the jobs import first: the training jobs torch, the summaries pandas and pyarrow, the reports
# matplotlib and seaborn too. Imported in this order; one that is missing is skipped.
PRELOAD = ("torch", "numpy", "pandas", "pyarrow.parquet", "matplotlib.pyplot", "seaborn",
           "snakemake.iocontainers", "snakemake.logging")
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


# -- messages: a 4-byte length, then JSON ----------------------------------------------------------------

def send(sock: socket.socket, message: dict, fds: list[int] | None = None) -> None:
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


def recv(sock: socket.socket, fds: list[int] | None = None) -> dict | None:
    """The next message (None: the other side closed); file descriptors sent with it go to ``fds``."""
    head = _recv_exact(sock, 4, fds)
    if head is None:
        return None
    body = _recv_exact(sock, struct.unpack("!I", head)[0])
    return None if body is None else json.loads(body)


def remove_socket(socket_path: Path) -> None:
    """The socket and the temporary directory ``job_server.start`` made for it."""
    socket_path.unlink(missing_ok=True)
    try:
        socket_path.parent.rmdir()
    except OSError:
        pass


# -- the server ----------------------------------------------------------------------------------------

def _run_child(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """In the forked child: become the job's process and run its script. The script's end ends the process
    (an exception or SystemExit goes up through the server's frames to the interpreter, which prints it and
    runs the exit handlers as in any Python process), so this never returns to the server's loop.

    A job that succeeded skips the interpreter's own teardown (``_exit_when_done``): tearing down the
    modules the server imported costs a forked child about 0.8 s of CPU, more than many jobs' work."""
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
    succeeded = _exit_when_done()
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as exit_:
        if exit_.code not in (None, 0):
            raise
    succeeded.append(True)
    raise SystemExit(0)


def _exit_when_done() -> list:
    """Once the job succeeded (the returned list is appended to), end the child with status 0 right after
    the exit handlers the job itself registered, without the interpreter's teardown of every module the
    server imported (``os._exit``, which Python documents for a child after ``fork``). Exit handlers run
    last-registered first and after the job's non-daemon threads ended, so the job's own handlers run
    before this one; the libraries the server imported registered theirs before the fork, and of those
    only logging's (flushing its handlers) could matter to a job: it runs here. A job that failed ends as
    any Python process does, printing its error."""
    import atexit

    succeeded: list = []

    def exit_now() -> None:
        if not succeeded:
            return
        if "logging" in sys.modules:
            sys.modules["logging"].shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # closed or gone: nothing left to write
                pass
        os._exit(0)

    atexit.register(exit_now)
    return succeeded


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


def _preload(extra: tuple[str, ...] = ()) -> str:
    t0, loaded = time.perf_counter(), []
    for name in (*PRELOAD, *extra):
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
            request = recv(conn, fds)
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
            send(conn, message)
        except OSError:  # the client is gone
            pass

    def close(self) -> None:
        self.listener.close()
        remove_socket(Path(self.socket_path))  # when Snakemake ended without stop()
        for pid in self.children:  # Snakemake is gone, and so are the clients: end their jobs as it would
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def serve(socket_path: str, owner_pid: int, preload: tuple[str, ...] = (), poll_s: float = 0.05) -> None:
    """Listen on ``socket_path`` until ``owner_pid`` (Snakemake) is gone or SIGTERM; fork a child per job.
    ``preload``: third-party libraries to import beside ``PRELOAD``, those the workflow's models need."""
    for sig in (signal.SIGINT, signal.SIGHUP):  # a Ctrl-C reaches the jobs through their clients, and
        signal.signal(sig, signal.SIG_IGN)      # the server ends when Snakemake does
    serving = _Serving(socket_path)  # listening before the imports: a job that comes early waits for them
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    print(f"job server {os.getpid()}: {socket_path}; {_preload(preload)}", flush=True)
    selector = selectors.DefaultSelector()
    selector.register(serving.listener, selectors.EVENT_READ)
    while not stopping and os.getppid() == owner_pid:
        for _ in selector.select(poll_s):
            serving.accept()
        serving.reap()
    serving.close()


if __name__ == "__main__":
    sys.path.pop(0)  # this file's directory: its sibling modules are not top-level modules
    serve(sys.argv[1], int(sys.argv[2]), tuple(sys.argv[3:]))
