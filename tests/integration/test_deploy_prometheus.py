"""A real Prometheus scrapes a real gateway and drift monitor on loopback, configured from
deploy/prometheus/prometheus.yml (targets and intervals replaced) with deploy/prometheus/alerts.yml loaded.

The gateway runs in-process and streams every answered request (sample rate 1) to the monitor, which runs
as its own process (``python -m monitor``). A bounded load goes in (120 shifted classifier requests of 8
rows, most from 4 threads, and 20 regressor requests); then, through Prometheus's HTTP API: the request
counters equal the requests sent, the histogram quantiles are sane, the sampled rows the gateway sent equal
the rows the monitor took in, the shifted version is in drift and its alert goes pending, and every
dashboard expression evaluates on the live data. Last, 1000 requests naming unknown models or versions add
no series to the gateway's ``/metrics``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from gateway.config import GatewayConfig
from gateway.metrics import LATENCY_BUCKETS
from registry.demo import build_demo
from tests.prometheus import (
    Prometheus,
    dashboard,
    http_get,
    panels,
    render,
    row_panels,
    scrape_config,
    tool,
    variable_queries,
)
from tests.servers import ServerThread

pytestmark = pytest.mark.slow

CLASSIFIER_REQUESTS = 120
ROWS = 8
THREADS = 4
REGRESSOR_REQUESTS = 20
WINDOW_ROWS = 200  # the classifier's drift windows: 960 rows close 4 of them, drift needs 2 in a row

#: Dashboard panels that legitimately show nothing after this traffic (no errors, shedding or failures).
EMPTY_PANELS = {
    "Error ratio by status code": "no request failed",
    "Requests for unknown models": "no unknown model was asked for before this check",
    "Shed requests by reason": "nothing was shed",
}

#: Rows whose panels may show nothing here: no rollout runs and no feedback is sent in this traffic, and the
#: metrics behind them (tests/planned_metrics.py) may not be exported yet. Some may have data (a gauge the
#: exporter sets at start), so these panels are allowed to be empty, not required to be.
MAY_BE_EMPTY_ROWS = ("Rollouts", "Model quality")


@dataclass
class Stack:
    gateway: ServerThread
    prometheus: Prometheus
    monitor_url: str
    version: str  # the classifier version that answered
    latencies_s: list[float]  # client-side, per classifier request
    monitor_log: Path


def _start_monitor(registry: Path, workdir: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    """``python -m monitor`` on 127.0.0.1:0; the port comes from its 'listening on' line."""
    out, log = workdir / "monitor.out", workdir / "monitor.log"
    with out.open("wb") as stdout, log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "monitor", "--registry", str(registry), "--port", "0", "--db", ":memory:"],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if match := re.search(r"listening on http://127\.0\.0\.1:(\d+)", out.read_text()):
            return process, int(match.group(1)), log
        if process.poll() is not None:
            break
        time.sleep(0.05)
    _stop(process)
    raise AssertionError(f"the monitor did not start:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def _shifted_rows(registry: Path, rows: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Reference rows of classifier v2 with every feature shifted by one standard deviation."""
    with np.load(registry / "classifier" / "2" / "reference.npz") as npz:
        reference = np.asarray(npz["input:input"], dtype=np.float32)
    rng = np.random.default_rng(8)
    x = reference[rng.integers(0, len(reference), rows)]
    return (x + reference.std(axis=0)).astype(np.float32)


def _infer(target: str, model: str, batches: list[np.ndarray[Any, Any]]) -> list[tuple[str, float]]:
    """Sends each batch as one request; (answering version, seconds) per request."""
    answers = []
    with grpcclient.InferenceServerClient(target) as client:
        for x in batches:
            tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            started = time.perf_counter()
            result = client.infer(model, [tensor])
            answers.append((result.get_response().model_version, time.perf_counter() - started))
    return answers


