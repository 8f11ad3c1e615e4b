"""HTTP and WebSocket handlers of the monitor: a thin transport over the engine.

This module owns the monitor's endpoints (DESIGN.md §3): it reads bodies and frames, hands them to
:class:`~monitor.engine.Engine`, and maps a :class:`~monitor.errors.SampleError` to HTTP 400 (JSON
``{"error", "reason"}``) or to a WebSocket close with code 1003 and the message as the reason. Bodies over
``max_body_bytes`` get 413 (frames: close 1009). JSON goes out through orjson.
"""

from __future__ import annotations

import math
import weakref
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import WSCloseCode, WSMsgType, web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from monitor.config import MonitorConfig
from monitor.engine import Engine
from monitor.errors import SampleError
from monitor.metrics import MonitorMetrics

__all__ = ["CONFIG", "ENGINE", "METRICS", "SOCKETS", "routes"]

CONFIG = web.AppKey("config", MonitorConfig)
ENGINE = web.AppKey("engine", Engine)
METRICS = web.AppKey("metrics", MonitorMetrics)
SOCKETS: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("sockets")

_REASON_BYTES = 123  # the most a WebSocket close reason may hold


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def _read(request: web.Request) -> bytes:
    """The body; 413 (counted as ``too_large``) over ``max_body_bytes``."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        request.app[METRICS].rejected.labels("too_large").inc()
        raise


async def post_samples(request: web.Request) -> web.Response:
    """``POST /v1/samples``: a SampleBatch body; 200 ``{"rows": accepted}`` or 400 with the reason."""
    engine = request.app[ENGINE]
    body = await _read(request)
    try:
        rows = await engine.ingest(body)
    except SampleError as exc:
        return _json({"error": str(exc), "reason": exc.reason}, status=400)
    return _json({"rows": rows})


async def post_feedback(request: web.Request) -> web.Response:
    """``POST /v1/feedback``: a FeedbackBatch (``application/x-protobuf``) or its JSON form
    (``application/json``); 200 with per-item results, even when some items are refused; 400 only for a
    body that cannot be read; 413 over ``max_body_bytes``."""
    body = await _read(request)
    try:
        result = await request.app[ENGINE].ingest_feedback(body, request.content_type)
    except SampleError as exc:
        request.app[METRICS].rejected.labels(exc.reason).inc()
        return _json({"error": str(exc), "reason": exc.reason}, status=400)
    return _json(result)


async def samples_stream(request: web.Request) -> web.WebSocketResponse:
    """``/v1/samples/stream``: one SampleBatch per binary frame; a bad frame closes the socket (1003)."""
    app = request.app
    ws = web.WebSocketResponse(max_msg_size=app[CONFIG].max_body_bytes)
    await ws.prepare(request)
    app[SOCKETS].add(ws)
    try:
        async for message in ws:
            if message.type == WSMsgType.BINARY:
                try:
                    await app[ENGINE].ingest(message.data)
                except SampleError as exc:
                    await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=_reason(str(exc)))
                    break
            elif message.type == WSMsgType.TEXT:
                app[METRICS].rejected.labels("text_frame").inc()
                await ws.close(
                    code=WSCloseCode.UNSUPPORTED_DATA, message=b"expected binary SampleBatch frames"
                )
                break
        error = ws.exception()
        if error is not None:
            too_big = getattr(error, "code", None) == WSCloseCode.MESSAGE_TOO_BIG
            app[METRICS].rejected.labels("too_large" if too_big else "websocket").inc()
    finally:
        app[SOCKETS].discard(ws)
    return ws


async def get_drift(request: web.Request) -> web.Response:
    """``GET /v1/drift[?model=&version=]``: the latest window of every version."""
    query = request.query
    return _json(request.app[ENGINE].report(query.get("model"), query.get("version")))


async def get_history(request: web.Request) -> web.Response:
    """``GET /v1/drift/history?model=&version=&since=&limit=&kind=``: stored windows, oldest first
    (``kind=quality``: the closed quality windows, monitor/feedback_db.py).

    ``since`` is ISO 8601 (``2025-01-31T12:00:00Z``) or Unix seconds, compared with ``closed_at``.
    """
    query = request.query
    limit_max = request.app[CONFIG].history_limit
    try:
        since_ns = _since_ns(query["since"]) if query.get("since") else None
        limit = int(query.get("limit", str(min(1000, limit_max))))
        if not 1 <= limit <= limit_max:
            raise ValueError(f"limit must be in [1, {limit_max}]")
    except ValueError as exc:
        return _json({"error": str(exc), "reason": "bad_query"}, status=400)
    engine = request.app[ENGINE]
    if query.get("kind", "drift") == "quality":
        return _json(
            {
                "windows": await engine.quality.db.query(
                    query.get("model"), query.get("version"), since_ns, limit
                )
            }
        )
    if query.get("kind", "drift") != "drift":
        return _json({"error": "kind must be drift or quality", "reason": "bad_query"}, status=400)
    windows = await engine.history.query(query.get("model"), query.get("version"), since_ns, limit)
    return _json({"windows": windows})


async def get_metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus text format of the injected registry."""
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def get_healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: 200 while the service runs."""
    return _json({"status": "ok", "versions": len(request.app[ENGINE].catalog.states())})


def routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/samples", post_samples),
        web.get("/v1/samples/stream", samples_stream),
        web.post("/v1/feedback", post_feedback),
        web.get("/v1/drift", get_drift),
        web.get("/v1/drift/history", get_history),
        web.get("/metrics", get_metrics),
        web.get("/healthz", get_healthz),
    ]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _since_ns(text: str) -> int:
    """``since`` in ns since the epoch; an ISO time converts exactly (integer microseconds, no float), so
    it equals the stored close time of the window whose ``closed_at`` it is, to the nanosecond floor."""
    try:
        seconds = float(text)
    except ValueError:
        stamp = datetime.fromisoformat(text)
        if stamp.tzinfo is None:
            raise ValueError(f"since: {text!r} has no time zone (add Z for UTC)") from None
        return (stamp - _EPOCH) // timedelta(microseconds=1) * 1000
    if not math.isfinite(seconds):
        raise ValueError(f"since: {text!r} is not a time")
    return int(seconds * 1e9)


def _reason(text: str) -> bytes:
    data = text.encode("utf-8")
    return (
        data
        if len(data) <= _REASON_BYTES
        else data[: _REASON_BYTES - 3].decode("utf-8", "ignore").encode() + b"..."
    )
