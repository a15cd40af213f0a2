"""The plan's files: the files through which the workflow tells a job what to train
(workflow/rules/common.smk), and the files a run writes (``RUN_FILES``, ``probe_file``, ...), named here
once for the workflow's rules and the job that writes them (``warmstart.jobs``).

The planned files are of three kinds, each chosen so that no edit of the config (and no dry run) can make a
finished run look out of date unless its results would change:

* the jobs file (``plan/jobs.json``, an ``ancient`` input of every training job, rewritten for the current
  config before any job runs) holds, per training job, its runs in the job's order, each with what
  determines its numbers, and only that (``run_dict``: a function of the run's name, the hash of its
  identity, so whichever config writes the file a run's entry is the same), and what the current config
  asks of it that does not change its numbers: the speed options (``channels_last``, ``compile``) and the
  run's requests (``requests``: the probes to measure, the checkpoints and optimiser state to keep). A
  request that is added makes a new output file (a probe's table, a checkpoint, ``optimizer.pt``) and so
  trains the run again; one that is removed leaves the run as it is (more than asked for satisfies the
  request). It also says whether this invocation lets a training job take a run's published files
  instead of training it again (``reuse_published``: not when the invocation forces jobs to run). One
  file rather than one per run: a file per run was a Snakemake job per run, about a quarter of the
  paper config's jobs (and of its dry run's time);
* a stream's spec file (``plan/streams/<stream>.json``), below;
* an experiment's plan file (``plan/experiments/<experiment>-<hash>.json``) holds its runs as it plans
  them, with its labels: named by its content, so that a summary follows its experiment's plan and no
  other config's plan ever rewrites it.

A stream's spec file holds the whole stream (its probes included): a stream writes its probes' values
into its rounds table, so a stream is trained again when its probes change.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Mapping

from warmstart.core.identity import short_hash
from warmstart.core.spec import EngineSpec, ProbeSpec, RunSpec, StreamSpec
from warmstart.plan import config_labels  # noqa: F401  (the registries a spec's identity reads: core.identity)

# The files of every run's directory, written in this order (the model last: its presence means the rest are there)
RUN_FILES = ("spec.json", "metrics.json", "epochs.parquet", "model.pt")
OPTIMIZER_FILE = "optimizer.pt"  # the final optimiser state, when a child run continues it (keep_optimizer)
# The files of an online stream's directory, in the order written (its rounds last)
STREAM_FILES = ("spec.json", "rounds.parquet")


def checkpoint_file(epoch: int) -> str:
    """The weights after ``epoch``, when a child run starts there (``RunSpec.checkpoints``)."""
    return f"checkpoints/epoch{epoch}.pt"


def run_file_names(spec: RunSpec) -> list[str]:
    """Every file of ``spec``'s run directory as the current plan asks for it: ``RUN_FILES`` with the
    requested extras (its probes' tables, the kept optimiser state, the kept checkpoints) before the model."""
    *first, last = RUN_FILES
    extras = [probe_file(p) for p in spec.probes] + ([OPTIMIZER_FILE] if spec.keep_optimizer else [])
    return [*first, *extras, *(checkpoint_file(e) for e in spec.checkpoints), last]


SPEED_OPTIONS = ("channels_last", "compile")
REQUESTS = ("probes", "checkpoints", "keep_optimizer")


def _strip(d: dict | None, keys: tuple[str, ...]) -> None:
    """Remove the speed options and ``keys`` from a spec dict, its stream round and its parents."""
    if d:
        if "engine" in d:
            d["engine"] = {k: v for k, v in d["engine"].items() if k not in SPEED_OPTIONS}
        for key in keys:
            d.pop(key, None)
        _strip(d.get("round"), keys)
        _strip(d.get("parent"), keys)


def planned_dict(spec: RunSpec | StreamSpec) -> dict:
    """A planned spec as an experiment plans it (its requests included), without its speed options."""
    d = spec.to_dict()
    _strip(d, ())
    return d


def run_dict(spec: RunSpec) -> dict:
    """What a run's spec file holds: the spec without speed options or requests, recursively; a function
    of the run's identity (a fixed-epoch run's unused threshold is left out too)."""
    d = spec.to_dict()
    _strip(d, REQUESTS)

    def canonical(d: dict | None, s: RunSpec | None) -> None:
        if d is not None:
            d["stop"] = s.stop.canonical()
            if s.parent_epoch is not None:  # the one checkpoint of its parent that this run starts from
                d["parent"]["checkpoints"] = [s.parent_epoch]
            canonical(d.get("parent"), s.parent)
    canonical(d, spec)
    return d


def spec_json(spec: RunSpec | StreamSpec) -> str:
    """The content of a stream's planned spec file (``plan/streams/``), or of a run's spec file for
    ``read_run_spec`` (a run's entry in the jobs file is its ``run_dict``)."""
    return json.dumps(run_dict(spec) if isinstance(spec, RunSpec) else planned_dict(spec), sort_keys=True)


def requests(spec: RunSpec) -> dict:
    """What the config asks a run to measure and keep, beyond its numbers."""
    return {"probes": [{"name": p.name, "options": p.options} for p in spec.probes],
            "checkpoints": list(spec.checkpoints), "keep_optimizer": spec.keep_optimizer}


def probe_file(probe: ProbeSpec) -> str:
    """A probe's table in a run directory, named by the probe and (when it has any) a hash of its options."""
    return f"probes/{probe.name}{'-' + short_hash(probe.options, 8) if probe.options else ''}.parquet"


JOBS_FORMAT = 2  # the jobs file's layout; a job refuses a file of another (``_jobs_file``)


def jobs_json(engines: Mapping[str, EngineSpec], runs: Mapping[str, list[RunSpec]],
              reuse_published: bool = True) -> str:
    """The content of the jobs file: training job name -> its speed options and its runs (``runs``: job
    name -> its runs in the job's order; a stream job has none), each as its spec file's content and its
    requests; and whether a job may take a run's or stream's published files instead of training it again
    (``reuse_published``)."""
    return json.dumps({"format": JOBS_FORMAT,
                       "jobs": {job: {"engine": {k: getattr(e, k) for k in SPEED_OPTIONS},
                                      "runs": [{"spec": run_dict(s), **requests(s)} for s in runs.get(job, ())]}
                                for job, e in engines.items()},
                       "reuse_published": reuse_published}, sort_keys=True)


def reuse_published(jobs_path) -> bool:
    """Whether the jobs file lets a training job reuse published runs and streams (``jobs_json``)."""
    return bool(_jobs_file(jobs_path)["reuse_published"])


_LAST_READ: dict = {}  # the jobs file last parsed, by path and (mtime, size): a job reads it per stream and for reuse


def _jobs_file(jobs_path) -> dict:
    stat = os.stat(jobs_path)
    key = (str(jobs_path), stat.st_mtime_ns, stat.st_size)
    if key not in _LAST_READ:
        _LAST_READ.clear()
        _LAST_READ[key] = json.loads(Path(jobs_path).read_text())
    content = _LAST_READ[key]
    if content.get("format") != JOBS_FORMAT:
        raise ValueError(f"{jobs_path} was written by an older release of warmstart: delete it, and the next "
                         "snakemake run writes it again (it holds no results)")
    return content


def experiment_json(planned) -> str:
    """The content of an experiment's plan file: its planned runs (or streams) with their labels."""
    return json.dumps([{"spec": planned_dict(p.spec), "labels": p.labels} for p in planned], sort_keys=True)


def experiment_file_name(experiment: str, content: str) -> str:
    return f"{experiment}-{short_hash(content, 12)}"


def _job_entry(jobs_path, job: str | None) -> dict:
    return _jobs_file(jobs_path)["jobs"][job] if jobs_path is not None else {}


def read_run_spec(spec_path) -> RunSpec:
    """A run from a file of ``spec_json``'s content (a benchmark writes such files for its own jobs)."""
    return RunSpec.from_dict(json.loads(Path(spec_path).read_text()))


def read_job_runs(jobs_path, job: str, expected: int | None = None) -> list[RunSpec]:
    """The runs of training job ``job`` in its order, from the jobs file: each run's spec with the job's
    speed options and the run's requests. ``expected``: how many runs the job's inputs are for."""
    entry = _job_entry(jobs_path, job)
    if expected is not None and len(entry["runs"]) != expected:
        raise ValueError(f"{jobs_path} plans {len(entry['runs'])} runs for job {job}, its inputs {expected}: "
                         "the file is not the current config's (written without Snakemake's onstart?); delete "
                         "it, and the next snakemake run writes it again")
    runs = []
    for wanted in entry["runs"]:
        spec = RunSpec.from_dict(wanted["spec"])
        engine = EngineSpec(**{**dataclasses.asdict(spec.engine), **entry["engine"]})
        runs.append(spec.replace(engine=engine, probes=tuple(wanted["probes"]),
                                 checkpoints=tuple(wanted["checkpoints"]), keep_optimizer=wanted["keep_optimizer"]))
    return runs


def read_stream_spec(spec_path, jobs_path=None, job: str | None = None) -> StreamSpec:
    d = json.loads(Path(spec_path).read_text())
    entry = _job_entry(jobs_path, job)
    if entry:
        d["round"]["engine"] = {**d["round"]["engine"], **entry["engine"]}
    return StreamSpec.from_dict(d)
