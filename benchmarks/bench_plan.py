"""How long `snakemake -n` takes on the paper's config.yaml, and how that grows with the number of runs.

First config.yaml as shipped, then with each experiment's seed list replaced by 5, 10 and 20 seeds; each
dry run is a fresh process in an empty working directory (so nothing is found done), timed from start to
exit; the median, minimum and maximum of ``--reps``.

    python benchmarks/bench_plan.py
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def dry_run(config: dict, workdir: Path) -> tuple[float, int]:
    cfg = workdir / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "--snakefile",
                          str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile", str(cfg),
                          "--cores", "1"], capture_output=True, text=True, check=True).stdout
    elapsed = time.perf_counter() - t0
    return elapsed, int(re.search(r"^total\s+(\d+)$", out, flags=re.M).group(1))


def main(argv=None, log=print) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", nargs="*", type=int, default=[5, 10, 20], help="seed counts after the shipped config")
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv)
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    rows = []
    for n in [None, *args.seeds]:
        config = yaml.safe_load(yaml.safe_dump(base))
        if n is not None:
            for experiment in config["experiments"].values():
                experiment["seeds"] = list(range(n))
        times = []
        for _ in range(args.reps):
            with tempfile.TemporaryDirectory() as tmp:
                t, jobs = dry_run(config, Path(tmp))
            times.append(t)
        rows.append({"seeds": n or "as shipped", "jobs": jobs, "dry_run_s": statistics.median(times),
                     "min_s": min(times), "max_s": max(times)})
        log(f"{'config.yaml' if n is None else f'{n:3d} seeds':>11}: {jobs:5d} jobs, snakemake -n "
            f"{rows[-1]['dry_run_s']:.1f} s (min {min(times):.1f}, max {max(times):.1f}; "
            f"{1000 * rows[-1]['dry_run_s'] / jobs:.1f} ms per job)")
    return rows


if __name__ == "__main__":
    main()
