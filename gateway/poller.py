"""Scheduling of grpc.aio's completion-queue poller thread (README "Overload", "The poller").

grpc.aio runs one Python thread per process (``PollerCompletionQueue._poll_wrapper``, started when the first
grpc.aio server or channel is created) that waits on gRPC core's completion queue and hands each event to
the event loop. Under Linux's default policy every event wakes it, and the kernel lets the freshly woken
thread preempt the running event loop at once. On a gateway pinned to one core that was about 4 wake-ups
of the poller and 4.5 preemptions of the event loop per 1-row call (``/proc/PID/task/TID/status``), and
34-36 µs of the poller's own CPU per call. Under ``SCHED_BATCH`` (same CPU share, but its wake-ups do not
preempt the running thread) the poller runs when the loop yields the core and drains every event queued
meanwhile: 0.3-0.4 preemptions and 11-13 µs per call. Closed-loop capacity rose by about a fifth, and
goodput under 2x overload by a third or more, in side runs on the 2-core host (README has the figures).

The gain is the one core's: where the process may use more cores (unpinned, no cgroup quota of one CPU)
the poller and the loop run side by side, and a batch poller's wake-up can wait behind another thread's
time slice, which cost a lone 1-row call latency in one hot-path run (C=1 p50 ÷ echo 1.30, against 1.02
with both pinned to one core). So ``auto``, the default, follows :data:`gateway.cores.PROCESS_CORES`.

Contracts:

- ``--poller-scheduling`` (:data:`CHOICES`): ``auto`` is ``batch`` while the process may use one core only
  and ``normal`` otherwise, re-applied whenever the core watch's answer changes (:func:`follow_cores`).
  The batch executor consults the watch only on some paths, so :func:`apply_choice` (the server's one
  call) also starts :func:`watch_cores`, which asks it every ``period_s`` whatever the traffic
  (``taskset -p`` on a live gateway, an in-place pod resize), and returns that task.
- :func:`schedule_completion_poller` sets the poller thread's policy (``"batch"``: ``SCHED_BATCH``;
  ``"normal"``: ``SCHED_OTHER``, the default policy) and returns the thread's native id. It returns None,
  and logs why at most once per reason, when there is no such thread (grpc.aio not started, or a grpcio
  that names it differently), the platform has no such policy, or the kernel refuses. It never raises:
  the poller's policy is an optimisation, never a reason not to serve.
- Call it after creating a grpc.aio server; the policy lasts for the thread's life (the process's).
- A lone call loses nothing: when the event loop waits in epoll, the core is idle and the woken poller
  runs at once, whatever its policy.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable

from gateway.cores import CoreWatch

log = logging.getLogger(__name__)

#: The method grpc.aio's poller thread runs (its ``threading.Thread`` target).
POLLER_TARGET = "_poll_wrapper"
#: Fixed policies -> ``os`` policy attribute names.
POLICIES = {"batch": "SCHED_BATCH", "normal": "SCHED_OTHER"}
#: ``--poller-scheduling`` choices: ``auto`` (the default) or a fixed policy.
CHOICES = ("auto", *POLICIES)

_warned: set[str] = set()


def completion_poller() -> threading.Thread | None:
    """grpc.aio's poller thread, found by its target (``_poll_wrapper``), or None."""
    for thread in threading.enumerate():
        target = getattr(thread, "_target", None)
        if getattr(target, "__name__", "") == POLLER_TARGET or thread.name.endswith(f"({POLLER_TARGET})"):
            return thread
    return None


def _warn_once(reason: str, message: str, *args: object) -> None:
    if reason not in _warned:
        _warned.add(reason)
        log.warning(message, *args)


def schedule_completion_poller(policy: str) -> int | None:
    """Gives the poller thread ``policy`` (a key of :data:`POLICIES`); its native id, or None (module doc).
    ValueError for an unknown policy name (a configuration error, caught at start-up)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown poller scheduling {policy!r}; expected one of {sorted(POLICIES)}")
    constant = getattr(os, POLICIES[policy], None)
    setter = getattr(os, "sched_setscheduler", None)
    if constant is None or setter is None:
        _warn_once("platform", "poller scheduling %r is not available on this platform", policy)
        return None
    thread = completion_poller()
    if thread is None or thread.native_id is None:
        _warn_once("missing", "grpc.aio's completion poller thread was not found; its policy is unchanged")
        return None
    try:
        setter(thread.native_id, constant, os.sched_param(0))
    except OSError as exc:
        _warn_once("refused", "could not set the completion poller's scheduling to %r: %s", policy, exc)
        return None
    log.info("grpc.aio's completion poller (thread %d) runs under %s", thread.native_id, POLICIES[policy])
    return thread.native_id


def follow_cores(watch: CoreWatch, now: float) -> None:
    """``auto``: ``batch`` while ``watch`` says one usable core, ``normal`` otherwise, from ``now`` on."""

    def apply(solo: bool) -> None:
        schedule_completion_poller("batch" if solo else "normal")

    watch.subscribe(apply, now)


async def watch_cores(
    watch: CoreWatch, period_s: float = 1.0, clock: Callable[[], float] = time.monotonic
) -> None:
    """Asks ``watch`` every ``period_s`` until cancelled, so its subscribers hear of a change without
    traffic (module doc)."""
    while True:
        watch.solo(clock())
        await asyncio.sleep(period_s)


def apply_choice(choice: str, watch: CoreWatch) -> asyncio.Task[None] | None:
    """Applies a ``--poller-scheduling`` choice on the running loop: a fixed policy is set once (None);
    ``auto`` follows ``watch``, and the task of :func:`watch_cores` that keeps it informed is returned for
    the caller to cancel on shutdown."""
    if choice != "auto":
        schedule_completion_poller(choice)
        return None
    follow_cores(watch, time.monotonic())
    return asyncio.create_task(watch_cores(watch), name="core-watch")
