"""Open-loop schedules: offered rate, process split, bounds, and that the sender keeps intended times."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from scipy import stats

from loadtests.recorder import Recorder
from loadtests.schedule import arrivals, split_quota
from loadtests.spec import StepSpec, WorkerTask
from loadtests.status import OK
from loadtests.unary import run_unary

S = 1_000_000_000


def _all(**kw: Any) -> np.ndarray:
    chunks = list(arrivals(**kw))
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)


def test_poisson_rate_and_exponential_gaps() -> None:
    rate, seconds = 2000.0, 20
    times = _all(
        rate=rate, start_ns=S, end_ns=S + seconds * S, measure_ns=S, quota=None, poisson=True, seed=3
    )
    expected = rate * seconds
    assert abs(times.size - expected) < 5 * np.sqrt(expected)
    assert np.all(np.diff(times) >= 0)
    assert times[0] >= S
    assert times[-1] < S + seconds * S
    gaps = np.diff(times) / 1e9
    assert stats.kstest(gaps, "expon", args=(0, 1 / rate)).pvalue > 1e-4


def test_poisson_processes_add_up_to_the_offered_rate() -> None:
    rate, seconds, processes = 900.0, 10, 3
    per = [
        _all(rate=rate, start_ns=0, end_ns=seconds * S, measure_ns=0, quota=None, poisson=True,
             process=p, processes=processes, seed=11)
        for p in range(processes)
    ]  # fmt: skip
    assert not np.array_equal(per[0][:10], per[1][:10])
    total = sum(t.size for t in per)
    assert abs(total - rate * seconds) < 5 * np.sqrt(rate * seconds)
    for t in per:
        assert abs(t.size - rate * seconds / processes) < 5 * np.sqrt(rate * seconds / processes)


def test_fixed_rate_union_is_evenly_spaced_and_chunking_does_not_matter() -> None:
    kw: dict[str, Any] = dict(
        rate=300.0, start_ns=5 * S, end_ns=7 * S, measure_ns=5 * S, quota=None, poisson=False
    )
    union = np.sort(np.concatenate([_all(**kw, process=p, processes=4, chunk=7) for p in range(4)]))
    assert union.size == 600
    assert np.all(np.abs(np.diff(union) - S / 300) <= 1)
    assert np.array_equal(_all(**kw, chunk=7), _all(**kw, chunk=4096))


@pytest.mark.parametrize("poisson", [False, True])
def test_quota_counts_only_measured_arrivals(poisson: bool) -> None:
    times = _all(
        rate=1000.0, start_ns=0, end_ns=100 * S, measure_ns=S // 2, quota=123, poisson=poisson, chunk=50
    )
    assert np.count_nonzero(times >= S // 2) == 123
    assert np.count_nonzero(times < S // 2) == pytest.approx(500, abs=5 * np.sqrt(500))


def test_split_quota() -> None:
    assert split_quota(10, 3) == [4, 3, 3]
    assert split_quota(None, 2) == [None, None]


class _Future:
    def __init__(self) -> None:
        self._callbacks: list[Callable[[Any], None]] = []

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        fn(self)

    def code(self) -> Any:
        import grpc

        return grpc.StatusCode.OK


class _StallingChannel:
    """A fake channel whose 5th call blocks the sender for 0.3 s, as a stalled connection would."""

    def __init__(self) -> None:
        self.calls = 0
        self.closed = threading.Event()

    def unary_unary(self, method: str, **serializers: Any) -> Any:
        return self

    def future(self, payload: bytes, timeout: float) -> _Future:
        self.calls += 1
        if self.calls == 5:
            time.sleep(0.3)
        return _Future()

    def close(self) -> None:
        self.closed.set()


def test_open_loop_sender_keeps_intended_times_when_sending_blocks() -> None:
    rate = 100.0
    spec = StepSpec(target="127.0.0.1:1", mode="open", payloads=(b"x",), rows=1, rate=rate, warmup_s=0.0,
                    duration_s=0.5, deadline_s=1.0, drain_s=0.0)  # fmt: skip
    start = time.perf_counter_ns() + 20_000_000
    task = WorkerTask(spec, 0, 1, start)
    rec = Recorder(measure_ns=task.measure_ns, window_ns=10_000_000, budget_ns=None)
    channel = _StallingChannel()
    run_unary(channel, task, rec)  # type: ignore[arg-type]
    raw = np.frombuffer(rec._raw, dtype=np.int64).reshape(-1, 4)
    schedule = _all(rate=rate, start_ns=start, end_ns=task.end_ns, measure_ns=task.measure_ns, quota=None,
                    poisson=False)  # fmt: skip
    # Every scheduled request was sent once, with its scheduled (intended) time recorded, stall or not.
    assert np.array_equal(np.sort(raw[:, 0]), schedule)
    assert np.all(raw[:, 3] == OK)
    assert np.all(raw[:, 1] >= raw[:, 0])
    assert np.all(raw[:, 2] >= raw[:, 1])
    # The requests due while the sender was blocked went out late: their latency includes the wait.
    blocked = raw[5:10]
    assert np.all(blocked[:, 2] - blocked[:, 0] >= blocked[:, 1] - blocked[:, 0])
    assert np.all(raw[5:, 1] >= raw[4, 1])
