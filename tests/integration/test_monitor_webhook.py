"""The alert sender alone: retries with backoff, gives up after its attempts, drops the oldest when full."""

from __future__ import annotations

import socket

from prometheus_client import CollectorRegistry

from monitor.config import WebhookSettings
from monitor.metrics import MonitorMetrics
from monitor.webhook import AlertSender
from tests.monitor_servers import webhook_receiver


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def count(metrics: MonitorMetrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value("infergate_monitor_alerts_total", {"outcome": outcome})
    return value or 0.0


async def test_gives_up_after_its_attempts() -> None:
    metrics = MonitorMetrics(CollectorRegistry())
    url = f"http://127.0.0.1:{closed_port()}/hook"
    sender = AlertSender(WebhookSettings(url=url, attempts=3, backoff_s=0.001, timeout_s=2), metrics)
    await sender.start()
    try:
        sender.offer({"event": "drift_started"})
        await sender.drain()
    finally:
        await sender.stop()
    assert (count(metrics, "failed"), count(metrics, "delivered")) == (1.0, 0.0)


async def test_retries_then_delivers_in_order_and_drops_the_oldest_when_full() -> None:
    metrics = MonitorMetrics(CollectorRegistry())
    async with webhook_receiver(fail_first=2) as hook:
        sender = AlertSender(WebhookSettings(url=hook.url, backoff_s=0.001, queue_size=2), metrics)
        for i in range(4):  # not started yet: the queue holds the last two
            sender.offer({"n": i})
        await sender.start()
        try:
            await sender.drain()
        finally:
            await sender.stop()
        assert [hook.events.get_nowait()["n"] for _ in range(2)] == [2, 3]
        assert hook.requests == 4
    assert (count(metrics, "dropped"), count(metrics, "delivered")) == (2.0, 2.0)


async def test_without_a_url_nothing_is_queued() -> None:
    metrics = MonitorMetrics(CollectorRegistry())
    sender = AlertSender(WebhookSettings(), metrics)
    await sender.start()
    sender.offer({"event": "drift_started"})
    await sender.drain()
    await sender.stop()
    assert count(metrics, "dropped") == 0.0