def _target_health(prometheus: Prometheus) -> dict[str, str]:
    return {t["labels"]["job"]: t["health"] for t in prometheus.api("targets")["activeTargets"]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tool("prometheus")  # skip (saying why) before starting anything
    workdir = tmp_path_factory.mktemp("deploy-prometheus")
    registry = workdir / "registry"
    build_demo(registry)
    for model in ("classifier", "regressor"):
        # Generous budgets: this test counts requests, so a busy CI host must not shed any.
        toml = registry / model / "model.toml"
        text, budgets = re.subn(
            r"latency_budget_ms = [0-9.]+", "latency_budget_ms = 2000.0", toml.read_text()
        )
        assert budgets == 1, toml
        if model == "classifier":
            text += f"\n[drift]\nwindow_rows = {WINDOW_ROWS}\nwindow_seconds = 60.0\n"
        toml.write_text(text)

    monitor, monitor_port, monitor_log = _start_monitor(registry, workdir)
    gateway: ServerThread | None = None
    prometheus: Prometheus | None = None
    try:
        gateway = ServerThread(
            GatewayConfig(
                registry,
                port=0,
                metrics_port=0,
                monitor_url=f"ws://127.0.0.1:{monitor_port}/v1/samples/stream",
                sample_rate=1.0,
            )
        )
        prometheus = Prometheus(
            workdir / "prometheus",
            scrape_config(f"127.0.0.1:{gateway.server.metrics_port}", f"127.0.0.1:{monitor_port}"),
        )
        deadline = time.monotonic() + 30  # Prometheus applies new targets on a 5 s tick
        while (health := _target_health(prometheus)) != {
            "infergate-gateway": "up",
            "infergate-monitor": "up",
        }:
            assert time.monotonic() < deadline, health
            time.sleep(0.2)
        shipper = gateway.server.shipper
        assert shipper is not None
        deadline = time.monotonic() + 20
        while shipper.connects < 1:  # samples offered before the socket is up would be dropped
            assert time.monotonic() < deadline, "the gateway never connected to the monitor"
            time.sleep(0.05)

        batches = np.split(_shifted_rows(registry, CLASSIFIER_REQUESTS * ROWS), CLASSIFIER_REQUESTS)
        regressor = list(np.random.default_rng(1).normal(size=(REGRESSOR_REQUESTS, 4, 8)).astype(np.float32))
        # One request each first, until Prometheus has scraped the series they create: a counter's first
        # sample is its baseline, so increases (rate, increase) are only seen from there on.
        answers = _infer(gateway.target, "classifier", batches[:1])
        _infer(gateway.target, "regressor", regressor[:1])
        for expr, value in (
            ('sum(infergate_requests_total{model="classifier"})', 1),
            ('sum(infergate_requests_total{model="regressor"})', 1),
            ('sum(infergate_monitor_rows_total{model="classifier"})', ROWS),
        ):
            assert prometheus.wait_value(expr, value) == value, expr
        with ThreadPoolExecutor(THREADS) as pool:
            parts = [batches[1 + i :: THREADS] for i in range(THREADS)]
            answers += [
                a for part in pool.map(lambda p: _infer(gateway.target, "classifier", p), parts) for a in part
            ]
        _infer(gateway.target, "regressor", regressor[1:])
        (version,) = {v for v, _ in answers}
        yield Stack(
            gateway,
            prometheus,
            f"http://127.0.0.1:{monitor_port}",
            version,
            [s for _, s in answers],
            monitor_log,
        )
    finally:
        if prometheus is not None:
            prometheus.stop()
        if gateway is not None:
            gateway.stop()
        _stop(monitor)


def test_request_counters_equal_the_requests_sent(stack: Stack) -> None:
    p = stack.prometheus
    classifier = f'model="classifier", version="{stack.version}"'
    assert (
        p.wait_value(f"sum(infergate_requests_total{{{classifier}}})", CLASSIFIER_REQUESTS)
        == CLASSIFIER_REQUESTS
    )
    assert (
        p.wait_value('sum(infergate_requests_total{model="regressor"})', REGRESSOR_REQUESTS)
        == REGRESSOR_REQUESTS
    )
    codes = {r["metric"]["code"] for r in p.query("sum by (code) (infergate_requests_total)")}
    assert codes == {"OK"}
    assert p.value(f"sum(infergate_request_duration_seconds_count{{{classifier}}})") == CLASSIFIER_REQUESTS
    assert p.value(f"sum(infergate_queue_duration_seconds_count{{{classifier}}})") == CLASSIFIER_REQUESTS
    # Every row went through exactly one batch.
    assert p.value(f"sum(infergate_batch_size_sum{{{classifier}}})") == CLASSIFIER_REQUESTS * ROWS
    batches = p.value(f"sum(infergate_batch_size_count{{{classifier}}})")
    assert batches is not None
    assert batches <= CLASSIFIER_REQUESTS
    # compute_duration is documented per batch (DESIGN.md §5) but observed once per request of the batch
    # (gateway/servicer.py); either way it counts at least every batch.
    compute = p.value(f"sum(infergate_compute_duration_seconds_count{{{classifier}}})")
    assert compute is not None
    assert batches <= compute <= CLASSIFIER_REQUESTS
    assert _target_health(p) == {"infergate-gateway": "up", "infergate-monitor": "up"}


def test_histogram_quantiles_are_sane(stack: Stack) -> None:
    p = stack.prometheus
    selector = f'model="classifier", version="{stack.version}"'
    p.wait_value(f"sum(infergate_requests_total{{{selector}}})", CLASSIFIER_REQUESTS)
    slowest = max(stack.latencies_s)
    for metric in ("request", "queue", "compute"):
        series = f"infergate_{metric}_duration_seconds_bucket{{{selector}}}"
        quantiles = []
        for q in (0.5, 0.95, 0.99):
            # Over the whole run (cumulative buckets), and as the dashboard does it (rate over a window).
            value = p.value(f"histogram_quantile({q}, sum by (le) ({series}))")
            windowed = p.value(f"histogram_quantile({q}, sum by (le) (rate({series}[1m])))")
            assert value is not None, metric
            assert windowed is not None, metric
            assert 0 <= value <= 10, (metric, q, value)  # also false for NaN
            assert 0 <= windowed <= 10, (metric, q, windowed)
            quantiles.append(value)
        assert quantiles == sorted(quantiles), (metric, quantiles)
        if metric == "request":
            assert quantiles[0] > 0
            # The gateway's own time never exceeds what the client saw, up to the bucket holding the slowest.
            bounds = LATENCY_BUCKETS
            assert quantiles[2] <= min((b for b in bounds if b >= slowest), default=10.0)
    median_batch = p.value(
        f"histogram_quantile(0.5, sum by (le) (infergate_batch_size_bucket{{{selector}}}))"
    )
    assert median_batch is not None
    # A request's rows are never split, so every batch holds >= ROWS rows; histogram_quantile interpolates
    # inside the power-of-two bucket (ROWS/2, ROWS], so the estimate may sit anywhere above ROWS/2.
    assert ROWS / 2 < median_batch <= 64


def test_sampled_rows_reach_the_monitor_and_drift_alerts(stack: Stack) -> None:
    p = stack.prometheus
    rows = CLASSIFIER_REQUESTS * ROWS
    sent = p.wait_value('sum(infergate_samples_total{model="classifier", outcome="sent"})', rows)
    taken = p.wait_value(
        f'sum(infergate_monitor_rows_total{{model="classifier", version="{stack.version}"}})', rows
    )
    assert (sent, taken) == (rows, rows), stack.monitor_log.read_text()[-3000:]
    assert p.value('sum(infergate_samples_total{outcome="dropped"})') in (None, 0.0)

    drift = f'max(infergate_drift_detected{{model="classifier", version="{stack.version}"}})'
    assert p.wait_value(drift, 1.0, within_s=30) == 1.0, stack.monitor_log.read_text()[-3000:]
    psi = p.query(f'infergate_drift_psi{{model="classifier", version="{stack.version}", feature="input[0]"}}')
    assert psi
    assert float(psi[0]["value"][1]) > 0.2  # a one-sigma shift
    assert p.value('max(infergate_drift_detected{model="regressor"})') in (None, 0.0)

    deadline = time.monotonic() + 20
    while True:
        alerts = p.api("alerts")["alerts"]
        drifting = [a for a in alerts if a["labels"]["alertname"] == "InfergateDriftDetected"]
        if drifting or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert [(a["labels"]["model"], a["labels"]["version"]) for a in drifting] == [
        ("classifier", stack.version)
    ]
    assert drifting[0]["state"] in ("pending", "firing")  # `for: 1m`: pending unless this host is very slow
    names = {a["labels"]["alertname"] for a in alerts}
    assert names.isdisjoint({"InfergateGatewayDown", "InfergateMonitorDown", "InfergateModelNotReady"}), names
    for rule in (r for g in p.api("rules")["groups"] for r in g["rules"]):
        assert rule["health"] in ("ok", "unknown"), (rule["name"], rule.get("lastError"))


def test_every_dashboard_expression_evaluates_on_live_data(stack: Stack) -> None:
    p = stack.prometheus
    p.wait_value(
        f'max(infergate_drift_detected{{model="classifier", version="{stack.version}"}})', 1.0, within_s=30
    )
    # rate() needs two samples in its window: wait until the youngest counters (created by the first
    # sampled rows) have been scraped three times.
    deadline = time.monotonic() + 10
    for youngest in ("infergate_samples_total", "infergate_monitor_rows_total"):
        while (p.value(f"min(count_over_time({youngest}[1m]))") or 0) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
    board = dashboard()
    variables = {"model": "classifier", "version": stack.version}
    for name, selector in variable_queries(board):
        assert p.query(render(selector, **variables)), f"variable {name} would list nothing"
    empty = set()
    for panel in panels(board):
        results = [p.query(render(target["expr"], **variables)) for target in panel.get("targets", [])]
        if results and not any(results):
            empty.add(panel["title"])
    optional = {panel["title"] for row in MAY_BE_EMPTY_ROWS for panel in row_panels(board)[row]}
    assert set(EMPTY_PANELS) <= empty <= set(EMPTY_PANELS) | optional
    loaded = p.query(
        render(
            'max by (instance, model, version, provider) (infergate_model_ready{model=~"$model"})', model=".+"
        )
    )
    assert {(r["metric"]["model"], r["metric"]["version"]) for r in loaded} == {
        ("classifier", "1"),
        ("classifier", "2"),
        ("regressor", "1"),
    }


def _series(text: str) -> set[str]:
    """The infergate sample lines' names and labels (values dropped)."""
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line.startswith("infergate_")}


