"""A loaded model version: what a request reaches once the table resolves (model, version).

It bundles the version's signature, config, manifest (lineage), runner, batcher and statistics, and counts
the requests in flight on it so a retired version is closed only after they finish.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from gateway.batcher import Batcher
from gateway.metrics import GatewayMetrics
from gateway.runner import Runner
from gateway.stats import VersionStats
from gateway.validate import is_batchable
from registry.config import ModelConfig
from registry.manifest import Manifest
from registry.signature import Signature


@dataclass(eq=False)
class LoadedVersion:
    """A version ready to serve: its signature, config, runner, batcher and statistics."""

    model: str
    version: int
    signature: Signature
    config: ModelConfig
    manifest: Manifest
    runner: Runner
    batcher: Batcher
    stats: VersionStats
    inflight: int = 0
    _idle: asyncio.Event = field(default_factory=asyncio.Event)
    #: Rows one request may carry; 0 when the model has no dynamic leading dim to batch on.
    max_batch_size: int = field(init=False)
    #: V2 datatype of each output, by name (derived once, used on every response).
    output_datatypes: dict[str, str] = field(init=False)
    #: What a data plane resolved once for this version's hot path (gateway.dataplane keeps it here, not
    #: in a table of its own: one attribute read per request instead of a weak-keyed look-up).
    hot: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._idle.set()
        self.max_batch_size = batching_limit(self.signature, self.config)
        self.output_datatypes = {spec.name: spec.datatype for spec in self.signature.outputs}

    async def drain(self) -> None:
        """Waits until no request is in flight on this version (queued or computing)."""
        await self._idle.wait()


class VersionObserver:
    """Feeds a version's batcher events into its statistics and Prometheus metrics."""

    def __init__(
        self, stats: VersionStats, metrics: GatewayMetrics | None, model: str, version: int, provider: str
    ) -> None:
        self._stats = stats
        self._metrics = metrics
        self._labels = (model, str(version))
        self._provider = provider
        # Children resolved once: a labels() lookup takes a lock and a dict probe on every batch otherwise.
        self._batch_size = metrics.batch_size.labels(*self._labels) if metrics is not None else None
        self._compute = (
            metrics.compute_duration.labels(*self._labels, provider) if metrics is not None else None
        )
        self._queue_depth = metrics.queue_depth.labels(*self._labels) if metrics is not None else None

    def on_batch(self, rows: int, compute_ns: int) -> None:
        self._stats.record_batch(rows, compute_ns)
        if self._batch_size is not None and self._compute is not None:
            self._batch_size.observe(rows)
            self._compute.observe(compute_ns / 1e9)

    def on_shed(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.shed.labels(*self._labels, reason).inc()

    def on_queue_depth(self, rows: int) -> None:
        if self._queue_depth is not None:
            self._queue_depth.set(rows)


def batching_limit(signature: Signature, config: ModelConfig) -> int:
    """``max_batch_size`` for batchable signatures, else 0."""
    return config.batching.max_batch_size if is_batchable(signature) else 0
