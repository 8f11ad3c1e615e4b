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

gRPC core's own transport threads preempt the loop the same way, once per arriving call under overload;
:class:`CoreSharing` gives them the poller's policy and, under ``batch``, lets the busy loop yield the
core at a bounded interval so they are not starved (:mod:`gateway.sharing`, README has the figures).

Contracts:

- ``--poller-scheduling`` (:data:`CHOICES`): ``auto`` is ``batch`` while the process may use one core only
  and ``normal`` otherwise, re-applied whenever the core watch's answer changes (:func:`follow_cores`).
  The batch executor consults the watch only on some paths, so :func:`apply_choice` (the server's one
  call) also starts :func:`watch_cores`, which asks it every ``period_s`` whatever the traffic
  (``taskset -p`` on a live gateway, an in-place pod resize), and returns that task. A fixed choice gets
  a task too, which re-applies the policy to transport threads gRPC starts later.
- :class:`CoreSharing` applies one choice to the poller, the transport threads and the loop's yield
  (enabled under ``batch`` only).
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
from gateway.sharing import TRANSPORT, install_yield

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


class CoreSharing:
    """One policy for every thread that shares the loop's core (module doc): the poller's, gRPC core's
    transport threads' (:mod:`gateway.sharing`), and whether the loop yields the core while busy (only
    under ``batch``, whose threads would otherwise wait for the loop's whole time slice)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.policy: str | None = None
        self.yielding = install_yield(loop) if loop is not None else None

    def apply(self, policy: str) -> None:
        schedule_completion_poller(policy)
        TRANSPORT.set_batch(policy == "batch")
        if self.yielding is not None:
            self.yielding.enabled = policy == "batch"
        self.policy = policy

    def refresh(self) -> None:
        """Gives threads gRPC started since the last apply the current policy."""
        if self.policy is not None:
            TRANSPORT.refresh()


def follow_cores(watch: CoreWatch, now: float, sharing: CoreSharing | None = None) -> CoreSharing:
    """``auto``: ``batch`` while ``watch`` says one usable core, ``normal`` otherwise, from ``now`` on."""
    sharing = sharing if sharing is not None else CoreSharing()

    def apply(solo: bool) -> None:
        sharing.apply("batch" if solo else "normal")

    watch.subscribe(apply, now)
    return sharing


async def watch_cores(
    watch: CoreWatch,
    period_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sharing: CoreSharing | None = None,
) -> None:
    """Asks ``watch`` every ``period_s`` until cancelled, so its subscribers hear of a change without
    traffic (module doc), and gives new transport threads the current policy."""
    while True:
        watch.solo(clock())
        if sharing is not None:
            sharing.refresh()
        await asyncio.sleep(period_s)


def apply_choice(choice: str, watch: CoreWatch) -> asyncio.Task[None]:
    """Applies a ``--poller-scheduling`` choice on the running loop: a fixed policy at once, ``auto`` by
    following ``watch``. Returns the task of :func:`watch_cores` that keeps it current (new transport
    threads, and for ``auto`` the core count), for the caller to cancel on shutdown."""
    sharing = CoreSharing(asyncio.get_running_loop())
    if choice == "auto":
        follow_cores(watch, time.monotonic(), sharing)
    else:
        sharing.apply(choice)
    return asyncio.create_task(watch_cores(watch, sharing=sharing), name="core-watch")
