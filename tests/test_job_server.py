"""The job server runs each rule script in a forked child of one process that imported torch once; a job
run that way is the same job: same files, same exit status, same answer to signals."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from warmstart.core.io import load_torch
from warmstart.jobs import job_server
from test_workflow import REPO, snakemake, tiny_config

PKG = REPO / "pkg"

# A stand-in for a rule script: hands itself over like workflow/scripts/_log.py, then reports where it ran
JOB = textwrap.dedent("""
    import json, os, signal, sys, time
    sys.path.insert(0, {pkg!r})
    from warmstart.jobs.job_server import run_in_job_server
    run_in_job_server()
    what = sys.argv[1]
    print("out:", what, flush=True)
    print("err:", what, file=sys.stderr, flush=True)
    with open("where.json", "w") as f:
        json.dump({{"pid": os.getpid(), "ppid": os.getppid(), "cwd": os.getcwd(), "argv": sys.argv,
                   "marker": os.environ.get("JOB_MARKER"), "torch_loaded": "torch" in sys.modules}}, f)
    if what == "fail":
        raise RuntimeError("the job's own error")
    if what.startswith("exit"):
        sys.exit(int(what[4:]))
    if what == "finish":  # what a job may leave for its process's end to do
        import atexit, logging, logging.handlers, threading
        atexit.register(lambda: open("exit_handler_ran", "w").close())
        buffered = logging.handlers.MemoryHandler(capacity=100, target=logging.FileHandler("job.log"))
        logger = logging.getLogger("job")
        logger.addHandler(buffered)  # holds its records until logging shuts down
        logger.warning("a record the job logged")
        def late_work():  # still running after the script's end, when Python flushes its output
            time.sleep(0.3)
            open("thread_done", "w").close()
            sys.stdout.write("output never flushed")
        threading.Thread(target=late_work).start()
    if what == "wait":
        def on_term(signum, frame):
            open("got_sigterm", "w").close()
            sys.exit(7)
        signal.signal(signal.SIGTERM, on_term)
        open("waiting", "w").close()
        time.sleep(60)
""")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A job server started by this test process, as `onstart` starts one in Snakemake's process."""
    log = tmp_path_factory.mktemp("server") / "job_server.log"
    unbuffered = os.environ.pop("PYTHONUNBUFFERED", None)  # as on most machines: a job's output is buffered
    started = job_server.start(log)
    if unbuffered is not None:
        os.environ["PYTHONUNBUFFERED"] = unbuffered
    yield started, log
    started.stop()
    os.environ.pop(job_server.ENV_VAR, None)


def job(tmp_path: Path, what: str, env: dict | None = None, **popen) -> subprocess.Popen:
    script = tmp_path / "job.py"
    script.write_text(JOB.format(pkg=str(PKG)))
    environment = {**os.environ, "JOB_MARKER": "from the client", **(env or {})}
    return subprocess.Popen([sys.executable, str(script), what], cwd=tmp_path, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def where(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "where.json").read_text())


