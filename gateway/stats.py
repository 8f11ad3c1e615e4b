"""Per-version inference statistics, as Triton's ModelStatistics reports them.

Counters are plain integers updated on the event loop thread only, so they need no lock. Durations are
nanoseconds from monotonic clocks; ``last_inference_ms`` is a wall-clock timestamp, as the protocol
defines it (milliseconds since the epoch), and is never used for deadline arithmetic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Duration:
    """A count and a total in nanoseconds."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


@dataclass
class VersionStats:
    """Cumulative figures for one loaded model version (Triton semantics: ``inference_count`` counts
    rows, ``execution_count`` counts batches, request durations include the batch each request ran in)."""

    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    batches: dict[int, Duration] = field(default_factory=dict)

    def record_request(
        self, total_ns: int, queue_ns: int, input_ns: int, infer_ns: int, output_ns: int
    ) -> None:
        """One request answered; ``infer_ns`` is the compute time of the batch it ran in."""
        self.success.add(total_ns)
        self.queue.add(queue_ns)
        self.compute_input.add(input_ns)
        self.compute_infer.add(infer_ns)
        self.compute_output.add(output_ns)

    def record_batch(self, rows: int, infer_ns: int) -> None:
        """One batch of ``rows`` rows executed."""
        self.inference_count += rows
        self.execution_count += 1
        self.last_inference_ms = time.time_ns() // 1_000_000
        self.batches.setdefault(rows, Duration()).add(infer_ns)

    def record_failure(self, total_ns: int) -> None:
        """One request that reached the model's queue and failed (shed, cancelled or errored)."""
        self.fail.add(total_ns)
