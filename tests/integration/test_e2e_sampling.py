"""The real gateway and the real monitor on loopback: sampled traffic is caught end to end.

One demo registry; the monitor runs as ``python -m monitor`` (a process of its own), the gateway in this
process (:class:`tests.servers.ServerThread`) with sampling at 100 % and the monitor's WebSocket as its
sink. Windows are 500 rows and close on rows only, so which rows land in which window is exact. Every
wait is a bounded poll of public state (``/v1/drift``, ``/metrics``), never a sleep.

* reference-like classifier traffic raises nothing; three of sixteen features shifted by 1 sigma are
  flagged, exactly those inputs, for the version that answered, and the version enters drift within
  K = 2 windows;
* the gateway's ``infergate_samples_total{outcome="sent"}`` equals the rows the monitor took in, and
  sent plus dropped equals the rows requested;
* a new version published while traffic flows: each version's rows and windows hold exactly the rows
  that version answered (by the client's own count), and the new version's windows match its own
  reference, outputs included (its labels are all 1; a window with another version's rows would not);
* the skew check: a version whose ``training.npz`` matches what is served reports ``skew: false``, one
  whose training inputs were scaled on three features reports ``skew: true`` for exactly those.
"""

from __future__ import annotations

import itertools
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from onnx import numpy_helper
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import GatewayConfig
from registry.demo import DATA_DIR, build_demo
from registry.publish import publish
from tests.monitor_servers import MonitorProcess, wait_until
from tests.servers import ServerThread

pytestmark = pytest.mark.slow

WINDOW = 500
REQUEST_ROWS = 50  # <= max_rows_per_request (64): every row of a request is sampled
SHIFTED = (1, 5, 9)  # served traffic shifted by 1 sigma
SKEWED = (4, 8, 13)  # training inputs of version 3 scaled by 2
CLASSIFIER_TOML = f"""\
[batching]
max_batch_size = 64
latency_budget_ms = 30000.0

[versions]
policy = "latest"
latest = 2

[drift]
window_rows = {WINDOW}
window_seconds = 3600.0
consecutive = 2
# The traffic below is resampled from the 2000-row reference, so against training.npz it carries that
# sample's noise on top of the window's, which calibrated mode's null (independent samples) does not
# allow for: the skew check would flag clean traffic. The fixed cut is far above that noise.
psi_threshold_mode = "fixed"
"""
REGRESSOR_TOML = f"""\
[batching]
latency_budget_ms = 30000.0

[drift]
window_rows = {WINDOW}
window_seconds = 3600.0
"""


@dataclass
class Stack:
    registry: Path
    monitor: MonitorProcess
    gateway: ServerThread
    reference: np.ndarray[Any, Any]  # classifier reference inputs (the same held-out rows for every version)
    answered: dict[tuple[str, str], int] = field(default_factory=dict)  # rows answered, by (model, version)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(
        self, model: str, x: np.ndarray[Any, Any], version: str = "", until: threading.Event | None = None
    ) -> None:
        """Send ``x`` in requests of REQUEST_ROWS rows, in order (over and over ``until`` it is set, for
        at most a minute); count the rows by the answering version."""
        starts = range(0, len(x), REQUEST_ROWS)
        deadline = time.monotonic() + 60.0
        with grpcclient.InferenceServerClient(self.gateway.target) as client:
            for start in itertools.cycle(starts) if until is not None else starts:
                if until is not None and (until.is_set() or time.monotonic() > deadline):
                    return
                part = np.ascontiguousarray(x[start : start + REQUEST_ROWS])
                tensor = grpcclient.InferInput("input", list(part.shape), "FP32")
                tensor.set_data_from_numpy(part)
                answer = client.infer(model, [tensor], model_version=version).get_response()
                with self.lock:
                    key = (model, answer.model_version)
                    self.answered[key] = self.answered.get(key, 0) + len(part)

    def rows_answered(self, model: str, version: int) -> int:
        with self.lock:
            return self.answered.get((model, str(version)), 0)

    def gateway_metric(self, name: str, **labels: str) -> float:
        return metric(scrape(f"http://127.0.0.1:{self.gateway.server.metrics_port}/metrics"), name, **labels)

    def monitor_metric(self, name: str, **labels: str) -> float:
        return metric(self.monitor.metrics(), name, **labels)

    def windows(self, model: str, version: int, count: int, timeout: float = 30.0) -> dict[str, Any]:
        """The version's ``/v1/drift`` entry once at least ``count`` windows were evaluated."""

        def probe() -> dict[str, Any] | None:
            entry = self.monitor.entry(model, version)
            return entry if entry is not None and entry["windows"] >= count else None

        return wait_until(f"{model} v{version}: {count} windows", probe, timeout)

    def delivered(self, model: str, version: int, timeout: float = 30.0) -> int:
        """Once the monitor has taken in every row the version answered, that number."""
        rows = self.rows_answered(model, version)
        wait_until(
            f"{model} v{version}: {rows} rows at the monitor",
            lambda: (
                self.monitor_metric("infergate_monitor_rows_total", model=model, version=str(version)) == rows
            ),
            timeout,
        )
        return rows


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode("utf-8"))


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include ``labels`` (0 when there is none)."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def flagged(features: list[dict[str, Any]], key: str = "drift") -> set[str]:
    return {f["name"] for f in features if f[key]}


