"""Structured logging: JSON lines through orjson for the process log and the per-request access log.

Contracts:
- :class:`JsonFormatter` renders every record as one JSON object per line: ``ts`` (UTC ISO 8601), ``level``,
  ``logger``, ``msg``, plus the record's ``fields`` mapping when given (``extra={"fields": {...}}``), plus
  ``exc`` with the traceback for exceptions.
- :class:`TextFormatter` (``--log-format text``) renders ``<time> <level> <logger>: <msg>`` followed by the
  same ``fields`` as ``key=value`` pairs in the mapping's order (the order of the JSON keys): strings bare
  unless empty or holding a space, quote, backslash, ``=`` or control character (then JSON-quoted), other
  values as JSON; then the traceback. Both formatters print only the message and the given fields.
- :class:`AccessLog` writes one line per request on the ``infergate.access`` logger: for every error except
  overload refusals, for at most ``shed_rate`` overload refusals per second (a token bucket on a monotonic
  clock; the next refusal it logs carries ``suppressed``, the number skipped since the last one), and for a
  ``sample_rate`` fraction of successes. Lines carry request_id, model, version, status, queue_ms,
  compute_ms, batch_size, duration_ms and peer; never tensor contents. Refusals are still counted one by
  one in ``infergate_requests_total`` and ``infergate_shed_total``: the log is for reading, metrics for
  counting.
"""

from __future__ import annotations

import contextlib
import datetime
import faulthandler
import logging
import random
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

ACCESS_LOGGER = "infergate.access"

#: Statuses of overload refusals (shed calls), whose access-log lines are rate limited.
SHED_STATUSES = frozenset({"RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"})


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """One line per record for people: the message, then its structured fields as ``key=value``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        line = super().formatMessage(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            line += " " + " ".join(f"{key}={_text_value(value)}" for key, value in fields.items())
        return line


def _text_value(value: Any) -> str:
    if isinstance(value, str) and value and not any(c in value for c in ' "=\\') and value.isprintable():
        return value
    return orjson.dumps(value, default=str).decode()


def configure_logging(level: str, fmt: str) -> None:
    """Root logging to stderr, as JSON lines (``fmt="json"``) or plain text with ``key=value`` fields."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    enable_stack_dumps()


def enable_stack_dumps() -> None:
    """``kill -USR1 PID`` writes every thread's Python stack to stderr (``faulthandler``: it works while
    the process is stuck, even in C code holding the GIL) and the process goes on. Linux and macOS only."""
    if not hasattr(signal, "SIGUSR1"):
        return
    # A stderr without a file descriptor (captured in tests) cannot take the dumps: then nothing is set.
    with contextlib.suppress(AttributeError, OSError, ValueError):
        faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True, chain=False)


class AccessLog:
    """Per-request log lines: every error, a bounded rate of overload refusals, ``sample_rate`` of the
    successes.

    Overload refusals (the statuses in :data:`SHED_STATUSES`) come by the thousand per second exactly when
    the server has the least CPU to spare; a line each would cost more than the refusal itself. They pass a
    token bucket of ``shed_rate`` lines per second (burst ``shed_rate``, at least 1; 0 logs none).
    ``clock`` is injectable (monotonic seconds) so tests drive the bucket without waiting.
    """

    def __init__(
        self,
        sample_rate: float = 0.01,
        *,
        shed_rate: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"access log sample rate must be in [0, 1], got {sample_rate}")
        if shed_rate < 0:
            raise ValueError(f"access log shed rate must be >= 0 lines per second, got {shed_rate}")
        self.sample_rate = sample_rate
        self.shed_rate = shed_rate
        self._logger = logging.getLogger(ACCESS_LOGGER)
        self._random = random.Random()
        self._clock = clock
        self._burst = max(1.0, shed_rate) if shed_rate > 0 else 0.0
        self._tokens = self._burst
        self._filled_at = clock()
        #: Overload refusals not logged since the last one that was (reported in that line's ``suppressed``).
        self.suppressed = 0

    def record(self, fields: dict[str, Any], *, error: bool) -> None:
        """Logs one request (``fields`` as documented above) if it is an error or sampled."""
        if self.decide(error=error, status=fields.get("status")):
            self.write(fields, error=error)

    def decide(self, *, error: bool, status: str | None = None) -> bool:
        """Whether a request with this outcome is logged: every error but overload refusals, refusals
        while the bucket has a token, ``sample_rate`` of successes. Callers decide first so that a record
        nobody logs is never built; a refusal that is not logged is counted in :attr:`suppressed`."""
        if not error:
            return self.sample_rate > 0 and self._random.random() < self.sample_rate
        if status not in SHED_STATUSES:
            return True
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._filled_at) * self.shed_rate)
        self._filled_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.suppressed += 1
        return False

    def write(self, fields: dict[str, Any], *, error: bool) -> None:
        """Logs one request record unconditionally (after :meth:`decide` said yes)."""
        if error and self.suppressed and fields.get("status") in SHED_STATUSES:
            fields["suppressed"] = self.suppressed
            self.suppressed = 0
        self._logger.log(logging.WARNING if error else logging.INFO, "request", extra={"fields": fields})


def access_record(
    request_id: str,
    model: str,
    peer: str,
    version: str | None,
    result: tuple[int, int, int] | None,
    status: str,
    duration_ns: int,
) -> dict[str, Any]:
    """One request's access-log fields, in the documented order; ``result`` is (queue ns, compute ns,
    batch rows) for a request that ran, ``version`` None when none was resolved."""
    fields: dict[str, Any] = {"request_id": request_id, "model": model, "peer": peer}
    if version is not None:
        fields["version"] = version
    if result is not None:
        fields["queue_ms"] = round(result[0] / 1e6, 3)
        fields["compute_ms"] = round(result[1] / 1e6, 3)
        fields["batch_size"] = result[2]
    fields["status"] = status
    fields["duration_ms"] = round(duration_ns / 1e6, 3)
    return fields
