"""The tests' Snakemake command: ``command()`` runs ``python tests/snakemake_cli.py ARGS``, which is
``python -m snakemake ARGS`` started from a process that imported Snakemake once per test process.

Importing Snakemake's command line costs about 1 s of CPU (its persistence layer, its scheduler, every
installed executor plugin); the suite invokes Snakemake over a hundred times, and on 2 cores that import was
a fifth of its CPU time. So each test process starts one job server (``warmstart.jobs.job_server``, the
workflow's own, which forks its jobs from a process that imported their libraries) with Snakemake's command
line among its imports, and this file, run as the command, hands itself to it: the forked child runs this
file again, in the command's directory, environment, arguments and standard streams, and calls Snakemake's
``main`` as ``python -m snakemake`` does. Snakemake then runs exactly as in a process of its own (the
workflow starts its own job server for its jobs; the tests' server is named only to this command). Where the
server cannot take it, the command runs Snakemake in its own process.
"""
from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

from warmstart.jobs import job_server

_SERVER: dict = {}  # this test process's server: "env", the environment that names it; "log", its log


def command() -> tuple[list[str], dict[str, str]]:
    """The command that runs Snakemake (append its arguments), and the environment to run it in."""
    if not _SERVER:
        _SERVER["log"] = Path(tempfile.mkdtemp(prefix="warmstart-tests-")) / "snakemake_server.log"
        inherited = os.environ.get(job_server.ENV_VAR)  # a server a test module started for its own jobs
        server = job_server.start(_SERVER["log"], preload=("snakemake.cli",))
        # named to this command alone: any other process a test starts must not find it
        _SERVER["env"] = {job_server.ENV_VAR: os.environ.pop(job_server.ENV_VAR)} if server else {}
        if server is not None:
            atexit.register(server.stop)
        atexit.register(shutil.rmtree, _SERVER["log"].parent, True)  # registered first, run last
        if inherited is not None:
            os.environ[job_server.ENV_VAR] = inherited
    return [sys.executable, __file__], {**os.environ, **_SERVER["env"]}


def server_log() -> Path:
    """What this test process's server ran: a line per command that ended (``job <pid> <file>: exit <code>``)."""
    command()
    return _SERVER["log"]


if __name__ == "__main__":
    job_server.run_in_job_server()  # in the client: returns only where the server cannot take the command
    # In the child (or here): Snakemake's own jobs see neither the tests' server nor a child's mark.
    job_server.forget_inherited()
    os.environ.pop(job_server.IN_CHILD_VAR, None)
    from snakemake.cli import main

    sys.argv[0] = "snakemake"
    main()
