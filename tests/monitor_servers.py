"""Helpers for the monitor's integration tests: the real app on 127.0.0.1:0, the real ``python -m monitor``
process, and a webhook receiver."""

from __future__ import annotations

import asyncio
import json
import select
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry

from monitor.app import ENGINE, create_app
from monitor.config import MonitorConfig
from monitor.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def guarded_demo(tmp_path: Path, token: str, max_body_bytes: int) -> MonitorConfig:
    """A monitor config over a fresh demo registry in ``tmp_path``, ingest guarded by ``token``, no
    history, bodies capped at ``max_body_bytes`` (the fuzz tests)."""
    from registry.demo import build_demo

    root = tmp_path / "registry"
    build_demo(root)
    token_file = tmp_path / "ingest.token"
    token_file.write_text(token)
    return MonitorConfig(root, port=0, db=None, max_body_bytes=max_body_bytes, ingest_token_file=token_file)


def rss_kib() -> int:
    """This process's resident memory (VmRSS of /proc/self/status), KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


def wait_until(what: str, probe: Callable[[], T | None], timeout: float = 30.0, every: float = 0.05) -> T:
    """Poll ``probe`` until it returns something other than None or False; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


class MonitorProcess:
    """``python -m monitor`` serving ``registry`` on 127.0.0.1 (a port of its choosing, read from the line
    it prints); stderr goes to ``log``. :meth:`stop` sends SIGINT and returns the exit status. ``extra``
    options are appended; with ``--ingest-host`` the second line it prints gives ``ingest_port``."""

    def __init__(
        self, registry: Path, db: Path, log: Path, *, start_timeout: float = 60.0, extra: Sequence[str] = ()
    ) -> None:
        self.log = log
        command = [
            sys.executable,
            "-m",
            "monitor",
            "--registry",
            str(registry),
            "--port",
            "0",
            "--db",
            str(db),
            *extra,
        ]
        with log.open("w") as stderr:
            self.proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], start_timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("infergate-monitor listening on http://"):
            self.proc.kill()
            self.proc.wait(10)
            self.proc.stdout.close()
            raise AssertionError(f"the monitor did not start ({line!r}): {self.log_tail()}")
        self.url = line.split()[-1]
        self.port = int(self.url.rsplit(":", 1)[1])
        self.ingest_port: int | None = None
        if "--ingest-host" in extra:
            ingest = self.proc.stdout.readline()
            assert ingest.startswith("infergate-monitor ingest on "), ingest
            self.ingest_port = int(ingest.rsplit(":", 1)[1])

    @property
    def stream_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/samples/stream"

    def get(self, path: str, **query: str) -> Any:
        """GET ``path`` (JSON) with ``query``."""
        suffix = f"?{urllib.parse.urlencode(query)}" if query else ""
        with urllib.request.urlopen(f"{self.url}{path}{suffix}", timeout=10) as response:
            return json.load(response)

    def entry(self, model: str, version: int) -> dict[str, Any] | None:
        """The version's ``/v1/drift`` entry, or None while the monitor does not know the version."""
        entries = self.get("/v1/drift", model=model, version=str(version))["models"]
        return entries[0] if entries else None

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as response:
            return str(response.read().decode("utf-8"))

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def stop(self, timeout: float = 30.0) -> int:
        """SIGINT, then the exit status (the process is killed if it does not stop in ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()


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
        return dict(entry)

    async def metrics(self) -> str:
        async with self.http.get("/metrics") as response:
            assert response.status == 200
            return await response.text()

    async def post(self, body: bytes) -> tuple[int, dict[str, Any]]:
        async with self.http.post("/v1/samples", data=body) as response:
            return response.status, await response.json()

    async def feedback(
        self, body: bytes, content_type: str = "application/x-protobuf"
    ) -> tuple[int, dict[str, Any]]:
        """POST ``body`` to /v1/feedback; (status, JSON answer)."""
        async with self.http.post(
            "/v1/feedback", data=body, headers={"Content-Type": content_type}
        ) as response:
            return response.status, await response.json()

    async def wait_quality(self, model: str, version: int, windows: int, within_s: float = 60.0) -> None:
        """Until ``windows`` quality windows of the version are published (an event, not a sleep)."""
        async with asyncio.timeout(within_s):
            await self.engine.quality.wait(model, version, windows)


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
