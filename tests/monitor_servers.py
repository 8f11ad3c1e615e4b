"""Helpers for the monitor's integration tests: the real app on 127.0.0.1:0, and a webhook receiver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry

from monitor.app import ENGINE, create_app
from monitor.config import MonitorConfig
from monitor.engine import Engine


@dataclass
class RunningMonitor:
    """A started monitor: its app, a client session on its base URL, and its port."""

    app: web.Application
    http: aiohttp.ClientSession
    port: int

    @property
    def engine(self) -> Engine:
        return self.app[ENGINE]

    async def wait(self, model: str, version: int, windows: int, within_s: float = 60.0) -> None:
        """Until ``windows`` windows of the version are published (an event, not a sleep)."""
        async with asyncio.timeout(within_s):
            await self.engine.wait_evaluated(model, version, windows)

    async def drift(self, **query: str) -> dict[str, Any]:
        async with self.http.get("/v1/drift", params=query) as response:
            assert response.status == 200
            return await response.json()  # type: ignore[no-any-return]

    async def entry(self, model: str, version: int) -> dict[str, Any]:
        (entry,) = (await self.drift(model=model, version=str(version)))["models"]
        return entry

    async def metrics(self) -> str:
        async with self.http.get("/metrics") as response:
            assert response.status == 200
            return await response.text()

    async def post(self, body: bytes) -> tuple[int, dict[str, Any]]:
        async with self.http.post("/v1/samples", data=body) as response:
            return response.status, await response.json()


@asynccontextmanager
async def running_monitor(config: MonitorConfig) -> AsyncIterator[RunningMonitor]:
    """Serve ``create_app(config)`` on 127.0.0.1:0 with a fresh metrics registry until the block ends."""
    app = create_app(config, registry=CollectorRegistry())
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as http:
            yield RunningMonitor(app, http, port)
    finally:
        await runner.cleanup()


@dataclass
class WebhookReceiver:
    """A real HTTP server collecting POSTed JSON events; the first ``fail_first`` requests get 503."""

    events: asyncio.Queue[dict[str, Any]]
    url: str
    requests: int = 0


@asynccontextmanager
async def webhook_receiver(fail_first: int = 0) -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver(asyncio.Queue(), "")

    async def hook(request: web.Request) -> web.Response:
        receiver.requests += 1
        if receiver.requests <= fail_first:
            return web.Response(status=503)
        receiver.events.put_nowait(orjson.loads(await request.read()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
        yield receiver
    finally:
        await runner.cleanup()
