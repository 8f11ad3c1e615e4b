"""Gateway-side sampling against a real WebSocket server: samples carry the answering version and the exact
bytes, a dead or restarted monitor costs no request, a stalled one keeps memory bounded, and drops are
counted. (The monitor's own ingestion is tested end to end in test_monitor_* tests.)"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from onnx import TensorProto, helper

from gateway.config import GatewayConfig
from tests.collector import Collector, free_port
from tests.onnx_models import build_registry, multi_io_model
from tests.servers import ServerThread


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    toml = "[sampling]\nrate = 1.0\nmax_rows_per_request = 3\n"
    return build_registry(
        tmp_path_factory.mktemp("sampling") / "r", {"multi_io": multi_io_model()}, toml={"multi_io": toml}
    )


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def gateway(registry: Path, port: int) -> Iterator[ServerThread]:
    url = f"ws://127.0.0.1:{port}/v1/samples/stream"
    server = ServerThread(GatewayConfig(registry, port=0, metrics_port=0, monitor_url=url, poll_interval=0))
    assert server.server.shipper is not None
    server.server.shipper.backoff_max = 0.2  # reconnect quickly in tests
    yield server
    server.stop()


def send(
    target: str, count: int, rows: int = 4, prefix: str = "r"
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    sent = []
    with grpcclient.InferenceServerClient(target) as client:
        for i in range(count):
            a = np.full((rows, 4), i, np.float32)
            b = np.full((rows, 4), i, np.int64)
            ta, tb = (
                grpcclient.InferInput("a", [rows, 4], "FP32"),
                grpcclient.InferInput("b", [rows, 4], "INT64"),
            )
            ta.set_data_from_numpy(a)
            tb.set_data_from_numpy(b)
            result = client.infer("multi_io", [ta, tb], request_id=f"{prefix}{i}")
            sent.append((f"{prefix}{i}", a, result.as_numpy("total")))
    return sent


def rows(server: ServerThread, outcome: str) -> float:
    value = server.registry.get_sample_value(
        "infergate_samples_total", {"model": "multi_io", "outcome": outcome}
    )
    return value or 0.0


def test_samples_carry_version_ids_and_exact_bytes(gateway: ServerThread, port: int) -> None:
    collector = Collector(port)
    try:
        assert wait_for(lambda: gateway.server.shipper is not None and gateway.server.shipper.connects >= 1)
        sent = send(gateway.target, 20)
        assert wait_for(lambda: collector.rows() == 20 * 3)
    finally:
        collector.stop()
    by_id = {s.request_id: s for s in collector.samples}
    assert set(by_id) == {request_id for request_id, _, _ in sent}
    for request_id, a, total in sent:
        sample = by_id[request_id]
        assert (sample.model, sample.version) == ("multi_io", "1")
        assert sample.timestamp_ns > 0
        assert sample.monotonic_ns > 0
        assert sample.sample_rate == 1.0  # the rate in force, for the monitor's unsampled verdict
        inputs = {t.name: t for t in sample.inputs}
        outputs = {t.name: t for t in sample.outputs}
        assert list(inputs["a"].shape) == [3, 4]  # max_rows_per_request = 3
        assert inputs["a"].raw == a[:3].tobytes()
        assert inputs["b"].datatype == "INT64"
        assert outputs["total"].raw == total[:3].tobytes()
        assert {"total", "doubled", "rowmax"} == set(outputs)
    assert rows(gateway, "sent") == 60
    assert rows(gateway, "dropped") == 0


def test_monitor_down_then_up_then_killed_then_restarted(gateway: ServerThread, port: int) -> None:
    send(gateway.target, 10, prefix="down")  # nobody listens: every request still succeeds
    assert wait_for(lambda: rows(gateway, "dropped") == 30)
    collector = Collector(port)
    try:
        assert wait_for(lambda: gateway.server.sampler is not None and gateway.server.sampler.connected)
        send(gateway.target, 10, prefix="up")
        assert wait_for(lambda: collector.rows() == 30)
    finally:
        collector.stop()
    send(gateway.target, 10, prefix="killed")
    assert wait_for(lambda: rows(gateway, "sent") + rows(gateway, "dropped") == 90)
    revived = Collector(port)
    try:
        assert wait_for(lambda: gateway.server.sampler is not None and gateway.server.sampler.connected)
        send(gateway.target, 10, prefix="back")
        assert wait_for(lambda: revived.rows() >= 30)
    finally:
        revived.stop()
    assert rows(gateway, "sent") == collector.rows() + revived.rows()
    assert rows(gateway, "sent") + rows(gateway, "dropped") == 120


def test_stalled_monitor_keeps_the_buffer_bounded(tmp_path: Path, port: int) -> None:
    """A monitor that accepts the socket and never reads: sockets fill, the buffer stays bounded, requests
    keep succeeding and the overflow is counted as dropped."""
    width = 4096
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    toml = "[sampling]\nrate = 1.0\nmax_rows_per_request = 64\n"
    root = build_registry(tmp_path / "r", {"wide": model}, toml={"wide": toml})
    collector = Collector(port, stall=True)
    url = f"ws://127.0.0.1:{port}/v1/samples/stream"
    server = ServerThread(GatewayConfig(root, port=0, metrics_port=None, monitor_url=url, poll_interval=0))
    sampler = server.server.sampler
    assert sampler is not None
    sampler.max_buffer_bytes = 8 * 1024 * 1024
    try:
        assert wait_for(lambda: server.server.shipper is not None and server.server.shipper.connects >= 1)
        x = np.ones((64, width), np.float32)  # 1 MiB in, 1 MiB out per sample
        peak = 0
        with grpcclient.InferenceServerClient(server.target) as client:
            for _ in range(60):
                tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
                tensor.set_data_from_numpy(x)
                assert client.infer("wide", [tensor]).as_numpy("y").shape == x.shape
                peak = max(peak, sampler.buffered_rows * 2 * width * 4)
        assert peak <= sampler.max_buffer_bytes
        dropped = server.registry.get_sample_value(
            "infergate_samples_total", {"model": "wide", "outcome": "dropped"}
        )
        assert (dropped or 0) > 0
    finally:
        collector.stop()  # first: a peer that never reads would hold the gateway's socket in "closing"
        server.stop()


def test_shutdown_flushes_buffered_samples(registry: Path, port: int) -> None:
    collector = Collector(port)
    url = f"ws://127.0.0.1:{port}/v1/samples/stream"
    server = ServerThread(
        GatewayConfig(registry, port=0, metrics_port=None, monitor_url=url, poll_interval=0)
    )
    try:
        assert wait_for(lambda: server.server.shipper is not None and server.server.shipper.connects >= 1)
        send(server.target, 30, prefix="flush")
        server.stop()
        assert collector.rows() == 90
    finally:
        server.stop()
        collector.stop()
