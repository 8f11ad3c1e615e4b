"""Access lines through a real gateway with the text formatter (``--log-format text``): every documented
field as ``key=value``, and never tensor contents."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from gateway.config import GatewayConfig
from gateway.logs import TextFormatter
from tests.logcapture import captured_access_log
from tests.servers import ServerThread

FIELDS = ("request_id", "model", "version", "status", "queue_ms", "compute_ms", "batch_size", "peer")


@pytest.fixture
def access_text() -> Iterator[io.StringIO]:
    with captured_access_log(TextFormatter()) as stream:
        yield stream


def test_text_access_lines_carry_the_fields(fixture_registry: Path, access_text: io.StringIO) -> None:
    config = GatewayConfig(fixture_registry, sampling=False, port=0, metrics_port=None, access_log_rate=1.0)
    server = ServerThread(config)
    try:
        with grpcclient.InferenceServerClient(server.target) as client:
            tensor = grpcclient.InferInput("x", [2, 3], "FP32")
            tensor.set_data_from_numpy(np.full((2, 3), 12345.0, np.float32))
            client.infer("dtype_fp32", [tensor], request_id="text-id")
    finally:
        server.stop()
    (line,) = [line for line in access_text.getvalue().splitlines() if "request_id=text-id" in line]
    assert " INFO infergate.access: request request_id=text-id " in line
    pairs = dict(word.split("=", 1) for word in line.split(": request ", 1)[1].split(" "))
    assert set(pairs) >= set(FIELDS)
    assert (pairs["model"], pairs["version"], pairs["status"], pairs["batch_size"]) == (
        "dtype_fp32",
        "1",
        "OK",
        "2",
    )
    assert "12345" not in access_text.getvalue()  # never tensor contents
