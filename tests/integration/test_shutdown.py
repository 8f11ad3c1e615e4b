"""SIGTERM with requests in flight: every accepted request completes, new ones are refused, exit code 0.

The gateway runs as a real subprocess (``python -m gateway``) on 127.0.0.1 port 0.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.onnx_models import build_registry, slow_model

LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    toml = "[batching]\nmax_batch_size = 256\nlatency_budget_ms = 30000.0\n[runtime]\nintra_op_threads = 1\n"
    root = build_registry(tmp_path / "registry", {"slow": slow_model()}, toml={"slow": toml})
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "--registry",
            str(root),
            "--port",
            "0",
            "--metrics-port",
            "0",
            "--poll-interval",
            "0.5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    target = ""
    for line in process.stdout:
        match = LISTENING.search(line)
        if match:
            target = f"127.0.0.1:{match.group(1)}"
            break
    assert target, "gateway did not start"
    try:
        yield process, target
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        print(process.stdout.read())
        process.stdout.close()


def test_sigterm_drains_in_flight_requests(gateway_process: tuple[subprocess.Popen[str], str]) -> None:
    process, target = gateway_process
    answers: queue.Queue[tuple[object, object]] = queue.Queue()
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    count = 8
    with grpcclient.InferenceServerClient(target) as client:
        for i in range(count):
            tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            client.async_infer(
                "slow",
                [tensor],
                callback=lambda result, error: answers.put((result, error)),
                request_id=str(i),
            )
        first = answers.get(timeout=30)  # the server is working through the queue now
        process.send_signal(signal.SIGTERM)
        rest = [answers.get(timeout=30) for _ in range(count - 1)]
    results = [first, *rest]
    assert [str(error) for _, error in results if error is not None] == []
    outputs = [result.as_numpy("y") for result, _ in results]  # type: ignore[attr-defined]
    for output in outputs[1:]:
        np.testing.assert_array_equal(output, outputs[0])
    assert process.wait(30) == 0
