"""Gateway Prometheus metrics (DESIGN.md §5), built on an injected CollectorRegistry, never the global one.

Labels stay bounded: a request for an unknown model is counted under model="" so that client-chosen
names never become label values.
"""

from __future__ import annotations

import platform
import threading
from importlib import metadata
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

from gateway.loopmetrics import LoopCounter, LoopHistogram
from gateway.rollout_metrics import RolloutMetrics

#: 100 µs .. 10 s, roughly x2.5 per step.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: Powers of two, in rows.
BATCH_BUCKETS = tuple(float(2**k) for k in range(13))


class GatewayMetrics:
    """The gateway's metric families, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry, *, process: bool = True) -> None:
        self.registry = registry
        if process:  # process_* (CPU, memory, fds) and python_info, on this registry
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
        self.build_info = Gauge(
            "infergate_build_info",
            "Always 1; labels name the running versions.",
            ["version", "onnxruntime", "python"],
            registry=registry,
        )
        self.build_info.labels(_version("infergate"), _version("onnxruntime"), platform.python_version()).set(
            1
        )
        # The families every answered request updates are lock-free (gateway.loopmetrics: event loop only).
        self.requests = LoopCounter(
            "infergate_requests",
            "Inference requests by outcome.",
            ["model", "version", "code"],
            registry=registry,
        )
        self.request_duration = LoopHistogram(
            "infergate_request_duration_seconds",
            "End-to-end request latency inside the gateway.",
            ["model", "version"],
            LATENCY_BUCKETS,
            registry=registry,
        )
        self.compute_duration = LoopHistogram(
            "infergate_compute_duration_seconds",
            "Session run time per batch.",
            ["model", "version", "provider"],
            LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = LoopHistogram(
            "infergate_batch_size",
            "Rows per executed batch.",
            ["model", "version"],
            BATCH_BUCKETS,
            registry=registry,
        )
        self.queue_duration = LoopHistogram(
            "infergate_queue_duration_seconds",
            "Time from admission to the start of the request's batch.",
            ["model", "version"],
            LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "infergate_queue_depth",
            "Rows waiting in the batch queue.",
            ["model", "version"],
            registry=registry,
        )
        self.shed = Counter(
            "infergate_shed",
            "Requests refused or dropped by the batcher, by reason "
            "(queue_full, deadline_admission, deadline_expired, cancelled).",
            ["model", "version", "reason"],
            registry=registry,
        )
        self.predicted_latency = Gauge(
            "infergate_predicted_batch_latency_seconds",
            "The latency profile: predicted batch latency by batch size (best instance).",
            ["model", "version", "batch_size"],
            registry=registry,
        )
        self.model_ready = Gauge(
            "infergate_model_ready",
            "1 while a version is loaded and serving.",
            ["model", "version", "provider"],
            registry=registry,
        )
        self.samples = Counter(
            "infergate_samples",
            "Rows of sampled requests by outcome: sent to the monitor, or dropped (full buffer, no monitor).",
            ["model", "outcome"],
            registry=registry,
        )
        self.model_loads = Counter(
            "infergate_model_loads",
            "Version load attempts by result.",
            ["model", "result"],
            registry=registry,
        )
        self.rollout = RolloutMetrics(registry)  # infergate_rollout_* (gateway/rollout_metrics.py)


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


class MetricsHTTPServer:
    """Serves ``/metrics`` for one registry on a background thread (prometheus-client's server)."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self._server: WSGIServer
        self._thread: threading.Thread
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
