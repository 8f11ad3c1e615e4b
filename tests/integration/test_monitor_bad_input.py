"""Bad input never crashes the monitor: HTTP 400 (or 413) with a reason, WebSocket close 1003 (or 1009),
and the rows are counted as rejected. Every case goes through the real server on 127.0.0.1:0."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from aiohttp import WSMsgType

from monitor.config import MonitorConfig
from protos import monitor_pb2
from registry.demo import build_demo
from tests.monitor_oracles import sample_batch
from tests.monitor_servers import RunningMonitor, running_monitor

GOOD = np.zeros((7, 16), dtype=np.float32)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("monitor-bad") / "registry"
    build_demo(root)
    return root


@pytest.fixture
async def monitor(demo: Path) -> AsyncIterator[RunningMonitor]:
    async with running_monitor(MonitorConfig(demo, port=0, db=None, max_body_bytes=64 * 1024)) as running:
        yield running


def tensor_batch(**tensor: object) -> bytes:
    fields = {"name": "input", "datatype": "FP32", "shape": [7, 16], "raw": GOOD.tobytes(), **tensor}
    batch = monitor_pb2.SampleBatch()
    batch.samples.add(model="classifier", version="1", inputs=[monitor_pb2.Tensor(**fields)])  # type: ignore[arg-type]
    return batch.SerializeToString()


CASES = [
    ("malformed", b"\xff\xff\xff\xff not protobuf", "not a monitor.proto SampleBatch"),
    ("unknown_model", sample_batch("nope", "1", {"input": GOOD}), "not found"),
    ("unknown_model", sample_batch("../etc", "1", {"input": GOOD}), "not a model name"),
    ("unknown_version", sample_batch("classifier", "9", {"input": GOOD}), "version 9 not found"),
    ("unknown_version", sample_batch("classifier", "01", {"input": GOOD}), "not a positive integer"),
    (
        "signature",
        sample_batch("classifier", "1", {"input": GOOD, "extra": GOOD}),
        "'extra': not in the signature",
    ),
    ("signature", sample_batch("classifier", "1", {}, {"label": np.zeros(7, np.int64)}), "missing inputs"),
    ("datatype", tensor_batch(datatype="FP64"), "datatype 'FP64', expected FP32"),
    ("shape", tensor_batch(shape=[7, 15]), "expected [-1, 16]"),
    ("shape", tensor_batch(shape=[7, 16, 1]), "shape [7, 16, 1]"),
    ("shape", tensor_batch(raw=b"\x00" * 10), "raw holds 10 bytes"),
    (
        "shape",
        sample_batch("classifier", "1", {"input": GOOD}, {"label": np.zeros(6, np.int64)}),
        "batch dimension",
    ),
]


@pytest.mark.parametrize(
    ("reason", "body", "message"), CASES, ids=[f"{r}-{i}" for i, (r, _, _) in enumerate(CASES)]
)
async def test_post_refuses_with_a_reason_and_counts_rows(
    monitor: RunningMonitor, reason: str, body: bytes, message: str
) -> None:
    status, answer = await monitor.post(body)
    assert status == 400
    assert answer["reason"] == reason
    assert message in answer["error"]
    text = await monitor.metrics()
    assert f'infergate_monitor_rejected_total{{reason="{reason}"}} 1.0' in text
    if reason != "malformed":
        assert f'infergate_monitor_rejected_rows_total{{reason="{reason}"}} 7.0' in text
    assert await monitor.post(sample_batch("classifier", "1", {"input": GOOD})) == (200, {"rows": 7})


async def test_one_bad_sample_rejects_the_whole_batch(monitor: RunningMonitor) -> None:
    batch = monitor_pb2.SampleBatch()
    batch.MergeFromString(sample_batch("classifier", "1", {"input": GOOD}))
    batch.MergeFromString(sample_batch("classifier", "1", {"input": GOOD.astype(np.float64)}))
    status, answer = await monitor.post(batch.SerializeToString())
    assert (status, answer["reason"]) == (400, "datatype")
    assert "sample 1" in answer["error"]
    text = await monitor.metrics()
    assert 'infergate_monitor_rejected_rows_total{reason="datatype"} 14.0' in text
    assert not any(line.startswith("infergate_monitor_rows_total{") for line in text.splitlines())


async def test_bodies_and_frames_over_the_cap(monitor: RunningMonitor) -> None:
    big = sample_batch("classifier", "1", {"input": np.zeros((2000, 16), np.float32)})
    async with monitor.http.post("/v1/samples", data=big) as response:
        assert response.status == 413
    assert 'infergate_monitor_rejected_total{reason="too_large"} 1.0' in await monitor.metrics()
    async with monitor.http.ws_connect("/v1/samples/stream") as ws:
        await ws.send_bytes(big)
        message = await ws.receive()
        assert message.type == WSMsgType.CLOSE
        assert ws.close_code == 1009


async def test_websocket_closes_1003_with_the_reason_and_the_service_carries_on(
    monitor: RunningMonitor,
) -> None:
    async with monitor.http.ws_connect("/v1/samples/stream") as ws:
        await ws.send_bytes(sample_batch("classifier", "1", {"input": GOOD}))
        await ws.send_bytes(tensor_batch(datatype="INT8"))
        message = await ws.receive()
        assert message.type == WSMsgType.CLOSE
        assert ws.close_code == 1003
        assert "datatype 'INT8'" in (message.extra or "")
    async with monitor.http.ws_connect("/v1/samples/stream") as ws:
        await ws.send_bytes(b"\x0a\x05junk")
        assert (await ws.receive()).type == WSMsgType.CLOSE
        assert ws.close_code == 1003
    async with monitor.http.ws_connect("/v1/samples/stream") as ws:
        await ws.send_str("hello")
        assert (await ws.receive()).type == WSMsgType.CLOSE
        assert ws.close_code == 1003
    assert 'infergate_monitor_rejected_total{reason="text_frame"} 1.0' in await monitor.metrics()
    text = await monitor.metrics()
    assert 'infergate_monitor_rows_total{model="classifier",version="1"} 7.0' in text
    assert await monitor.post(sample_batch("classifier", "1", {"input": GOOD})) == (200, {"rows": 7})
    async with monitor.http.get("/healthz") as response:
        assert response.status == 200


async def test_history_query_is_validated(monitor: RunningMonitor) -> None:
    for query in ({"since": "yesterday"}, {"since": "2025-01-01T00:00:00"}, {"limit": "0"}, {"limit": "x"}):
        async with monitor.http.get("/v1/drift/history", params=query) as response:
            assert response.status == 400, query
    async with monitor.http.get("/v1/drift/history", params={"since": "1700000000"}) as response:
        assert response.status == 200
        assert (await response.json()) == {"windows": []}
