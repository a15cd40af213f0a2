"""The tests' Snakemake command (tests/snakemake_cli.py) is Snakemake as a user runs it: forked from a
process that imported it once, it runs in the command's directory with its arguments, streams and exit
status, and the workflow's jobs see nothing of the tests' server."""
from __future__ import annotations

import re
import subprocess
import textwrap

import snakemake_cli
from warmstart.jobs import job_server

SNAKEFILE = textwrap.dedent("""
    rule all:
        output: "env.txt"
        shell: "env > {output}; echo done by a job"
""")


def run(tmp_path, *args):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    command, env = snakemake_cli.command()
    return subprocess.run([*command, "--cores", "1", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_tests_snakemake_is_a_forked_child_of_their_server_and_its_jobs_see_no_trace_of_it(tmp_path):
    proc = run(tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "done by a job" in proc.stdout + proc.stderr  # the command's own streams
    names = {line.split("=", 1)[0] for line in (tmp_path / "env.txt").read_text().splitlines() if "=" in line}
    assert job_server.ENV_VAR not in names and job_server.IN_CHILD_VAR not in names
    ran = re.findall(r"^job \d+ (\S+): exit (-?\d+)", snakemake_cli.server_log().read_text(), flags=re.M)
    assert (snakemake_cli.__file__, "0") in ran


def test_the_tests_snakemake_fails_as_snakemake_fails(tmp_path):
    proc = run(tmp_path, "no_such_target")
    assert proc.returncode == 1 and "no_such_target" in proc.stderr
