"""The monitor's aiohttp application factory.

This module owns the assembly of the drift sidecar: :func:`create_app` builds the application from a
:class:`~monitor.config.MonitorConfig` (typed ``web.AppKey`` entries for the config, the engine and the
metrics), registers the routes of :mod:`monitor.handlers`, and ties the engine's background work to the
application's life: started in a ``cleanup_ctx`` on startup, stopped (tasks cancelled and awaited,
history closed) on cleanup; open WebSockets are closed with 1001 on shutdown. With a token file configured
the :mod:`monitor.auth` middleware guards ingest and reads.
"""

from __future__ import annotations

import ssl
import weakref
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSCloseCode, web
from prometheus_client import CollectorRegistry

from monitor.auth import TokenFile, auth_middleware, ingest_split_middleware
from monitor.config import MonitorConfig
from monitor.engine import Engine
from monitor.handlers import CONFIG, ENGINE, METRICS, SOCKETS, routes
from monitor.metrics import MonitorMetrics

__all__ = ["CONFIG", "ENGINE", "INGEST_PORTS", "METRICS", "create_app", "serve_ingest"]

#: The local ports of the separate ingest address (empty until :func:`serve_ingest` binds it).
INGEST_PORTS: web.AppKey[set[int]] = web.AppKey("ingest_ports")


def create_app(config: MonitorConfig, *, registry: CollectorRegistry | None = None) -> web.Application:
    """The monitor application; metrics go on ``registry`` (a fresh one when None, never the global)."""
    metrics = MonitorMetrics(registry if registry is not None else CollectorRegistry())
    ingest_ports: set[int] = set()
    app = web.Application(
        client_max_size=config.max_body_bytes, middlewares=_auth(config, metrics, ingest_ports)
    )
    app[CONFIG] = config
    app[METRICS] = metrics
    app[ENGINE] = Engine(config, metrics)
    app[SOCKETS] = weakref.WeakSet()
    app[INGEST_PORTS] = ingest_ports
    app.add_routes(routes())
    app.cleanup_ctx.append(_engine_running)
    app.on_shutdown.append(_close_sockets)
    return app


def _auth(config: MonitorConfig, metrics: MonitorMetrics, ports: set[int]) -> list[Any]:
    """The ingest address split and the token check (monitor/auth.py); none when neither is configured.
    ``ports`` gets the ingest site's port once it is bound (:func:`serve_ingest`)."""
    middlewares: list[Any] = []
    if config.ingest_host is not None:
        middlewares.append(ingest_split_middleware(ports))
    if config.ingest_token_file is None and config.read_token_file is None:
        return middlewares
    ingest = TokenFile(config.ingest_token_file) if config.ingest_token_file is not None else None
    read = TokenFile(config.read_token_file) if config.read_token_file is not None else None
    return [*middlewares, auth_middleware(ingest, read, lambda: metrics)]


async def serve_ingest(
    runner: web.AppRunner, host: str, port: int, ssl_context: ssl.SSLContext | None = None
) -> int:
    """Binds the separate ingest address on a set-up ``runner`` (over TLS with ``ssl_context``); returns
    the port bound."""
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    bound = int(runner.addresses[-1][1])  # the site started last lists its sockets last
    runner.app[INGEST_PORTS].add(bound)
    return bound


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