def test_unknown_models_add_no_label_values(stack: Stack) -> None:
    url = f"http://127.0.0.1:{stack.gateway.server.metrics_port}/metrics"
    x = np.zeros((1, 16), dtype=np.float32)
    names = [f"no-such-model-{uuid.uuid4().hex[:12]}" for _ in range(500)]
    versions = [str(1000 + i) for i in range(500)]  # a known model, unknown versions

    def unknown(model: str, version: str = "") -> None:
        tensor = grpcclient.InferInput("input", [1, 16], "FP32")
        tensor.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException) as caught:
            client.infer(model, [tensor], model_version=version)
        assert caught.value.status() == "StatusCode.NOT_FOUND"

    with grpcclient.InferenceServerClient(stack.gateway.target) as client:
        unknown("warm-up-model")  # the model="" series exists from the first unknown request on
        status, before = http_get(url)
        assert status == 200
        for name in names:
            unknown(name)
        for version in versions:
            unknown("classifier", version)
    status, after = http_get(url)
    assert status == 200
    text = after.decode()
    assert _series(text) == _series(before.decode())
    assert not any(name in text for name in names)
    assert not any(f'version="{version}"' in text for version in versions)
    (count,) = [
        line.rsplit(" ", 1)[1]
        for line in text.splitlines()
        if line.startswith("infergate_requests_total{") and 'model=""' in line and 'code="NOT_FOUND"' in line
    ]
    assert float(count) == 1 + len(names) + len(versions)
