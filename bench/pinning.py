"""Where the hotpath section's processes run: a plan that puts the server on one core and the load client
on the others, and the calls that apply it and read a server's memory.

Contracts: :func:`cpu_plan` pins only with two or more usable cores and ``taskset`` (otherwise it says
why); :func:`pin` pins every thread of a process (``taskset -a -p``); :func:`client_pinned` moves this
process, hence the load clients it starts, to the plan's client CPUs for a block and back after it;
:func:`servers_pinned` does that and pins servers to the server CPUs for the block, then frees them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["client_pinned", "cpu_plan", "pin", "rss_kib", "servers_pinned"]


def rss_kib(pid: int) -> int | None:
    """``VmRSS`` of process ``pid`` in KiB; None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def pin(pid: int, cpus: list[int]) -> None:
    """Pins every thread of ``pid`` to ``cpus`` with ``taskset -a -p`` (CalledProcessError if it fails)."""
    subprocess.run(
        ["taskset", "-a", "-p", "-c", ",".join(map(str, cpus)), str(pid)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip


def cpu_plan() -> dict[str, Any]:
    """``{"pinned", "server_cpus", "client_cpus", "why"}``: the first usable CPU for the server, the rest
    for the client; unpinned (both on every usable CPU, ``why`` says why) with one core or no taskset."""
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        why = f"not pinned: only {len(usable)} usable core(s)"
        return {"pinned": False, "server_cpus": usable, "client_cpus": usable, "why": why}
    if shutil.which("taskset") is None:
        return {
            "pinned": False,
            "server_cpus": usable,
            "client_cpus": usable,
            "why": "not pinned: no taskset",
        }
    return {"pinned": True, "server_cpus": usable[:1], "client_cpus": usable[1:], "why": ""}


@contextmanager
def servers_pinned(plan: dict[str, Any], pids: list[int]) -> Iterator[None]:
    """The servers ``pids`` on the plan's server CPUs and this process (hence its load clients) on the
    client CPUs for the block; afterwards the servers run on every CPU this process may use again."""
    everywhere = sorted(os.sched_getaffinity(0))
    for pid in pids:
        pin(pid, plan["server_cpus"])
    try:
        with client_pinned(plan):
            yield
    finally:
        for pid in pids:
            pin(pid, everywhere)


@contextmanager
def client_pinned(plan: dict[str, Any]) -> Iterator[None]:
    """This process (and the load clients it starts) on the plan's client CPUs for the block."""
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(plan["client_cpus"]))
    try:
        yield
    finally:
        os.sched_setaffinity(0, mine)
