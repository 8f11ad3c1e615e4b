"""``--log-format text``: the message, then the record's structured fields as ``key=value`` pairs in their
given order, quoted only when needed; the traceback after them; never anything but the given fields."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator

import pytest

from gateway.logs import AccessLog, TextFormatter
from tests.logcapture import captured_access_log


def record(msg: str, fields: dict[str, object] | None = None, *, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            info = sys.exc_info()
    made = logging.LogRecord("infergate.access", logging.INFO, __file__, 1, msg, None, info)
    if fields is not None:
        made.fields = fields
    return made


def test_fields_follow_the_message_in_order() -> None:
    fields = {
        "request_id": "r-1",
        "model": "m",
        "version": "2",
        "status": "OK",
        "queue_ms": 0.25,
        "batch_size": 3,
        "peer": "ipv4:127.0.0.1:5000",
    }
    line = TextFormatter().format(record("request", fields))
    prefix, _, rest = line.partition(" INFO infergate.access: ")
    assert prefix  # the time comes first
    assert rest == (
        "request request_id=r-1 model=m version=2 status=OK queue_ms=0.25 batch_size=3 "
        "peer=ipv4:127.0.0.1:5000"
    )


def test_values_that_need_it_are_quoted() -> None:
    fields = {"empty": "", "spaced": "a b", "eq": "k=v", "quote": 'say "hi"', "none": None, "flag": True}
    line = TextFormatter().format(record("request", fields))
    assert line.endswith('request empty="" spaced="a b" eq="k=v" quote="say \\"hi\\"" none=null flag=true')


def test_without_fields_and_with_a_traceback() -> None:
    assert TextFormatter().format(record("plain words")).endswith(": plain words")
    lines = TextFormatter().format(record("failed", {"model": "m"}, exc=True)).splitlines()
    assert lines[0].endswith(": failed model=m")
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == "ValueError: boom"


@pytest.fixture
def access_text() -> Iterator[io.StringIO]:
    with captured_access_log(TextFormatter()) as stream:
        yield stream


def test_access_log_lines_carry_their_fields(access_text: io.StringIO) -> None:
    AccessLog(sample_rate=1.0).record({"request_id": "abc", "model": "m", "status": "NOT_FOUND"}, error=True)
    (line,) = access_text.getvalue().splitlines()
    assert " WARNING infergate.access: request request_id=abc model=m status=NOT_FOUND" in line
