"""The planned spec files through which the workflow tells a job what to train (workflow/rules/common.smk).

A run's (or stream's) spec file holds everything that changes its results or its outputs; it is
rewritten only when that changes, so its modification time tells Snakemake when to re-train. The engine
options that change speed, not results (``channels_last``, ``compile``), live in one engine file for the
whole plan (each training job's entry under its name) that jobs read as an ``ancient`` input: toggling
them re-trains nothing.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from .spec import EngineSpec, RunSpec, StreamSpec

SPEED_OPTIONS = ("channels_last", "compile")


def spec_dict(spec: RunSpec | StreamSpec) -> dict:
    """A planned spec as a dict: the spec without its speed options (a new dict each call)."""
    def strip(d: dict | None) -> None:
        if d:
            if "engine" in d:
                d["engine"] = {k: v for k, v in d["engine"].items() if k not in SPEED_OPTIONS}
            strip(d.get("round"))
            strip(d.get("parent"))
    d = spec.to_dict()
    strip(d)
    return d


def spec_json(spec: RunSpec | StreamSpec) -> str:
    """The content of a planned spec file."""
    return json.dumps(spec_dict(spec), sort_keys=True)


def engines_json(engines: Mapping[str, EngineSpec]) -> str:
    """The content of the planned engine file: training job name -> its speed options."""
    return json.dumps({job: {k: getattr(e, k) for k in SPEED_OPTIONS} for job, e in engines.items()},
                      sort_keys=True)


def _with_engine(d: dict, engine_path, job: str | None) -> dict:
    if engine_path is not None:
        d["engine"] = {**d["engine"], **json.loads(Path(engine_path).read_text())[job]}
    return d


def read_run_spec(spec_path, engine_path=None, job: str | None = None) -> RunSpec:
    """A planned run: its spec file, with the speed options of its training job ``job`` (a block) from
    the engine file."""
    return RunSpec.from_dict(_with_engine(json.loads(Path(spec_path).read_text()), engine_path, job))


def read_stream_spec(spec_path, engine_path=None, job: str | None = None) -> StreamSpec:
    d = json.loads(Path(spec_path).read_text())
    _with_engine(d["round"], engine_path, job)
    return StreamSpec.from_dict(d)
