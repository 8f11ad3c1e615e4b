"""Drift alerts: JSON events POSTed to ``--alert-webhook`` when a version enters or leaves drift.

This module owns the monitor's outgoing hook (for drift-triggered retraining). :meth:`AlertSender.offer`
never blocks: it puts the event on a bounded queue (dropping the oldest when full). A background task
owned by the sender delivers events in order; a delivery that fails (connection error, timeout, or a
status outside 2xx) is retried after ``backoff_s * 2**(attempt-1)`` seconds (capped at
``max_backoff_s``) up to ``attempts`` times, then dropped. Outcomes are counted in
``infergate_monitor_alerts_total{outcome}``: delivered, failed, dropped.

The event body: ``{"event": "drift_started" | "drift_ended", "model", "version", "at" (ISO 8601 UTC),
"features": [names of the drifting features in the deciding window], "report": <the version's entry of
GET /v1/drift>}``; quality events (``quality_degraded`` / ``quality_recovered``) are built by
:func:`monitor.quality_publish.retraining_event`.

With ``secret_file`` set, each POST carries ``X-Infergate-Signature-256: sha256=<hex HMAC-SHA256 of the
body keyed by the file's bytes>`` (as GitHub signs its webhooks), so a receiver can check that the event
came from this monitor and was not altered; the file is read at each delivery (rotation).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp
import orjson

from monitor.config import WebhookSettings
from monitor.metrics import MonitorMetrics
from registry.webhook_signing import signed_headers

__all__ = ["AlertSender"]

log = logging.getLogger(__name__)


class AlertSender:
    """Delivers drift events to ``settings.url`` (does nothing without one). :meth:`start` / :meth:`stop`."""

    def __init__(self, settings: WebhookSettings, metrics: MonitorMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=settings.queue_size)
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._settings.url is not None and self._task is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._settings.timeout_s)
            )
            self._task = asyncio.create_task(self._run(), name="monitor-webhook")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def offer(self, event: dict[str, Any]) -> None:
        """Queue ``event`` for delivery without waiting; the oldest queued event makes room if needed."""
        if self._settings.url is None:
            return
        if self._queue.full():
            self._queue.get_nowait()
            self._queue.task_done()
            self._metrics.alerts.labels(outcome="dropped").inc()
        self._queue.put_nowait(event)

    async def drain(self) -> None:
        """Return once every queued event has been delivered or given up on (needs :meth:`start`)."""
        await self._queue.join()

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                delivered = await self._deliver(orjson.dumps(event))
                self._metrics.alerts.labels(outcome="delivered" if delivered else "failed").inc()
            finally:
                self._queue.task_done()

    async def _deliver(self, body: bytes) -> bool:
        settings = self._settings
        assert self._session is not None
        assert settings.url is not None
        for attempt in range(1, settings.attempts + 1):
            try:
                headers = signed_headers(body, settings.secret_file)
                async with self._session.post(settings.url, data=body, headers=headers) as response:
                    if 200 <= response.status < 300:
                        return True
                    problem = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            log.warning("alert webhook attempt %d/%d failed: %s", attempt, settings.attempts, problem)
            if attempt < settings.attempts:
                await asyncio.sleep(min(settings.backoff_s * 2 ** (attempt - 1), settings.max_backoff_s))
        return False