def history(stack: Stack, model: str, version: int) -> list[dict[str, Any]]:
    windows: list[dict[str, Any]] = stack.monitor.get("/v1/drift/history", model=model, version=str(version))[
        "windows"
    ]
    return windows


def rows_like(reference: np.ndarray[Any, Any], rows: int, seed: int) -> np.ndarray[Any, Any]:
    """``rows`` rows drawn from the reference rows (what "no drift" looks like)."""
    return reference[np.random.default_rng(seed).integers(0, len(reference), rows)].copy()


def skewed_version(registry: Path, tmp: Path, reference: np.ndarray[Any, Any]) -> Path:
    """Classifier v2 with its bias moved so every label is 1, its own reference (its outputs on the
    reference inputs), and training inputs scaled by 2 on SKEWED (a units bug in the training pipeline).
    Returns the training file; the model and reference are written under ``tmp``."""
    model = onnx.load(registry / "classifier" / "2" / "model.onnx")
    for init in model.graph.initializer:
        if init.name == "bias":
            bias = numpy_helper.to_array(init).copy()
            bias[1] += 50.0
            init.CopyFrom(numpy_helper.from_array(bias, "bias"))
    onnx.save(model, tmp / "v3.onnx")
    session = ort.InferenceSession(str(tmp / "v3.onnx"), providers=["CPUExecutionProvider"])
    probabilities, label = session.run(["probabilities", "label"], {"input": reference})
    assert set(np.unique(label)) == {1}
    np.savez(
        tmp / "v3-reference.npz",
        **{"input:input": reference, "output:probabilities": probabilities, "output:label": label},
    )
    with np.load(registry / DATA_DIR / "classifier" / "train-v2.npz") as train:
        x, y = train["input:input"].copy(), train["y"]
    x[:, list(SKEWED)] *= 2.0
    np.savez(tmp / "train-v3.npz", **{"input:input": x, "y": y})
    return tmp / "train-v3.npz"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("e2e")
    registry = tmp / "registry"
    build_demo(registry)
    (registry / "classifier" / "model.toml").write_text(CLASSIFIER_TOML)
    (registry / "regressor" / "model.toml").write_text(REGRESSOR_TOML)
    with np.load(registry / "classifier" / "2" / "reference.npz") as npz:
        reference = npz["input:input"]
    monitor = MonitorProcess(registry, tmp / "monitor.db", tmp / "monitor.log")
    try:
        config = GatewayConfig(
            registry,
            port=0,
            metrics_port=0,
            monitor_url=monitor.stream_url,
            sample_rate=1.0,
            poll_interval=0.2,
        )
        gateway = ServerThread(config)
        try:
            yield Stack(registry, monitor, gateway, reference)
        finally:
            gateway.stop()
    finally:
        assert monitor.stop() == 0, monitor.log_tail()


def test_reference_traffic_is_clean_and_three_shifted_features_are_caught(stack: Stack) -> None:
    # Pad to a window boundary first, so the shifted windows hold shifted rows only.
    padding = (-stack.rows_answered("classifier", 2)) % WINDOW
    clean = rows_like(stack.reference, padding + 2 * WINDOW, seed=1)
    stack.send("classifier", clean, version="2")
    stack.delivered("classifier", 2)
    before = stack.rows_answered("classifier", 2) // WINDOW
    entry = stack.windows("classifier", 2, before)
    assert [flagged(w["features"]) for w in history(stack, "classifier", 2)] == [set()] * before
    assert entry["drift"] is False
    assert entry["skew"] is False  # served like its training data
    assert entry["window"]["rows"] == WINDOW

    shifted = rows_like(stack.reference, 2 * WINDOW, seed=2)
    shifted[:, list(SHIFTED)] += stack.reference[:, list(SHIFTED)].std(axis=0)
    stack.send("classifier", shifted, version="2")
    names = {f"input[{i}]" for i in SHIFTED}
    stack.windows("classifier", 2, before + 2)
    first, second = history(stack, "classifier", 2)[-2:]
    for window in (first, second):
        inputs = {f for f in flagged(window["features"]) if f.startswith("input[")}
        assert inputs == names, window["window"]  # exactly the shifted inputs (outputs may follow them)
        assert window["model"] == "classifier"
        assert window["version"] == "2"  # the version that answered
    assert (first["drift"], second["drift"]) == (False, True)  # in drift after K = 2 windows
    assert second["consecutive"] == 2
    assert stack.monitor_metric("infergate_drift_detected", model="classifier", version="2") == 1.0


