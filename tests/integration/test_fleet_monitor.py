"""One monitor for the fleet (issue 17, item 5): two real gateways ship their samples to one real
``python -m monitor`` over TLS with the ingest token, as deploy/k8s/components/fleet-monitor wires them.

The monitor serves ingest on a separate address over TLS (``--ingest-tls-cert/--ingest-tls-key``, a
certificate of a test CA) behind ``--monitor-token-file``; each gateway ships to ``wss://localhost:PORT``
verifying it with ``--monitor-tls-ca`` and sending the token. Requests alternate between the gateways in
pieces smaller than a window, so every window of the model version holds rows of both: the version's
rows at the monitor are the sum of both gateways' sampled rows, and its windows are that sum over
``window_rows``, each full. A gateway that does not trust the monitor's CA delivers nothing, and counts
every one of its samples as dropped.
"""

from __future__ import annotations

import gc
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import GatewayConfig
from registry.demo import build_demo
from tests.certs import Pki
from tests.monitor_servers import MonitorProcess, wait_until
from tests.servers import ServerThread

# asyncio may still be closing a TLS socket of an in-process gateway's sample stream (the close_notify
# exchange) when ServerThread stops that gateway's loop: the half-closed transport is collected later and
# warns "unclosed". It happens in about one run in ten, only to loops stopped by the test harness (a real
# gateway exits with its process). It is collected here (gc below) and that warning alone is ignored, so
# it never fails an unrelated test later on.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings(
        r"ignore:Exception ignored in. <(socket\.socket|function _SelectorTransport\.__del__):"
        "pytest.PytestUnraisableExceptionWarning"
    ),
]

MODEL, VERSION = "classifier", 2
WINDOW, PIECE, PIECES = 200, 50, 12  # 12 pieces of 50 rows, alternating gateways: 3 windows of 200
TOKEN = "ingest-token-5d1c9e"
CLASSIFIER_TOML = f"""\
[batching]
latency_budget_ms = 30000.0

[versions]
policy = "latest"
latest = {VERSION}

[drift]
window_rows = {WINDOW}
window_seconds = 3600.0
"""


@dataclass
class Fleet:
    monitor: MonitorProcess
    gateways: list[ServerThread]
    reference: np.ndarray[Any, Any]
    config: dict[str, Any]


