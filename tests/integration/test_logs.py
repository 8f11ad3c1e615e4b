"""Structured access logs: JSON lines with the documented fields, ids generated and echoed, no tensors."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from gateway.config import GatewayConfig
from gateway.logs import JsonFormatter
from tests.logcapture import captured_access_log
from tests.servers import ServerThread

FIELDS = {
    "request_id",
    "model",
    "version",
    "status",
    "queue_ms",
    "compute_ms",
    "batch_size",
    "peer",
    "duration_ms",
}


@pytest.fixture
def access_lines() -> Iterator[io.StringIO]:
    with captured_access_log(JsonFormatter()) as stream:
        yield stream


def test_access_log_lines(fixture_registry: Path, access_lines: io.StringIO) -> None:
    config = GatewayConfig(fixture_registry, sampling=False, port=0, metrics_port=None, access_log_rate=1.0)
    server = ServerThread(config)
    try:
        with grpcclient.InferenceServerClient(server.target) as client:
            x = np.full((3, 3), 12345.0, np.float32)
            tensor = grpcclient.InferInput("x", [3, 3], "FP32")
            tensor.set_data_from_numpy(x)
            client.infer("dtype_fp32", [tensor], request_id="given-id")
            generated = client.infer("dtype_fp32", [tensor]).get_response().id
            bad = grpcclient.InferInput("x", [3, 4], "FP32")
            bad.set_data_from_numpy(np.zeros((3, 4), np.float32))
            with pytest.raises(InferenceServerException):
                client.infer("dtype_fp32", [bad], request_id="bad-id")
            with pytest.raises(InferenceServerException):
                client.infer("no_such_model", [tensor], request_id="lost-id")
    finally:
        server.stop()
    lines = [orjson.loads(line) for line in access_lines.getvalue().splitlines()]
    by_id = {line["request_id"]: line for line in lines}
    assert len(generated) == 32
    assert set(by_id) == {"given-id", generated, "bad-id", "lost-id"}
    ok = by_id["given-id"]
    assert set(ok) >= FIELDS
    assert (ok["model"], ok["version"], ok["status"], ok["batch_size"]) == ("dtype_fp32", "1", "OK", 3)
    assert ok["peer"].startswith("ipv4:127.0.0.1:")
    assert ok["level"] == "INFO"
    assert by_id["bad-id"]["status"] == "INVALID_ARGUMENT"
    assert by_id["bad-id"]["level"] == "WARNING"
    assert by_id["lost-id"]["status"] == "NOT_FOUND"
    assert "12345" not in access_lines.getvalue()  # never tensor contents
