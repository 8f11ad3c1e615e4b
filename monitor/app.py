"""The monitor's aiohttp application factory.

This module owns the assembly of the drift sidecar: :func:`create_app` builds the application from a
:class:`~monitor.config.MonitorConfig` (typed ``web.AppKey`` entries for the config, the engine and the
metrics), registers the routes of :mod:`monitor.handlers`, and ties the engine's background work to the
application's life: started in a ``cleanup_ctx`` on startup, stopped (tasks cancelled and awaited,
history closed) on cleanup; open WebSockets are closed with 1001 on shutdown.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator

from aiohttp import WSCloseCode, web
from prometheus_client import CollectorRegistry

from monitor.config import MonitorConfig
from monitor.engine import Engine
from monitor.handlers import CONFIG, ENGINE, METRICS, SOCKETS, routes
from monitor.metrics import MonitorMetrics

__all__ = ["CONFIG", "ENGINE", "METRICS", "create_app"]


def create_app(config: MonitorConfig, *, registry: CollectorRegistry | None = None) -> web.Application:
    """The monitor application; metrics go on ``registry`` (a fresh one when None, never the global)."""
    app = web.Application(client_max_size=config.max_body_bytes)
    metrics = MonitorMetrics(registry if registry is not None else CollectorRegistry())
    app[CONFIG] = config
    app[METRICS] = metrics
    app[ENGINE] = Engine(config, metrics)
    app[SOCKETS] = weakref.WeakSet()
    app.add_routes(routes())
    app.cleanup_ctx.append(_engine_running)
    app.on_shutdown.append(_close_sockets)
    return app


async def _engine_running(app: web.Application) -> AsyncIterator[None]:
    engine = app[ENGINE]
    await engine.start()
    try:
        yield
    finally:
        await engine.stop()


async def _close_sockets(app: web.Application) -> None:
    sockets: weakref.WeakSet[web.WebSocketResponse] = app[SOCKETS]
    for ws in list(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"monitor shutting down")
