"""The authenticated monitor on loopback: ingest refused without the token (nothing reaches the windows),
reads open or token-guarded, /healthz and /metrics open, the gateway's shipper sending its credential, the
token file followed on disk, and the webhook's HMAC signature verifying."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.config import GatewayConfig
from monitor.app import METRICS, create_app, serve_ingest
from monitor.auth import TokenFile
from monitor.config import MonitorConfig, WebhookSettings
from monitor.metrics import MonitorMetrics
from monitor.webhook import AlertSender
from registry.demo import build_demo
from registry.webhook_signing import SIGNATURE_HEADER
from tests.monitor_oracles import sample_batch
from tests.monitor_servers import RunningMonitor, running_monitor, wait_until
from tests.servers import ServerThread

INGEST = "ingest-3b9d27f1"
READ = "read-a41c07e2"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("monitor-auth") / "registry"
    build_demo(root)
    return root


@pytest.fixture
def tokens(tmp_path: Path) -> tuple[Path, Path]:
    ingest, read = tmp_path / "ingest.token", tmp_path / "read.token"
    ingest.write_text(INGEST + "\n")
    read.write_text(READ)
    return ingest, read


def _rows(monitor: RunningMonitor) -> float:
    registry = monitor.app[METRICS].registry
    value = registry.get_sample_value("infergate_monitor_rows_total", {"model": "classifier", "version": "1"})
    return value or 0.0


def _unauthorized(monitor: RunningMonitor) -> float:
    registry = monitor.app[METRICS].registry
    return registry.get_sample_value("infergate_monitor_rejected_total", {"reason": "unauthorized"}) or 0.0


def _body(rows: int = 8) -> bytes:
    x = np.random.default_rng(0).normal(size=(rows, 16)).astype(np.float32)
    return sample_batch("classifier", "1", {"input": x})


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_ingest_needs_the_token_and_nothing_reaches_the_windows(
    demo: Path, tmp_path: Path, tokens: tuple[Path, Path]
) -> None:
    config = MonitorConfig(demo, port=0, db=None, ingest_token_file=tokens[0])
    async with running_monitor(config) as monitor:
        http = monitor.http
        for headers in ({}, _bearer("wrong"), {"Authorization": INGEST}, _bearer(READ)):
            async with http.post("/v1/samples", data=_body(), headers=headers) as response:
                assert response.status == 401
                assert response.headers["WWW-Authenticate"] == "Bearer"
                assert (await response.json())["reason"] == "unauthorized"
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await http.ws_connect("/v1/samples/stream", headers=headers)
            assert info.value.status == 401
        assert _rows(monitor) == 0
        assert _unauthorized(monitor) == 8
        async with http.post("/v1/samples", data=_body(), headers=_bearer(INGEST)) as response:
            assert (response.status, await response.json()) == (200, {"rows": 8})
        async with http.ws_connect("/v1/samples/stream", headers=_bearer(INGEST)) as ws:
            await ws.send_bytes(_body(4))
            await ws.close()
        assert await _eventually(lambda: _rows(monitor) == 12)
        # reads stay open without a read token; health and metrics are always open
        for path in ("/v1/drift", "/v1/drift/history", "/healthz", "/metrics"):
            async with http.get(path) as response:
                assert response.status == 200, path


async def test_reads_need_the_read_token_when_configured(
    demo: Path, tokens: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    config = MonitorConfig(demo, port=0, db=None, ingest_token_file=tokens[0], read_token_file=tokens[1])
    async with running_monitor(config) as monitor:
        http = monitor.http
        for path in ("/v1/drift", "/v1/drift/history"):
            for headers in ({}, _bearer(INGEST), _bearer("x")):
                async with http.get(path, headers=headers) as response:
                    assert response.status == 401, (path, headers)
            async with http.get(path, headers=_bearer(READ)) as response:
                assert response.status == 200
        for path in ("/healthz", "/metrics"):
            async with http.get(path) as response:
                assert response.status == 200
    assert INGEST not in caplog.text
    assert READ not in caplog.text


def test_token_file_follows_the_disk(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first")
    now = [0.0]
    token = TokenFile(path, check_interval=1.0, clock=lambda: now[0])
    assert token.matches("first")
    assert not token.matches("firs")
    path.write_text("second-token")
    assert token.matches("first")  # not checked again before the interval
    now[0] = 1.0
    assert token.matches("second-token")
    assert not token.matches("first")
    path.write_text("")  # an emptied file keeps the previous token
    now[0] = 2.0
    assert token.matches("second-token")


async def _eventually(probe: Any, what: str = "the monitor's counters") -> bool:
    """A bounded poll of public state (what the monitor counted), never a fixed sleep."""
    await asyncio.to_thread(wait_until, what, probe)
    return True


@pytest.mark.parametrize("with_token", [True, False])
async def test_gateway_shipper_sends_its_credential(
    demo: Path, tmp_path: Path, tokens: tuple[Path, Path], with_token: bool
) -> None:
    config = MonitorConfig(demo, port=0, db=None, ingest_token_file=tokens[0])
    async with running_monitor(config) as monitor:
        gateway = await asyncio.to_thread(
            ServerThread,
            GatewayConfig(
                demo,
                port=0,
                metrics_port=None,
                poll_interval=0,
                sample_rate=1.0,
                monitor_url=f"ws://127.0.0.1:{monitor.port}/v1/samples/stream",
                monitor_token_file=tokens[0] if with_token else None,
            ),
        )
        try:
            tensor = grpcclient.InferInput("input", [8, 16], "FP32")
            tensor.set_data_from_numpy(np.random.default_rng(1).normal(size=(8, 16)).astype(np.float32))

            def infer() -> None:
                with grpcclient.InferenceServerClient(gateway.target) as client:
                    client.infer("classifier", [tensor], model_version="1")

            if with_token:
                await _eventually(
                    lambda: gateway.server.shipper is not None and gateway.server.shipper.connects
                )
                await asyncio.to_thread(infer)
                assert await _eventually(lambda: _rows(monitor) == 8)
            else:
                await _eventually(lambda: _unauthorized(monitor) >= 1)  # the upgrade was refused
                await asyncio.to_thread(infer)
                assert gateway.server.shipper is not None
                assert gateway.server.shipper.connects == 0
                assert _rows(monitor) == 0
        finally:
            await asyncio.to_thread(gateway.stop)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, asyncio.Queue[tuple[bytes, str]]]]:
    got: asyncio.Queue[tuple[bytes, str]] = asyncio.Queue()

    async def hook(request: web.Request) -> web.Response:
        got.put_nowait((await request.read(), request.headers.get(SIGNATURE_HEADER, "")))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook", got
    finally:
        await runner.cleanup()


async def test_webhook_signature_verifies(
    tmp_path: Path, receiver: tuple[str, asyncio.Queue[tuple[bytes, str]]]
) -> None:
    url, got = receiver
    secret = tmp_path / "webhook.key"
    secret.write_bytes(b"s3cret-key\n")
    sender = AlertSender(WebhookSettings(url=url, secret_file=secret), MonitorMetrics(CollectorRegistry()))
    await sender.start()
    try:
        sender.offer({"event": "drift_started", "model": "m", "version": "1"})
        await sender.drain()
    finally:
        await sender.stop()
    body, header = got.get_nowait()
    expected = "sha256=" + hmac.new(b"s3cret-key", body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(header, expected)
    forged = "sha256=" + hmac.new(b"other-key", body, hashlib.sha256).hexdigest()
    assert not hmac.compare_digest(header, forged)


async def test_ingest_on_its_own_address(demo: Path, tokens: tuple[Path, Path]) -> None:
    config = MonitorConfig(
        demo, port=0, db=None, ingest_token_file=tokens[0], ingest_host="127.0.0.1", ingest_port=0
    )
    app = create_app(config, registry=CollectorRegistry())
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        main = web.TCPSite(runner, "127.0.0.1", 0)
        await main.start()
        main_port = runner.addresses[0][1]
        ingest_port = await serve_ingest(runner, "127.0.0.1", 0)
        assert ingest_port != main_port
        async with aiohttp.ClientSession() as http:
            main_url, ingest_url = f"http://127.0.0.1:{main_port}", f"http://127.0.0.1:{ingest_port}"
            post = {"data": _body(), "headers": _bearer(INGEST)}
            async with http.post(f"{main_url}/v1/samples", **post) as response:
                assert response.status == 404
            async with http.post(f"{ingest_url}/v1/samples", **post) as response:
                assert (response.status, await response.json()) == (200, {"rows": 8})
            async with http.post(f"{ingest_url}/v1/samples", data=_body()) as response:
                assert response.status == 401  # the token is still needed there
            for path in ("/v1/drift", "/metrics", "/healthz"):
                async with http.get(f"{main_url}{path}") as response:
                    assert response.status == 200
                async with http.get(f"{ingest_url}{path}") as response:
                    assert response.status == 404
    finally:
        await runner.cleanup()
