"""Outcome codes recorded per request: the gRPC status codes, plus the client's own outcomes.

Contract: a code is a small non-negative int (it indexes count arrays). 0..16 are ``grpc.StatusCode``
values; the client adds :data:`CLIENT_DROPPED` (open loop: the in-flight cap was reached, so the request
was not sent; it is an error, never silently skipped), :data:`CLIENT_DRAIN_TIMEOUT` (still unanswered
when the drain period after the run ended) and :data:`STREAM_ERROR` (a ModelStreamInfer response carrying
``error_message``, which has no status code). :func:`code_name` gives the names used in reports.

Where each comes from:

* a gRPC code: the server's answer (for example DEADLINE_EXCEEDED or RESOURCE_EXHAUSTED from the
  gateway's admission control), or the transport's (UNAVAILABLE when the connection drops; CANCELLED
  when a server's gRPC core sheds calls its application has not picked up yet);
* CLIENT_DROPPED, CLIENT_DRAIN_TIMEOUT: the client's own bounds, reported so that nothing is omitted;
* STREAM_ERROR: an in-stream failure, whose message the harness does not interpret.
"""

from __future__ import annotations

import grpc

__all__ = [
    "CLIENT_DRAIN_TIMEOUT",
    "CLIENT_DROPPED",
    "NUM_CODES",
    "OK",
    "STREAM_ERROR",
    "code_name",
    "code_of",
]

OK = 0
CLIENT_DROPPED = 17
CLIENT_DRAIN_TIMEOUT = 18
STREAM_ERROR = 19
NUM_CODES = 20

_NAMES: dict[int, str] = {int(c.value[0]): c.name for c in grpc.StatusCode}
_NAMES.update(
    {
        CLIENT_DROPPED: "CLIENT_DROPPED",
        CLIENT_DRAIN_TIMEOUT: "CLIENT_DRAIN_TIMEOUT",
        STREAM_ERROR: "STREAM_ERROR",
    }
)


def code_of(status: grpc.StatusCode) -> int:
    """The int code of a gRPC status."""
    value: int = status.value[0]
    return value


def code_name(code: int) -> str:
    """The report name of a code, e.g. ``DEADLINE_EXCEEDED`` or ``CLIENT_DROPPED``."""
    return _NAMES.get(code, f"CODE_{code}")
