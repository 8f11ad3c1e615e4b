"""Where a run happened: machine, versions and git commit for the JSON report, and machine CPU sampling.

Contracts:

* :func:`environment` never fails: a fact it cannot get (no git, no ``/proc``) is ``null``.
* ``started_at`` is wall-clock UTC, for the record only; no duration anywhere is computed from it.
* :func:`cpu_times` reads ``/proc/stat`` (Linux); :func:`busy_fraction` of two readings is the share of
  all the machine's CPU time that was not idle in between, or None where ``/proc/stat`` is missing.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["busy_fraction", "cpu_times", "environment", "git_commit"]

_PACKAGES = ("grpcio", "protobuf", "numpy", "onnxruntime", "matplotlib", "infergate")
_REPO = Path(__file__).resolve().parent.parent


def git_commit(repo: Path = _REPO) -> tuple[str | None, bool | None]:
    """(commit sha, working tree dirty) of ``repo``; (None, None) outside git."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return sha or None, bool(status.strip())


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def environment() -> dict[str, Any]:
    """Machine, software versions and git state (see the module contract)."""
    commit, dirty = git_commit()
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "load_average": load,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "versions": {name: _version(name) for name in _PACKAGES},
        "git_commit": commit,
        "git_dirty": dirty,
    }


def cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from ``/proc/stat``; None where unavailable."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return total - idle, total


def busy_fraction(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Share of the machine's CPU time that was busy between two :func:`cpu_times` readings."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])
