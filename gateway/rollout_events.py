"""Rollout announcements: one structured log line and one webhook event per promotion, rollback or abort.

The log line goes to the ``infergate.rollout`` logger (WARNING for a rollback, INFO otherwise) with the
fields ``event``, ``model``, ``stable``, ``candidate``, ``gate``, ``reason`` and ``figures``.

The webhook event uses the monitor's webhook format (docs/monitor.md "Alerts": ``event``, ``model``,
``version``, ``at``, ``report``) so one receiver takes both: ``{"event": "rollout_promoted" |
"rollout_rolled_back" | "rollout_aborted", "model", "version": the candidate, "at" (ISO 8601 UTC),
"features": [], "gate": the failing gate or "", "reason", "report": the rollout.json record}``. It is
POSTed to ``--rollout-webhook URL`` by a background task: :meth:`RolloutNotifier.emit` never blocks (a
bounded queue; the oldest event makes room), a failed delivery is retried 3 times with backoff, and every
outcome is logged. Without a URL only the log line is written. With ``--rollout-webhook-secret-file``,
each POST is signed as the monitor signs its alerts (:mod:`registry.webhook_signing`:
``X-Infergate-Signature-256: sha256=<HMAC-SHA256 of the body>``, the file read at each delivery), so a
receiver can tell a real rollback from a forged one; an unreadable file fails that attempt (logged
without the secret).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import aiohttp

from gateway.background import cancel_and_wait
from registry.rollout import RolloutState, utc_now
from registry.webhook_signing import signed_headers

__all__ = ["RolloutNotifier", "rollout_event"]

log = logging.getLogger("infergate.rollout")

ATTEMPTS = 3
QUEUE_SIZE = 100


def rollout_event(name: str, event: str, state: RolloutState, gate: str) -> dict[str, Any]:
    """The webhook body of one announcement (module docstring)."""
    return {
        "event": f"rollout_{event}",
        "model": name,
        "version": str(state.candidate) if state.candidate is not None else "",
        "at": utc_now(),
        "features": [],
        "gate": gate,
        "reason": state.reason,
        "report": json.loads(state.to_json()),
    }


class RolloutNotifier:
    """Logs every announcement and delivers it to ``url`` when one is set. :meth:`start` / :meth:`stop`."""

    def __init__(
        self,
        url: str | None = None,
        *,
        secret_file: Path | None = None,
        timeout_s: float = 5.0,
        backoff_s: float = 0.5,
    ) -> None:
        self.url = url
        self.secret_file = secret_file
        self._timeout = timeout_s
        self._backoff = backoff_s
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.url is not None and self._task is None:
            self._task = asyncio.create_task(self._run(), name="rollout-webhook")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    def emit(self, name: str, event: str, state: RolloutState, gate: str) -> None:
        """Writes the log line and queues the webhook event (never blocks)."""
        level = logging.WARNING if event == "rolled_back" else logging.INFO
        fields = {
            "event": f"rollout_{event}",
            "model": name,
            "stable": state.stable,
            "candidate": state.candidate,
            "gate": gate,
            "reason": state.reason,
            "figures": dict(state.figures),
        }
        log.log(level, "rollout %s", event.replace("_", " "), extra={"fields": fields})
        if self.url is None:
            return
        if self._queue.full():
            self._queue.get_nowait()
            log.warning("rollout webhook: queue full, oldest event dropped")
        self._queue.put_nowait(rollout_event(name, event, state, gate))

    async def _run(self) -> None:
        assert self.url is not None
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                event = await self._queue.get()
                body = json.dumps(event).encode()
                for attempt in range(1, ATTEMPTS + 1):
                    try:
                        headers = signed_headers(body, self.secret_file)
                        async with session.post(self.url, data=body, headers=headers) as response:
                            if 200 <= response.status < 300:
                                break
                            problem = f"HTTP {response.status}"
                    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                        problem = type(exc).__name__
                    if attempt == ATTEMPTS:
                        log.error("rollout webhook: %s not delivered: %s", event["event"], problem)
                    else:
                        await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
