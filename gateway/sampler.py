"""Sampler: picks which answered requests the monitor sees, and buffers them without slowing anyone.

Contracts:
- :meth:`Sampler.decide` is deterministic for a non-empty request id (a hash of the id against the rate),
  so a replay samples the same requests; without an id it is random.
- :meth:`Sampler.offer` is O(1) in the number of buffered samples and never blocks: it keeps *references*
  to the request's input views and the batch's output rows (at most ``max_rows_per_request`` rows each)
  and appends them to a buffer bounded in rows and bytes. When the buffer is full, or the shipper reports
  the monitor unreachable, the sample is dropped and its rows are counted in
  ``infergate_samples_total{outcome="dropped"}``. Serialization happens later, in the shipper.
- Counts are in rows: ``outcome="sent"`` rows reached the monitor's socket, ``"dropped"`` never will.
"""

from __future__ import annotations

import collections
import random
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy.typing as npt

from gateway.metrics import GatewayMetrics
from registry.sampling import would_sample

#: Bytes assumed per BYTES element when sizing the buffer (object arrays do not know their payload size).
BYTES_ELEMENT_ESTIMATE = 64


class Sample(NamedTuple):
    """One sampled request: who answered it, when, and its rows (numpy views, not yet serialized).

    A named tuple, not a dataclass: one is built per sampled request, on the request path."""

    model: str
    version: str
    request_id: str
    timestamp_ns: int
    monotonic_ns: int
    inputs: tuple[tuple[str, str, npt.NDArray[Any]], ...]
    outputs: tuple[tuple[str, str, npt.NDArray[Any]], ...]
    rows: int
    nbytes: int
    rate: float = 0.0


def _cut(
    tensors: Mapping[str, tuple[str, npt.NDArray[Any]]], max_rows: int
) -> tuple[tuple[str, str, npt.NDArray[Any]], ...]:
    """``(name, datatype, rows)`` per tensor, with at most ``max_rows`` rows (a view; no slice when fewer)."""
    return tuple(
        (name, datatype, array if not array.ndim or len(array) <= max_rows else array[:max_rows])
        for name, (datatype, array) in tensors.items()
    )


class Sampler:
    """Bounded buffer of samples between the request path and the shipper."""

    def __init__(
        self,
        *,
        rate_override: float | None = None,
        max_buffer_rows: int = 65_536,
        max_buffer_bytes: int = 64 * 1024 * 1024,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        if rate_override is not None and not 0.0 <= rate_override <= 1.0:
            raise ValueError(f"sample rate must be in [0, 1], got {rate_override}")
        self.rate_override = rate_override
        self.max_buffer_rows = max_buffer_rows
        self.max_buffer_bytes = max_buffer_bytes
        self.connected = True
        self._metrics = metrics
        self._buffer: collections.deque[Sample] = collections.deque()
        self._rows = 0
        self._bytes = 0
        self._random = random.Random()
        self._children: dict[tuple[str, str], Any] = {}

    def rate(self, configured: float) -> float:
        """The effective rate: the command-line override, else the model's ``[sampling].rate``."""
        return configured if self.rate_override is None else self.rate_override

    def decide(self, request_id: str, rate: float) -> bool:
        """Whether to sample this request (deterministic per non-empty id)."""
        if rate <= 0.0:
            return False
        if rate >= 1.0:
            return True
        if request_id:
            return would_sample(request_id, rate)
        return self._random.random() < rate

    def offer(
        self,
        model: str,
        version: str,
        request_id: str,
        inputs: Mapping[str, tuple[str, npt.NDArray[Any]]],
        outputs: Mapping[str, tuple[str, npt.NDArray[Any]]],
        max_rows: int,
        rate: float = 0.0,
    ) -> bool:
        """Buffers one answered request's first ``max_rows`` rows; False (and counted) when dropped.
        ``rate`` is the rate it was sampled at (shipped with it, so the monitor can tell unsampled ids).

        Runs on the request path, so it does the least it can: arrays are sliced only when they hold more
        than ``max_rows`` rows, and sizes come from ``nbytes`` (no copies)."""
        cut_inputs = _cut(inputs, max_rows)
        cut_outputs = _cut(outputs, max_rows)
        first = cut_inputs[0][2] if cut_inputs else None
        rows = len(first) if first is not None and first.ndim else 1
        size = 0
        for _, _, array in cut_inputs + cut_outputs:
            size += array.size * BYTES_ELEMENT_ESTIMATE if array.dtype.kind == "O" else array.nbytes
        if (
            not self.connected
            or self._rows + rows > self.max_buffer_rows
            or self._bytes + size > self.max_buffer_bytes
        ):
            self.count(model, "dropped", rows)
            return False
        self._buffer.append(
            Sample(
                model,
                version,
                request_id,
                time.time_ns(),
                time.monotonic_ns(),
                cut_inputs,
                cut_outputs,
                rows,
                size,
                rate,
            )
        )
        self._rows += rows
        self._bytes += size
        return True

    def take(self, max_samples: int, max_bytes: int) -> list[Sample]:
        """Removes and returns up to ``max_samples`` samples (at least one if any) within ``max_bytes``."""
        taken: list[Sample] = []
        size = 0
        while self._buffer and len(taken) < max_samples:
            sample = self._buffer[0]
            if taken and size + sample.nbytes > max_bytes:
                break
            self._buffer.popleft()
            taken.append(sample)
            size += sample.nbytes
            self._rows -= sample.rows
            self._bytes -= sample.nbytes
        return taken

    def drop_all(self) -> None:
        """Drops (and counts) everything buffered; used when the monitor is unreachable."""
        for sample in self.take(len(self._buffer), self.max_buffer_bytes + 1):
            self.count(sample.model, "dropped", sample.rows)

    @property
    def buffered_rows(self) -> int:
        return self._rows

    @property
    def buffered_samples(self) -> int:
        return len(self._buffer)

    def count(self, model: str, outcome: str, rows: int) -> None:
        """Adds ``rows`` to ``infergate_samples_total{model,outcome}`` (children resolved once each)."""
        if self._metrics is None:
            return
        child = self._children.get((model, outcome))
        if child is None:
            child = self._children[(model, outcome)] = self._metrics.samples.labels(model, outcome)
        child.inc(rows)
