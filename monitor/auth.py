"""Who may talk to the monitor: bearer tokens on ingest and (optionally) on reads, as aiohttp middleware.

Contracts:
- Ingest (``POST /v1/samples``, the ``/v1/samples/stream`` WebSocket upgrade and ``POST /v1/feedback``)
  needs the token in
  ``ingest_token_file`` when one is configured; the gateway's sample shipper sends it
  (``--monitor-token-file`` on both sides). The check runs before the body is read and before the
  WebSocket upgrade, so a refused producer never reaches the windows.
- Reads (``/v1/drift``, ``/v1/drift/history``) need the token in ``read_token_file`` when one is
  configured, else they are open. ``/healthz`` and ``/metrics`` are always open.
- A missing or wrong token gets 401 JSON ``{"error", "reason": "unauthorized"}`` with
  ``WWW-Authenticate: Bearer``, counted in ``infergate_monitor_rejected_total{reason="unauthorized"}``.
  The comparison is constant-time (:func:`hmac.compare_digest` of sha256 digests); tokens are never
  logged.
- With ``ingest_host`` set, ingest is served only on its own address (``ingest_host:ingest_port``, e.g.
  the pod's loopback) and only ingest is served there; elsewhere those paths are 404.
- A token file holds one token (surrounding whitespace ignored). It is read again when its size, mtime or
  inode changes (a Kubernetes Secret update), checked at most once per ``check_interval`` seconds; an
  empty or unreadable file at start is an error, later it keeps the previous token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
from aiohttp import web

from monitor.metrics import MonitorMetrics
from registry.fsutil import FileStamp, file_stamp

__all__ = [
    "FEEDBACK_PATHS",
    "INGEST_PATHS",
    "READ_PATHS",
    "TokenFile",
    "auth_middleware",
    "ingest_split_middleware",
]

log = logging.getLogger(__name__)

INGEST_PATHS = frozenset({"/v1/samples", "/v1/samples/stream"})
#: Ground truth feeds the monitor too: it needs the ingest token, but is served on the main address
#: (business systems send it, not the pod's gateway).
FEEDBACK_PATHS = frozenset({"/v1/feedback"})
READ_PATHS = frozenset({"/v1/drift", "/v1/drift/history"})

#: Refusals are logged at most once per this many seconds.
LOG_INTERVAL_S = 10.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class TokenFile:
    """One shared token, kept as its sha256 digest and followed on disk."""

    def __init__(
        self, path: Path, *, check_interval: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self.check_interval = check_interval
        self.clock = clock
        self._stamp = self._stat()
        self._digest = self._read()
        self._next_check = clock() + check_interval

    def _stat(self) -> FileStamp | None:
        return file_stamp(self.path)

    def _read(self) -> bytes:
        token = self.path.read_text().strip()
        if not token:
            raise ValueError(f"token file {self.path} is empty")
        return hashlib.sha256(token.encode()).digest()

    def matches(self, token: str) -> bool:
        """Whether ``token`` is the file's token (constant-time on the digests)."""
        now = self.clock()
        if now >= self._next_check:
            self._next_check = now + self.check_interval
            stamp = self._stat()
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._digest = self._read()
                except (OSError, UnicodeDecodeError, ValueError) as exc:
                    log.error("token file not reloaded, the previous token stays in force: %s", exc)
        return hmac.compare_digest(hashlib.sha256(token.encode()).digest(), self._digest)


def _presented(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() != "bearer ":
        return None
    return header[7:].strip() or None


def auth_middleware(
    ingest: TokenFile | None, read: TokenFile | None, metrics: Callable[[], MonitorMetrics]
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """The middleware enforcing the contracts above; ``metrics`` returns the app's metrics."""

    last_logged = [-LOG_INTERVAL_S]

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        needed = (
            ingest if path in INGEST_PATHS or path in FEEDBACK_PATHS else read if path in READ_PATHS else None
        )
        if needed is not None:
            token = _presented(request)
            if token is None or not needed.matches(token):
                metrics().rejected.labels("unauthorized").inc()
                now = time.monotonic()
                if now - last_logged[0] >= LOG_INTERVAL_S:  # at most one line per interval under a flood
                    last_logged[0] = now
                    log.warning(
                        "refused %s %s from %s: missing or wrong token", request.method, path, request.remote
                    )
                return web.Response(
                    status=401,
                    body=orjson.dumps({"error": "missing or wrong bearer token", "reason": "unauthorized"}),
                    content_type="application/json",
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return await handler(request)

    return middleware


def ingest_split_middleware(
    ingest_ports: set[int],
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """With a separate ingest address: ingest paths answer only on connections to one of
    ``ingest_ports`` (filled in once that site is bound), and nothing else answers there (404)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
        on_ingest = sockname is not None and sockname[1] in ingest_ports
        if (request.path in INGEST_PATHS) != on_ingest:
            where = "the ingest address" if not on_ingest else "the main address"
            return web.Response(
                status=404,
                body=orjson.dumps({"error": f"{request.path} is served on {where}", "reason": "not_found"}),
                content_type="application/json",
            )
        return await handler(request)

    return middleware
