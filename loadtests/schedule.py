"""Open-loop arrival schedules: the *intended* send times of every request, fixed before the run starts.

Contracts:

* Times are ``time.perf_counter_ns()`` values (CLOCK_MONOTONIC on Linux, shared by every process of the
  machine), so the parent can hand one ``start_ns`` to all client processes.
* A schedule covers ``[start_ns, end_ns)`` and is yielded in ascending numpy chunks of at most ``chunk``
  times, so memory stays bounded for long runs. ``measure_ns`` splits warm-up (before) from measured
  (from it on) arrivals: at most ``quota`` measured arrivals are yielded, then the schedule ends.
* The P client processes share one offered load ``rate`` (requests/s):
  - fixed rate: arrival ``k`` of the whole run is at ``start + k / rate``; process ``i`` takes every
    ``k`` with ``k % P == i``, so the union is exactly evenly spaced;
  - Poisson: each process draws exponential gaps at ``rate / P`` from its own seed; the union of
    independent Poisson processes is a Poisson process at ``rate``.
* The sender never reschedules: a request that goes out late keeps its intended time, so any stall (of
  the server or of the client) is charged to latency. That is what avoids coordinated omission.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

__all__ = ["DEFAULT_CHUNK", "arrivals", "split_quota"]

DEFAULT_CHUNK = 4096

Int64Array = npt.NDArray[np.int64]


def split_quota(total: int | None, processes: int) -> list[int | None]:
    """``total`` requests split over ``processes`` (the first ones get one more); None stays unbounded."""
    if total is None:
        return [None] * processes
    base, extra = divmod(total, processes)
    return [base + (1 if i < extra else 0) for i in range(processes)]


def arrivals(
    *,
    rate: float,
    start_ns: int,
    end_ns: int,
    measure_ns: int,
    quota: int | None,
    poisson: bool,
    process: int = 0,
    processes: int = 1,
    seed: int = 0,
    chunk: int = DEFAULT_CHUNK,
) -> Iterator[Int64Array]:
    """Yields this process's intended send times (ns, ascending chunks). See the module contract."""
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    if not 0 <= process < processes:
        raise ValueError(f"process {process} out of range for {processes} processes")
    if end_ns < start_ns or not start_ns <= measure_ns:
        raise ValueError("expected start_ns <= measure_ns and start_ns <= end_ns")
    left = quota
    source = _poisson(rate / processes, start_ns, seed, process, chunk) if poisson else None
    k = process
    while left is None or left > 0:
        if source is not None:
            times = next(source)
        else:
            ks = k + processes * np.arange(chunk, dtype=np.int64)
            k = int(ks[-1]) + processes
            times = start_ns + np.floor(ks * (1e9 / rate)).astype(np.int64)
        times = times[times < end_ns]
        if left is not None:
            measured = np.flatnonzero(times >= measure_ns)
            if measured.size > left:
                times = times[: measured[left]]
                measured = measured[:left]
            left -= int(measured.size)
        if times.size:
            yield times
        if times.size < chunk:
            return


def _poisson(rate: float, start_ns: int, seed: int, process: int, chunk: int) -> Iterator[Int64Array]:
    """Endless chunks of Poisson arrival times at ``rate`` per second from ``start_ns``."""
    rng = np.random.default_rng([seed, process])
    t = float(start_ns)
    while True:
        gaps = rng.exponential(1e9 / rate, size=chunk)
        cumulative = t + np.cumsum(gaps)
        t = float(cumulative[-1])
        yield cumulative.astype(np.int64)
