"""What one load step is: the frozen, picklable description every client process receives.

Contracts:

* :class:`StepSpec` holds only plain data (the serialized request bytes included), so it crosses the
  process boundary with pickle, and each request is serialized exactly once, by the parent.
* Totals are for the whole step: ``concurrency`` and ``rate`` are split over the processes by
  :meth:`StepSpec.share` and :func:`loadtests.schedule.arrivals`; ``requests`` bounds the *measured*
  requests (warm-up excluded), split with :func:`loadtests.schedule.split_quota`.
* A step ends at ``warmup_s + duration_s`` after its start or when ``requests`` measured requests were
  sent, whichever comes first; requests in flight then get ``drain_s`` more to finish.
* Any ``HOST:PORT`` is a valid target: the load generator loads remote servers too (the benchmark suite,
  not this tool, keeps its load on loopback: :func:`bench.kit.require_loopback`).
"""

from __future__ import annotations

from dataclasses import dataclass

from loadtests.schedule import split_quota
from loadtests.secure import ClientSecurity

__all__ = ["StepSpec", "WorkerTask", "split_target"]


def split_target(target: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) -> (host, port); ValueError if malformed."""
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"target must be HOST:PORT, got {target!r}")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class StepSpec:
    """One step of a run (a sweep has one per level). Times in seconds unless named ``_ns``."""

    target: str
    mode: str
    payloads: tuple[bytes, ...]
    rows: int
    concurrency: int = 1
    rate: float = 0.0
    poisson: bool = False
    stream: bool = False
    warmup_s: float = 1.0
    duration_s: float = 10.0
    requests: int | None = None
    deadline_s: float = 10.0
    budget_ns: int | None = None
    max_inflight: int = 2048
    window_ns: int = 100_000_000
    drain_s: float = 5.0
    seed: int = 0
    security: ClientSecurity | None = None
    native_client: str | None = None  # path of loadtests/native/load.cc built (loadtests.native)

    def __post_init__(self) -> None:
        split_target(self.target)
        if self.mode not in ("closed", "open"):
            raise ValueError(f"mode must be 'closed' or 'open', got {self.mode!r}")
        if self.mode == "closed" and self.concurrency < 1:
            raise ValueError("closed loop needs concurrency >= 1")
        if self.mode == "open" and not self.rate > 0:
            raise ValueError("open loop needs rate > 0")
        if not self.payloads or self.rows < 1:
            raise ValueError("a step needs at least one payload and rows >= 1")
        if self.warmup_s < 0 or self.duration_s <= 0 or self.deadline_s <= 0 or self.drain_s < 0:
            raise ValueError("warmup_s, drain_s must be >= 0; duration_s, deadline_s > 0")
        if self.requests is not None and self.requests < 1:
            raise ValueError("requests must be >= 1")
        if self.max_inflight < 1 or self.window_ns < 1_000_000:
            raise ValueError("max_inflight must be >= 1 and window_ns >= 1 ms")

    @property
    def offered(self) -> float:
        """The offered load: concurrency (closed loop) or requests/s (open loop)."""
        return float(self.concurrency) if self.mode == "closed" else self.rate

    def share(self, process: int, processes: int) -> tuple[int, int | None]:
        """(concurrency, measured-request quota) of process ``process`` of ``processes``."""
        concurrency = split_quota(self.concurrency, processes)[process]
        quota = split_quota(self.requests, processes)[process]
        return int(concurrency or 0), quota


@dataclass(frozen=True)
class WorkerTask:
    """A step as one client process runs it: which share, and the common start time (perf_counter_ns)."""

    spec: StepSpec
    process: int
    processes: int
    start_ns: int

    @property
    def measure_ns(self) -> int:
        return self.start_ns + int(self.spec.warmup_s * 1e9)

    @property
    def end_ns(self) -> int:
        return self.measure_ns + int(self.spec.duration_s * 1e9)
