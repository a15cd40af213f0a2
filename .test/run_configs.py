"""CI for the tiny configs of .test/config/ (the tests' configs): each one is linted and dry-run through the
workflow in a fresh working directory (which must write nothing there but the experiments' plans), and one small target, RUN_FOR_REAL, is built for real (a quarter of a
minute on 2 cores; every config's full run is in the tests).

    python .test/run_configs.py [--cores 2]       # `make test-configs`

A config that reads user files (user_data.yaml) gets them made first, by the tests' own helper.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RUN_FOR_REAL = ("tiny", "figures/fig1.pdf")  # data, split, three runs, their summary and a figure


def make_inputs(name: str, workdir: Path) -> None:
    """The files a config reads from its working directory."""
    if name == "user_data":
        sys.path.insert(0, str(REPO / "tests"))
        from test_user_data import make_user_files

        make_user_files(workdir)


def snakemake(config: Path, workdir: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(config), *args]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"FAILED: {' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    print(f"ok  {config.stem:12} {' '.join(args):32} {time.monotonic() - started:5.1f} s", flush=True)
    return proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", default="2")
    cores = parser.parse_args().cores
    for config in sorted((HERE / "config").glob("*.yaml")):
        with tempfile.TemporaryDirectory(prefix=f"test-config-{config.stem}-") as tmp:
            workdir = Path(tmp)
            make_inputs(config.stem, workdir)
            inputs = set(workdir.rglob("*"))
            snakemake(config, workdir, "--lint")
            snakemake(config, workdir, "-n", "--quiet", "rules", "--cores", cores)
            written = sorted(str(p.relative_to(workdir)) for p in set(workdir.rglob("*")) - inputs
                             if p.is_file() and p.relative_to(workdir).parts[0] != ".snakemake"  # Snakemake's own
                             and p.parent.relative_to(workdir) != Path("results/plan/experiments"))  # common.smk: why
            if written:
                sys.exit(f"FAILED: a lint and a dry run of {config.name} wrote {written}")
            name, target = RUN_FOR_REAL
            if config.stem == name:
                snakemake(config, workdir, "--cores", cores, target)
                if "Nothing to be done" not in snakemake(config, workdir, "-n", "--cores", cores, target):
                    sys.exit(f"FAILED: {config.name} has work left after its run")


if __name__ == "__main__":
    main()
