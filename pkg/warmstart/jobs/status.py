"""``make status``: how far each experiment has got, counted from the files alone (no Snakemake, no lock).

The workflow writes ``<results>/plan/status.json`` when it starts jobs (its ``onstart``): for every experiment, each
planned run or stream with the files that tell its state (paths relative to ``<results>``). A unit is

* **finished** when its published result exists (a run's ``metrics.json``, a stream's ``rounds.parquet``);
* **running** when its training job's log changed in the last ``recent_s`` seconds (a job logs at least
  every 10 s while it trains);
* **interrupted** when its job left resumable state (a killed or preempted job; the next run of the
  workflow resumes it) but is not running;
* **missing** otherwise (not started yet, or started and killed before its first save).

    python -m warmstart.jobs.status [RESULTS_DIR ...]   # default: results/ and results/*/ (the demo's)
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

STATES = ("finished", "running", "interrupted", "missing")


def unit_state(unit: dict, results: Path, now: float, recent_s: float = 60.0) -> str:
    if (results / unit["done"]).exists():
        return "finished"
    log = results / unit["log"]
    if log.exists() and now - log.stat().st_mtime < recent_s:
        return "running"
    if (results / unit["resume"]).exists():
        return "interrupted"
    return "missing"


def experiment_counts(status_file: str | Path, now: float | None = None, recent_s: float = 60.0) -> dict:
    """experiment -> {state: count} for one results directory's plan (``<results>/plan/status.json``)."""
    now = time.time() if now is None else now
    results = Path(status_file).parent.parent
    plan = json.loads(Path(status_file).read_text())
    return {name: {s: sum(unit_state(u, results, now, recent_s) == s for u in units) for s in STATES}
            for name, units in plan.items()}


def format_counts(results_dir: str, counts: dict) -> list[str]:
    width = max((len(n) for n in counts), default=0)
    lines = []
    for name, c in counts.items():
        total = sum(c.values())
        lines.append(f"{results_dir}  {name:<{width}}  {c['finished']}/{total} finished  {c['running']} running  "
                     f"{c['interrupted']} interrupted  {c['missing']} missing")
    return lines


def main(argv: list[str]) -> int:
    dirs = [Path(d) for d in argv] or [d for d in (Path("results"), *sorted(Path("results").glob("*")))
                                        if (d / "plan" / "status.json").exists()]
    files = [d / "plan" / "status.json" for d in dirs]
    if not files:
        print("no plan found: run the workflow (snakemake writes <results>/plan/status.json when it starts jobs)")
        return 1
    for f in files:
        if not f.exists():
            print(f"{f}: not found (has the workflow run jobs for this config yet?)")
            continue
        print("\n".join(format_counts(str(f.parent.parent), experiment_counts(f))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
