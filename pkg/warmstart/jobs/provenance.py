"""What produced a result: recorded in each run's ``metrics.json`` and each stream's ``spec.json``.

``provenance(device)`` gives the package version, the git commit of the checkout the library runs from
(``-dirty`` when tracked files have changes; None outside a checkout), the torch and Python versions, the
device's name and the CPU thread count. The version and the commit are computed once per process; finding
them never fails a job (at worst they are "unknown" / None).
"""
from __future__ import annotations

import functools
import os
import platform
import re
import subprocess
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # warmstart/, in pkg/ of a checkout


@functools.lru_cache(maxsize=None)
def package_version() -> str:
    """The installed distribution's version, else the version in the checkout's pyproject.toml."""
    import importlib.metadata

    try:
        return importlib.metadata.version("warmstart")
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        text = (PACKAGE_DIR.parents[1] / "pyproject.toml").read_text()
        project = text.split("[project]", 1)[1].split("\n[", 1)[0]
        return re.search(r'^version\s*=\s*"([^"]+)"', project, re.MULTILINE).group(1)
    except (OSError, IndexError, AttributeError):
        return "unknown"


@functools.lru_cache(maxsize=None)
def git_commit() -> str | None:
    """``git rev-parse HEAD`` of the repository the library's files are tracked in, with ``-dirty`` when
    tracked files differ from it (untracked files are not counted, as in ``git describe --dirty``); None
    when the library is not in a git checkout (e.g. installed), git is missing or anything goes wrong.
    Reads only: no index refresh is written (GIT_OPTIONAL_LOCKS=0)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["GIT_OPTIONAL_LOCKS"] = "0"

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(PACKAGE_DIR), *args], capture_output=True, text=True,
                              timeout=10, env=env, stdin=subprocess.DEVNULL)
    try:
        # the library itself must be tracked: a copy installed inside some other checkout is not from it
        if git("ls-files", "--error-unmatch", "--", "__init__.py").returncode != 0:
            return None
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        status = git("status", "--porcelain", "--untracked-files=no")
        dirty = status.returncode != 0 or bool(status.stdout.strip())
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def device_name(device) -> str:
    """``cpu``, or the GPU's model name (e.g. ``NVIDIA H100 80GB HBM3``)."""
    import torch

    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)


def provenance(device) -> dict:
    """The record of what ran: see the module's docstring."""
    import torch

    return {"warmstart_version": package_version(), "git_commit": git_commit(), "torch": torch.__version__,
            "python": platform.python_version(), "device": device_name(device),
            "threads": torch.get_num_threads()}
