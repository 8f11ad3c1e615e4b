"""Sharing one core between the event loop and gRPC core's transport threads (README "Overload").

gRPC core reads and writes the sockets on its own EventEngine threads (named ``event_engine``). Under
Linux's default policy each of them preempts the running event loop as soon as bytes arrive. Under
overload on one core that is about one preemption per arriving call: a refused call (HTTP/2's stream
limit) then cost ~30 µs of transport work plus the event loop's lost cache, and refusals, not serving,
bounded goodput at 4x capacity. Under ``SCHED_BATCH`` those threads no longer preempt, so they drain
every arrival at once when they run; but a busy loop then starves them, refusals come back late, and a
client that queues calls beyond the stream limit (as gRPC clients do) serves only stale ones. So the
loop yields the core itself, at most every :data:`YIELD_INTERVAL_NS` while it has work waiting: the
transport waits at most about that long, and the loop is interrupted at an iteration's edge instead of
mid-callback.

Contracts:

- :func:`transport_threads` lists the native ids of this process's threads named as in
  :data:`TRANSPORT_THREAD_NAMES` (``/proc/self/task``); empty where there is no such file system.
- :data:`TRANSPORT` (a :class:`TransportScheduling`) is the process's one record of the policy the
  transport threads should have (``SCHED_BATCH`` or ``SCHED_OTHER``). Setting it skips a thread that
  exits meanwhile and logs a refusal once; it never raises: this is an optimisation, never a reason not
  to serve. gRPC starts more threads under load, so :meth:`TransportScheduling.refresh` lists them again
  (every second, :class:`gateway.poller.CoreSharing`). Long compute on the one core (a batch predicted over
  :data:`LONG_COMPUTE_S`, inline or on an executor thread) holds the core for milliseconds without a
  yield, and batch threads would wait all that time: :meth:`TransportScheduling.long_compute` makes them
  preemptive (``SCHED_OTHER``) while any such batch runs, then batch again. It costs a syscall per
  thread at each edge, and nothing unless batch is on. Its changes and refreshes are serialized by a
  lock (they come from the loop and from executor threads).
- :class:`YieldingSelect` wraps a selector's ``select``: while ``enabled``, a call with ``timeout == 0``
  (the loop has ready callbacks) first yields the core (``os.sched_yield``) when ``interval_ns`` have
  passed since the last yield. A blocking select never yields (the core is free anyway), and the wrapper
  returns what ``select`` returns. :func:`install_yield` puts one on an asyncio selector loop (None for
  a loop without a selector, e.g. uvloop); it is disabled until enabled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: gRPC core's EventEngine worker threads (``/proc/self/task/TID/comm``).
TRANSPORT_THREAD_NAMES = frozenset({"event_engine"})
#: How long a busy loop runs before it yields the core to the transport threads (side runs: README).
YIELD_INTERVAL_NS = 200_000
#: A batch predicted to compute longer than this makes the transport threads preemptive while it runs.
LONG_COMPUTE_S = 500e-6

_TASKS = Path("/proc/self/task")
_warned: set[str] = set()


def transport_threads(tasks: Path = _TASKS) -> list[int]:
    """Native ids of this process's gRPC transport threads (module contract)."""
    found = []
    try:
        entries = list(tasks.iterdir())
    except OSError:
        return []
    for entry in entries:
        try:
            name = (entry / "comm").read_text().strip()
        except OSError:  # the thread exited
            continue
        if name in TRANSPORT_THREAD_NAMES and entry.name.isdigit():
            found.append(int(entry.name))
    return found


def _warn_refused(exc: OSError) -> None:
    if "refused" not in _warned:
        _warned.add("refused")
        log.warning("could not set gRPC's transport threads' scheduling: %s", exc)


class TransportScheduling:
    """The transport threads' policy for the process (module contract); ``refresh`` re-reads the threads."""

    def __init__(self, tasks: Path = _TASKS) -> None:
        self._tasks = tasks
        self._threads: list[int] = []
        self._batch = False
        self._long = 0
        self._applied: int | None = None
        #: Held while the state changes and is applied: the loop thread refreshes (every second) while
        #: executor threads enter and leave long compute, and neither may apply the other's half-changed
        #: state.
        self._lock = threading.Lock()

    @property
    def batch(self) -> bool:
        return self._batch

    def set_batch(self, on: bool) -> None:
        with self._lock:
            self._batch = on
            self._refresh()

    def refresh(self) -> None:
        """Lists the threads again (gRPC starts more under load) and gives them all the current policy."""
        with self._lock:
            self._refresh()

    def _refresh(self) -> None:
        self._threads = transport_threads(self._tasks)
        self._applied = None
        self._apply()

    def _apply(self) -> None:
        policy = os.SCHED_BATCH if self._batch and self._long == 0 else os.SCHED_OTHER
        if policy == self._applied:
            return
        self._applied = policy
        for tid in self._threads:
            try:
                os.sched_setscheduler(tid, policy, os.sched_param(0))
            except ProcessLookupError:
                continue
            except OSError as exc:
                _warn_refused(exc)
                break

    @contextlib.contextmanager
    def long_compute(self) -> Iterator[None]:
        """The transport threads preempt while this block runs (module contract); nested blocks count."""
        if not self._batch:
            yield
            return
        with self._lock:
            self._long += 1
            self._apply()
        try:
            yield
        finally:
            with self._lock:
                self._long -= 1
                self._apply()


#: The process's transport threads (module contract).
TRANSPORT = TransportScheduling()


class YieldingSelect:
    """A selector's ``select`` that yields the core to other threads while the loop is busy (module doc)."""

    def __init__(
        self,
        select: Callable[..., Any],
        interval_ns: int = YIELD_INTERVAL_NS,
        clock: Callable[[], int] = time.monotonic_ns,
        yield_core: Callable[[], None] = os.sched_yield,
    ) -> None:
        self._select = select
        self._interval_ns = interval_ns
        self._clock = clock
        self._yield_core = yield_core
        self._last = clock()
        self.enabled = False
        self.yields = 0

    def __call__(self, timeout: float | None = None) -> Any:
        if timeout == 0 and self.enabled:
            now = self._clock()
            if now - self._last >= self._interval_ns:
                self._last = now
                self.yields += 1
                self._yield_core()
        return self._select(timeout)


def install_yield(
    loop: asyncio.AbstractEventLoop, interval_ns: int = YIELD_INTERVAL_NS
) -> YieldingSelect | None:
    """Wraps ``loop``'s selector (disabled until enabled); None when the loop has no selector."""
    selector = getattr(loop, "_selector", None)  # asyncio's selector loops; uvloop has none
    if selector is None:
        return None
    current = selector.select
    if isinstance(current, YieldingSelect):
        return current
    wrapper = YieldingSelect(current, interval_ns)
    selector.select = wrapper
    return wrapper
