"""The batcher's clock: the one source of time for scheduling decisions (deadlines, queue delays, CoDel
intervals) and for measuring compute durations.

Contracts:
- :meth:`Clock.now` is monotonic seconds; request deadlines handed to the batcher are in this clock.
- :meth:`Clock.wait_until` waits for an event or until this clock reads ``until``, whichever comes first,
  and says whether the event is set. A fake clock drives it deterministically in tests.
- :meth:`Clock.ns` is a monotonic nanosecond counter for durations (compute time, the latency profile).
- :class:`LoopClock`, the default, is the running event loop's ``loop.time()`` (monotonic) and
  ``time.perf_counter_ns()``; it never reads the wall clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    """Time as the batcher sees it."""

    def now(self) -> float: ...

    def ns(self) -> int: ...

    async def wait_until(self, event: asyncio.Event, until: float) -> bool: ...


class LoopClock:
    """The running loop's monotonic clock, with a high-resolution counter for durations. The loop's
    ``time`` is looked up on first use and kept (a batcher lives on one loop)."""

    def __init__(self) -> None:
        self._time: Callable[[], float] | None = None

    def now(self) -> float:
        read = self._time
        if read is None:
            read = self._time = asyncio.get_running_loop().time
        return read()

    def ns(self) -> int:
        return time.perf_counter_ns()

    async def wait_until(self, event: asyncio.Event, until: float) -> bool:
        if event.is_set():
            return True
        loop = asyncio.get_running_loop()
        if until <= loop.time():
            return False
        try:
            async with asyncio.timeout_at(until):
                await event.wait()
        except TimeoutError:
            return event.is_set()
        return True


def loop_is_idle(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether nothing else is ready to run on ``loop`` (its ready queue is empty), so the calling task is
    all the loop has to do now. False for a loop that does not expose that queue (only CPython's asyncio
    loops do, as ``_ready``): such a loop never gets the lone request's inline cap."""
    ready = getattr(loop, "_ready", None)
    return ready is not None and not ready
