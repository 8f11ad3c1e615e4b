"""The access log: every error line except overload refusals, which pass a token bucket driven by an
injected clock (no waiting), with the number skipped reported in the next refusal line."""

from __future__ import annotations

import io
from collections.abc import Iterator

import orjson
import pytest

from gateway.logs import AccessLog, JsonFormatter
from tests.logcapture import captured_access_log


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    with captured_access_log(JsonFormatter()) as stream:
        yield stream


def logged(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def refusal(n: int, status: str = "RESOURCE_EXHAUSTED") -> dict[str, object]:
    return {"request_id": f"r{n}", "status": status}


def test_refusals_pass_a_token_bucket_and_the_next_line_counts_the_skipped(lines: io.StringIO) -> None:
    clock = FakeClock()
    log = AccessLog(0.0, shed_rate=2.0, clock=clock)
    for n in range(5):
        log.record(refusal(n), error=True)
    assert [entry["request_id"] for entry in logged(lines)] == ["r0", "r1"]  # the burst: 2 lines
    assert log.suppressed == 3
    clock.now += 0.25  # half a token: still nothing
    log.record(refusal(5, "DEADLINE_EXCEEDED"), error=True)
    assert len(logged(lines)) == 2
    clock.now += 0.25  # one token
    log.record(refusal(6, "DEADLINE_EXCEEDED"), error=True)
    last = logged(lines)[-1]
    assert last["request_id"] == "r6"
    assert last["suppressed"] == 4
    assert last["level"] == "WARNING"
    assert log.suppressed == 0
    clock.now += 60  # a long quiet spell refills only the burst
    for n in range(7, 12):
        log.record(refusal(n), error=True)
    assert [entry["request_id"] for entry in logged(lines)][-3:] == ["r6", "r7", "r8"]
    assert "suppressed" not in logged(lines)[-1]


def test_other_errors_are_always_logged_and_do_not_spend_tokens(lines: io.StringIO) -> None:
    clock = FakeClock()
    log = AccessLog(0.0, shed_rate=1.0, clock=clock)
    log.record(refusal(0), error=True)
    for n, status in enumerate(("INVALID_ARGUMENT", "NOT_FOUND", "INTERNAL", "UNAVAILABLE"), start=1):
        log.record(refusal(n, status), error=True)
    log.record(refusal(9), error=True)  # the bucket is empty: skipped
    assert [entry["status"] for entry in logged(lines)] == [
        "RESOURCE_EXHAUSTED",
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "INTERNAL",
        "UNAVAILABLE",
    ]
    assert log.suppressed == 1


def test_zero_logs_no_refusal_and_successes_follow_the_sample_rate(lines: io.StringIO) -> None:
    quiet = AccessLog(1.0, shed_rate=0.0, clock=FakeClock())
    for n in range(3):
        quiet.record(refusal(n), error=True)
    quiet.record({"request_id": "ok", "status": "OK"}, error=False)
    assert [entry["request_id"] for entry in logged(lines)] == ["ok"]
    assert quiet.suppressed == 3
    assert not AccessLog(0.0).decide(error=False)


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="shed rate"):
        AccessLog(0.01, shed_rate=-1.0)
    with pytest.raises(ValueError, match="sample rate"):
        AccessLog(1.5)
