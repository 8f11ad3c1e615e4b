"""Background tasks of the gateway's long-lived parts (registry watcher, rollout controller, webhook
notifier, sample shipper): the one way each is stopped.

Contract: :func:`cancel_and_wait` cancels a task and returns once it has finished, whatever it was doing;
its cancellation is absorbed, any other exception it raised propagates. ``None`` (never started, or
already stopped) is a no-op, so ``stop()`` may be called twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancels ``task`` and waits until it is done (module contract)."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
