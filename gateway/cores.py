"""How many cores this process may use: its CPU affinity (cpusets, ``taskset``) and its cgroup's CPU quota
(a container's ``limits.cpu``), whichever is smaller.

The gateway sizes onnxruntime's thread pools from it (:func:`gateway.runner.default_intra_op_threads`), and
the batch executor asks :class:`CoreWatch` whether the process is down to one core: there, handing a batch
to the runner's executor thread buys no parallelism, only a thread hop and a context switch each way, and
it lets the event loop keep taking calls from gRPC core that the one core cannot serve in time.

Contracts:
- :func:`quota_cores` reads cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us`` under a
  cgroup mount ``root``; None when there is no quota (``max``, ``-1``) or no readable file.
- :func:`usable_cores` is at least 1: the affinity count, capped by the quota rounded up (1.5 CPUs of
  quota can keep two threads busy part of the time).
- :class:`CoreWatch` reads the count at most once per ``refresh_s`` of the caller's clock (affinity and
  quotas can change while the process runs: ``taskset -p``, an in-place pod resize), so asking costs one
  comparison on the hot path; it logs one INFO line each time the answer changes, and calls its
  subscribers (:meth:`CoreWatch.subscribe`; gateway/poller.py's ``auto`` policy) with the new answer.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["CGROUP_ROOT", "PROCESS_CORES", "CoreWatch", "quota_cores", "usable_cores"]

CGROUP_ROOT = Path("/sys/fs/cgroup")
#: cgroup v1 mounts the CPU controller under one of these names.
_V1_DIRS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


def quota_cores(root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota of the cgroup mounted at ``root``, in cores; None without one."""
    try:
        fields = (root / "cpu.max").read_text().split()
    except OSError:
        fields = []
    if len(fields) == 2:
        quota, period = fields
        return None if quota == "max" else _ratio(quota, period)
    for name in _V1_DIRS:
        try:
            quota = (root / name / "cpu.cfs_quota_us").read_text().strip()
            period = (root / name / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            continue
        return _ratio(quota, period)
    return None


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def usable_cores(root: Path = CGROUP_ROOT, affinity: Callable[[], int] = _affinity) -> int:
    """Cores this process may run on: the affinity count, capped by the cgroup quota (rounded up)."""
    cores = max(1, affinity())
    quota = quota_cores(root)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return cores


class CoreWatch:
    """Whether the process is down to one usable core, re-read at most once per ``refresh_s``."""

    def __init__(self, probe: Callable[[], int] = usable_cores, refresh_s: float = 1.0) -> None:
        self._probe = probe
        self._refresh_s = refresh_s
        self._next = -math.inf
        self._solo = False
        self._listeners: list[Callable[[bool], None]] = []

    def subscribe(self, listener: Callable[[bool], None], now: float) -> None:
        """Calls ``listener`` with the answer at ``now``, then each time :meth:`solo` finds it changed."""
        self._listeners.append(listener)
        listener(self.solo(now))

    def solo(self, now: float) -> bool:
        """True while the process may use one core only; ``now`` is the caller's monotonic clock."""
        if now >= self._next:
            solo = self._probe() <= 1
            if solo != self._solo:
                log.info(
                    "one usable core: short CPU batches run on the event loop"
                    if solo
                    else "more than one usable core: batches run on their runner's thread"
                )
            changed, self._solo = solo != self._solo, solo
            self._next = now + self._refresh_s
            for listener in self._listeners if changed else ():
                listener(solo)
        return self._solo


#: The watch every loaded version's batch executor shares (one probe per second per process).
PROCESS_CORES = CoreWatch()
