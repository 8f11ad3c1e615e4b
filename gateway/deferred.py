"""Bookkeeping deferred past the response: work every request does that its caller need not wait for.

Why: a request's statistics, metric observations, latency-profile learning and sampling hand-off ran in
the ModelInfer handler before it returned, so a lone call's latency included them. At one call at a time
on the 2-core host they were about 20 µs of the handler's ~180 µs (timed inside a running gateway; README
"Why a lone call costs more than the echo server"). Deferred to the event loop's next turn, they run
while gRPC sends the response.

Contracts:

- :func:`defer` runs ``fn(*args)`` once, on the running event loop, after the callback that deferred it
  (the request's task step) yields: calls deferred in one turn run together, in the order deferred, in a
  single ``call_soon`` callback. Without a running loop (a synchronous caller) ``fn`` runs at once.
- A deferred call that raises is logged with its traceback and does not stop the calls after it.
- Everything deferred before an ``await asyncio.sleep(0)`` has run when it returns (the batch's callback
  was scheduled before the sleeper's wake-up); :func:`settled` awaits every call deferred so far, and any
  those deferred in turn.
- Nothing here reads a clock: durations are measured by the caller before it defers.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["defer", "settled"]

log = logging.getLogger(__name__)


class _Backlog:
    """The calls deferred on one event loop and not yet run."""

    __slots__ = ("__weakref__", "calls", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = weakref.ref(loop)  # not the loop itself: the table's values must not keep its keys alive
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def run(self) -> None:
        calls, self.calls = self.calls, []
        for fn, args in calls:
            try:
                fn(*args)
            except Exception:
                log.exception("deferred bookkeeping %s failed", getattr(fn, "__qualname__", fn))


_backlogs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Backlog] = weakref.WeakKeyDictionary()
#: The last loop's backlog (a gateway process serves on one loop): one identity check instead of a lookup.
_last: list[_Backlog | None] = [None]


def _backlog(loop: asyncio.AbstractEventLoop) -> _Backlog:
    backlog = _last[0]
    if backlog is None or backlog.loop() is not loop:
        backlog = _backlogs.get(loop)
        if backlog is None:
            backlog = _backlogs[loop] = _Backlog(loop)
        _last[0] = backlog
    return backlog


def defer(fn: Callable[..., Any], *args: Any) -> None:
    """Runs ``fn(*args)`` after the current callback yields (module doc); at once without a running loop."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        fn(*args)
        return
    backlog = _backlog(loop)
    if not backlog.calls:
        loop.call_soon(backlog.run)
    backlog.calls.append((fn, args))


async def settled() -> None:
    """Returns once every call deferred on this loop so far (and any those deferred) has run."""
    loop = asyncio.get_running_loop()
    backlog = _backlog(loop)
    while backlog.calls:
        ran: asyncio.Future[None] = loop.create_future()
        defer(ran.set_result, None)  # runs after every call deferred before it
        await ran