def wait_for(path: Path, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_a_job_runs_in_a_child_of_the_server_with_its_own_directory_environment_and_streams(server, tmp_path):
    started, log = server
    proc = job(tmp_path, "ok")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    ran = where(tmp_path)
    assert ran["ppid"] == started.process.pid and ran["pid"] != proc.pid
    assert ran["torch_loaded"]  # imported by the server, not by the job
    assert ran["cwd"] == str(tmp_path) and ran["marker"] == "from the client" and ran["argv"][1:] == ["ok"]
    assert out == "out: ok\n" and err == "err: ok\n"  # the client's own stdout and stderr
    assert f"job {ran['pid']} " in log.read_text()


@pytest.mark.parametrize("what, code", [("exit3", 3), ("exit0", 0), ("fail", 1)])
def test_the_client_exits_with_the_status_of_its_job(server, tmp_path, what, code):
    proc = job(tmp_path, what)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code
    assert where(tmp_path)["ppid"] == server[0].process.pid
    assert ("RuntimeError: the job's own error" in err) == (what == "fail")


def test_a_job_that_succeeds_ends_after_its_threads_exit_handlers_log_records_and_output(server, tmp_path):
    """A job that succeeded ends without the interpreter's teardown of the server's modules
    (``job_server._exit_when_done``), but everything the job itself left for its end still happens."""
    proc = job(tmp_path, "finish")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert where(tmp_path)["ppid"] == server[0].process.pid
    assert (tmp_path / "thread_done").exists()  # its non-daemon thread finished first
    assert (tmp_path / "exit_handler_ran").exists()  # its own exit handler ran
    assert "a record the job logged" in (tmp_path / "job.log").read_text()  # logging shut down
    assert out == "out: finish\noutput never flushed"  # its thread's buffered output flushed


def test_a_signal_to_the_client_reaches_its_job(server, tmp_path):
    proc = job(tmp_path, "wait")
    wait_for(tmp_path / "waiting")
    proc.send_signal(signal.SIGTERM)  # Snakemake cancelling the job
    proc.communicate(timeout=60)
    assert (tmp_path / "got_sigterm").exists() and proc.returncode == 7


def test_a_job_whose_client_is_killed_outright_gets_sigterm(server, tmp_path):
    proc = job(tmp_path, "wait")
    wait_for(tmp_path / "waiting")
    proc.kill()  # no chance to pass anything on
    proc.communicate(timeout=60)
    wait_for(tmp_path / "got_sigterm")


def test_a_job_killed_by_a_signal_ends_its_client_with_that_signal(server, tmp_path):
    proc = job(tmp_path, "wait")
    wait_for(tmp_path / "waiting")
    os.kill(where(tmp_path)["pid"], signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("case", ["no server", "not a descendant", "another PYTHONPATH"])
def test_a_job_the_server_may_not_take_runs_in_its_own_process(server, tmp_path, case):
    started, _ = server
    env, popen = {}, {}
    if case == "no server":
        env[job_server.ENV_VAR] = f"{os.getpid()}:{tmp_path / 'no-such-socket'}"
    elif case == "not a descendant":  # e.g. a cluster job on this node that inherited the variable
        env[job_server.ENV_VAR] = f"{started.process.pid}:{started.socket_path}"
    else:  # the server cannot give the job a Python whose imports differ from its own
        env["PYTHONPATH"] = str(tmp_path)
    proc = job(tmp_path, "ok", env=env, **popen)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert where(tmp_path)["pid"] == proc.pid  # ran where it was started


def test_stop_ends_the_server_and_removes_its_socket(tmp_path, monkeypatch):
    monkeypatch.setenv(job_server.ENV_VAR, os.environ.get(job_server.ENV_VAR, ""))  # restored afterwards
    started = job_server.start(tmp_path / "job_server.log")
    try:
        assert os.environ[job_server.ENV_VAR].endswith(str(started.socket_path))
        wait_for(started.socket_path)
    finally:
        started.stop()
    assert started.process.poll() is not None
    assert not started.socket_path.parent.exists() and job_server.ENV_VAR not in os.environ


def _weights_and_records(results: Path) -> dict[str, tuple]:
    """Per run: its weights, and its per-epoch records without the timings."""
    runs = {}
    for run in sorted((results / "runs").iterdir()):
        epochs = pd.read_parquet(run / "epochs.parquet")
        runs[run.name] = (load_torch(run / "model.pt"),
                          epochs.drop(columns=[c for c in epochs.columns if c.endswith("time_s")]))
    return runs


def test_a_workflow_run_through_the_job_server_writes_what_jobs_in_their_own_processes_write(server, tmp_path):
    # `server` stands for a server this test process inherited: neither workflow may hand it a job
    through, alone = tmp_path / "server", tmp_path / "alone"
    for workdir, on in ((through, True), (alone, False)):
        workdir.mkdir()
        snakemake(workdir, {**tiny_config(), "job_server": on}, "figures/fig1.pdf")
    served = (through / "results" / "logs" / "job_server.log").read_text()
    assert served.count(" exit 0 after ") >= 5  # data, split, training, summary and figure jobs
    assert "train" in served and "report" in served
    assert not (alone / "results" / "logs" / "job_server.log").exists()
    assert str(tmp_path) not in server[1].read_text()
    a, b = _weights_and_records(through / "results"), _weights_and_records(alone / "results")
    assert a.keys() == b.keys() and len(a) >= 3
    for name in a:
        for key, tensor in a[name][0].items():
            assert torch.equal(tensor, b[name][0][key]), (name, key)
        pd.testing.assert_frame_equal(a[name][1], b[name][1])
    summary = json.loads((through / "results" / "plan" / "status.json").read_text())
    assert summary  # onstart ran as before: the status file is written with the server started beside it