def monitor_metric(monitor: MonitorProcess, name: str, **labels: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(monitor.metrics())
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def samples(gateway: ServerThread, outcome: str) -> float:
    value = gateway.registry.get_sample_value("infergate_samples_total", {"model": MODEL, "outcome": outcome})
    return value or 0.0


def infer(gateway: ServerThread, rows: np.ndarray[Any, Any]) -> None:
    with grpcclient.InferenceServerClient(gateway.target) as client:
        tensor = grpcclient.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(np.ascontiguousarray(rows))
        answer = client.infer(MODEL, [tensor], model_version=str(VERSION)).get_response()
        assert answer.model_version == str(VERSION)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet")
    registry = tmp / "registry"
    build_demo(registry)
    (registry / MODEL / "model.toml").write_text(CLASSIFIER_TOML)
    with np.load(registry / MODEL / str(VERSION) / "reference.npz") as npz:
        reference = npz["input:input"]
    pki = Pki()
    cert, key = pki.issue("infergate-monitor", server=True).write(tmp / "tls", "monitor")
    ca = pki.write_ca(tmp / "tls")
    token = tmp / "monitor-token"
    token.write_text(TOKEN + "\n")
    extra = ["--ingest-host", "127.0.0.1", "--ingest-port", "0", "--monitor-token-file", str(token)]
    extra += ["--ingest-tls-cert", str(cert), "--ingest-tls-key", str(key)]
    monitor = MonitorProcess(registry, tmp / "monitor.db", tmp / "monitor.log", extra=extra)
    config = {
        "registry": registry,
        "port": 0,
        "metrics_port": 0,
        "monitor_url": f"wss://localhost:{monitor.ingest_port}/v1/samples/stream",
        "monitor_token_file": token,
        "monitor_tls_ca": ca,
        "sample_rate": 1.0,
        "poll_interval": 0,
    }
    gateways: list[ServerThread] = []
    try:
        gateways += [ServerThread(GatewayConfig(**config)) for _ in range(2)]
        yield Fleet(monitor, gateways, reference, config)
    finally:
        for gateway in gateways:
            gateway.stop()
        gc.collect()  # see pytestmark
        assert monitor.stop() == 0, monitor.log_tail()


def test_two_gateways_fill_the_same_windows_of_one_monitor(fleet: Fleet) -> None:
    for gateway in fleet.gateways:
        sampler = gateway.server.sampler
        assert sampler is not None
        wait_until("the gateway's sample stream to connect over TLS", lambda s=sampler: s.connected)
    rows = np.random.default_rng(0).choice(fleet.reference, PIECES * PIECE).astype(np.float32)
    for i in range(PIECES):
        infer(fleet.gateways[i % 2], rows[i * PIECE : (i + 1) * PIECE])
    total = PIECES * PIECE
    for gateway in fleet.gateways:  # each ships its own half: neither fills the windows alone
        wait_until(f"{total // 2} rows shipped", lambda g=gateway: samples(g, "sent") == total // 2)
    assert [samples(g, "dropped") for g in fleet.gateways] == [0.0, 0.0]
    labels = {"model": MODEL, "version": str(VERSION)}
    wait_until(
        f"{total} rows at the monitor",
        lambda: monitor_metric(fleet.monitor, "infergate_monitor_rows_total", **labels) == total,
    )

    def evaluated() -> dict[str, Any] | None:
        entry = fleet.monitor.entry(MODEL, VERSION)
        done = (
            entry is not None and entry["window"] is not None and entry["window"]["index"] == total // WINDOW
        )
        return entry if done else None

    entry = wait_until(f"{total // WINDOW} windows", evaluated)
    assert entry["window"]["rows"] == WINDOW
    assert entry["windows"] == total // WINDOW  # every window evaluated and counted for the decisions
    history = fleet.monitor.get("/v1/drift/history", model=MODEL, version=str(VERSION))["windows"]
    assert [w["window"]["rows"] for w in history] == [WINDOW] * (total // WINDOW)
    assert monitor_metric(fleet.monitor, "infergate_monitor_rejected_total") == 0


def test_a_gateway_that_does_not_trust_the_monitor_delivers_nothing(fleet: Fleet, tmp_path: Path) -> None:
    before = monitor_metric(fleet.monitor, "infergate_monitor_rows_total")
    stranger = ServerThread(GatewayConfig(**{**fleet.config, "monitor_tls_ca": Pki().write_ca(tmp_path)}))
    try:
        infer(stranger, fleet.reference[:PIECE].astype(np.float32))
        # dropped at the failed handshake (or at once, once it failed): counted, never queued for later
        wait_until(f"{PIECE} samples dropped", lambda: samples(stranger, "dropped") == PIECE)
        assert samples(stranger, "sent") == 0
        assert stranger.server.shipper is not None
        assert stranger.server.shipper.connects == 0
    finally:
        stranger.stop()
        gc.collect()  # see pytestmark
    assert monitor_metric(fleet.monitor, "infergate_monitor_rows_total") == before


def post_feedback(monitor: MonitorProcess, items: list[dict[str, Any]], token: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{monitor.url}/v1/feedback",
        data=json.dumps({"items": items}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        answer: dict[str, Any] = json.load(reply)
    return answer


def test_labels_join_predictions_from_either_gateway(fleet: Fleet) -> None:
    """Labels come from systems that do not know which replica answered: one monitor holds both."""
    rows = np.random.default_rng(1).choice(fleet.reference, 2 * PIECE).astype(np.float32)
    answered: dict[str, int] = {}
    for k, gateway in enumerate(fleet.gateways):
        before = samples(gateway, "sent")
        with grpcclient.InferenceServerClient(gateway.target) as client:
            for j in range(PIECE):
                tensor = grpcclient.InferInput("input", [1, rows.shape[1]], "FP32")
                tensor.set_data_from_numpy(rows[k * PIECE + j : k * PIECE + j + 1])
                result = client.infer(MODEL, [tensor], model_version=str(VERSION), request_id=f"g{k}-{j}")
                answered[f"g{k}-{j}"] = int(result.as_numpy("label")[0])
        wait_until("the requests shipped", lambda g=gateway, b=before: samples(g, "sent") == b + PIECE)
    items = [
        {"request_id": rid, "model": MODEL, "labels": {"label": [label]}} for rid, label in answered.items()
    ]
    answer = post_feedback(fleet.monitor, items, TOKEN)
    assert answer["results"] == ["joined"] * (2 * PIECE)  # ids answered by gateway 0 and by gateway 1
    assert (
        monitor_metric(fleet.monitor, "infergate_feedback_total", model=MODEL, result="matched") == 2 * PIECE
    )
