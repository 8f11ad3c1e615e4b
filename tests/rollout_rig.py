"""Helpers of the staged-rollout integration tests (tests/integration/test_rollout*.py): the rollout
config, publishing a model, client traffic that keeps every answer, waiting on ``rollout.json``, the
gateway's metrics, and a loopback webhook receiver."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import tritonclient.grpc as grpcclient
from prometheus_client import generate_latest

from registry.publish import publish
from registry.rollout import RolloutState, read_state
from registry.webhook_signing import SIGNATURE_HEADER
from tests import traffic
from tests.rollout_models import FEATURES, reference_logits
from tests.servers import ServerThread

POLL = 0.1
TICK = 0.05


def rollout_toml(mode: str = "canary", **keys: object) -> str:
    settings = {
        "mode": f'"{mode}"',
        "steps": "[25, 50, 100]",
        "step_seconds": "0.3",
        "min_requests": "30",
        # Out of reach unless a test sets it: latency on a loaded machine must not decide which gate a
        # test sees (only the slower candidate's test judges p99, against a 160-layer model).
        "max_p99_ratio": "1000.0",
        "drift_gate": "false",
    }
    settings.update({k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in keys.items()})
    body = "\n".join(f"{k} = {v}" for k, v in settings.items())
    return f"[batching]\nlatency_budget_ms = 30000.0\n\n[rollout]\n{body}\n"


def publish_model(root: Path, model: onnx.ModelProto, tag: str) -> int:
    source = root.parent / f"{tag}.onnx"
    onnx.save(model, source)
    return publish(root, "m", source).version


class Traffic(traffic.Traffic):
    """:class:`tests.traffic.Traffic` to the rollout models ("m": ``x`` of FEATURES columns -> ``logits``)."""

    def __init__(self, target: str, threads: int = 3) -> None:
        super().__init__(target, threads, features=FEATURES, output="logits")


def wait_state(root: Path, done: Callable[[RolloutState], bool], timeout: float = 60.0) -> RolloutState:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(root / "m")
        if state is not None and done(state):
            return state
        time.sleep(0.02)
    raise AssertionError(f"rollout state never matched; last: {read_state(root / 'm')}")


def finished(state: RolloutState) -> bool:
    return state.status in ("promoted", "rolled_back")


def metric(server: ServerThread, name: str, **labels: str) -> float:
    text = generate_latest(server.registry).decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Hook:
    """A real HTTP server on loopback collecting the JSON events POSTed to it (``events``), and each raw
    body with its ``X-Infergate-Signature-256`` header, "" when unsigned (``raw``)."""

    def __init__(self) -> None:
        events: list[dict[str, Any]] = []
        raw: list[tuple[bytes, str]] = []
        self.events, self.raw = events, raw

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                raw.append((body, self.headers.get(SIGNATURE_HEADER, "")))
                events.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count:
            assert time.monotonic() < deadline, f"webhook got {self.events}"
            time.sleep(0.02)
        return self.events

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_live(server: ServerThread, running: bool, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while (server.server.rollouts.live("m") is not None) != running:
        assert time.monotonic() < deadline, (
            f"the gateway never {'started' if running else 'ended'} the rollout"
        )
        time.sleep(0.02)


def infer_version(server: ServerThread, request_id: str) -> str:
    tensor = grpcclient.InferInput("x", [1, FEATURES], "FP32")
    tensor.set_data_from_numpy(np.ones((1, FEATURES), np.float32))
    with grpcclient.InferenceServerClient(server.target) as client:
        return str(client.infer("m", [tensor], request_id=request_id).get_response().model_version)


def check_answers(traffic: Traffic, shuffled_version: str = "") -> None:
    assert traffic.errors == []
    for version, x, logits in traffic.answers:
        expected = reference_logits(x, shuffled=version == shuffled_version)
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