def test_gateway_sent_rows_equal_monitor_rows_less_drops(stack: Stack) -> None:
    x = np.random.default_rng(3).normal(size=(1200, 8)).astype(np.float32)
    stack.send("regressor", x)
    stack.delivered("regressor", 1)
    for model in ("classifier", "regressor"):
        sent = stack.gateway_metric("infergate_samples_total", model=model, outcome="sent")
        dropped = stack.gateway_metric("infergate_samples_total", model=model, outcome="dropped")
        answered = sum(rows for (m, _), rows in stack.answered.items() if m == model)
        received = stack.monitor_metric("infergate_monitor_rows_total", model=model)
        assert sent + dropped == answered, model
        assert sent == received, model
    assert stack.monitor_metric("infergate_monitor_rejected_rows_total") == 0
    regressor = stack.windows("regressor", 1, 2)
    assert regressor["window"]["rows"] == WINDOW
    assert regressor["skew"] is False  # the demo regressor's training data are its inputs too


def test_a_swap_mid_stream_keeps_each_version_in_its_own_windows_and_skew_is_checked(
    stack: Stack, tmp_path: Path
) -> None:
    training = skewed_version(stack.registry, tmp_path, stack.reference)
    stop = threading.Event()
    traffic = rows_like(stack.reference, 40 * REQUEST_ROWS, seed=4)
    sender = threading.Thread(target=stack.send, args=("classifier", traffic), kwargs={"until": stop})
    before = stack.rows_answered("classifier", 2)
    sender.start()
    try:
        wait_until(
            "traffic to version 2", lambda: stack.rows_answered("classifier", 2) >= before + 5 * REQUEST_ROWS
        )
        v3 = publish(
            stack.registry,
            "classifier",
            tmp_path / "v3.onnx",
            reference=tmp_path / "v3-reference.npz",
            train_data=training,
        )
        assert v3.version == 3
        assert v3.training_path.is_file()
        wait_until(
            "version 3 answering 2 windows", lambda: stack.rows_answered("classifier", 3) >= 2 * WINDOW
        )
    finally:
        stop.set()
        sender.join(60)
    assert not sender.is_alive()

    for version in (2, 3):
        # The monitor has exactly the rows this version answered, in exactly as many windows.
        rows = stack.delivered("classifier", version)
        windows = rows // WINDOW  # windows close on rows only: every full window, no more
        stack.windows("classifier", version, windows)
        assert (
            stack.monitor_metric(
                "infergate_monitor_windows_total",
                model="classifier",
                version=str(version),
                outcome="evaluated",
            )
            == windows
        )
    entry = stack.windows("classifier", 3, 2)
    v3_windows = history(stack, "classifier", 3)
    assert [w["window"]["rows"] for w in v3_windows] == [WINDOW] * (
        stack.rows_answered("classifier", 3) // WINDOW
    )
    for window in v3_windows:
        # Version 3 labels every row 1; one window of version-2 rows would drift on label and probabilities.
        assert flagged(window["features"]) == set(), window["window"]
        label = next(f for f in window["features"] if f["name"] == "label[0]")
        assert (label["kind"], label["values"], label["psi"]) == ("categorical", WINDOW, 0.0)

    skewed = {f"input[{i}]" for i in SKEWED}
    assert (entry["skew"], entry["drift"]) == (True, False)  # skew: served unlike training, like reference
    check = entry["skew_check"]
    assert (check["status"], check["required"], check["windows"], check["window"]) == ("done", 1, 1, 1)
    assert check["training_rows"] == 12000
    assert flagged(check["features"], "skew") == flagged(check["features"]) == skewed
    assert {f["name"] for f in entry["features"] if f["skew"]} == skewed
    assert v3_windows[0]["skew"] is True  # stored with the window that decided it
    v2 = stack.monitor.entry("classifier", 2)
    assert v2 is not None
    assert (v2["skew"], v2["skew_check"]["status"], flagged(v2["skew_check"]["features"], "skew")) == (
        False,
        "done",
        set(),
    )
    assert stack.monitor_metric("infergate_skew_detected", model="classifier", version="3") == 1.0
    assert stack.monitor_metric("infergate_skew_detected", model="classifier", version="2") == 0.0
