"""Structured logging: JSON lines through orjson for the process log and the per-request access log.

Contracts:
- :class:`JsonFormatter` renders every record as one JSON object per line: ``ts`` (UTC ISO 8601), ``level``,
  ``logger``, ``msg``, plus the record's ``fields`` mapping when given (``extra={"fields": {...}}``), plus
  ``exc`` with the traceback for exceptions.
- :class:`TextFormatter` (``--log-format text``) renders ``<time> <level> <logger>: <msg>`` followed by the
  same ``fields`` as ``key=value`` pairs in the mapping's order (the order of the JSON keys): strings bare
  unless empty or holding a space, quote, backslash, ``=`` or control character (then JSON-quoted), other
  values as JSON; then the traceback. Both formatters print only the message and the given fields.
- :class:`AccessLog` writes one line per request on the ``infergate.access`` logger: always for errors, and
  for a deterministic ``sample_rate`` fraction of successes. Lines carry request_id, model, version,
  status, queue_ms, compute_ms, batch_size, duration_ms and peer; never tensor contents.
"""

from __future__ import annotations

import contextlib
import datetime
import faulthandler
import logging
import random
import signal
import sys
from typing import Any

import orjson

ACCESS_LOGGER = "infergate.access"


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
    """Per-request log lines: every error, and ``sample_rate`` of the successes."""

    def __init__(self, sample_rate: float = 0.01) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"access log sample rate must be in [0, 1], got {sample_rate}")
        self.sample_rate = sample_rate
        self._logger = logging.getLogger(ACCESS_LOGGER)
        self._random = random.Random()

    def record(self, fields: dict[str, Any], *, error: bool) -> None:
        """Logs one request (``fields`` as documented above) if it is an error or sampled."""
        if self.decide(error=error):
            self.write(fields, error=error)

    def decide(self, *, error: bool) -> bool:
        """Whether a request with this outcome is logged (every error; ``sample_rate`` of successes).
        Callers decide first so that a record nobody logs is never built."""
        return error or (self.sample_rate > 0 and self._random.random() < self.sample_rate)

    def write(self, fields: dict[str, Any], *, error: bool) -> None:
        """Logs one request record unconditionally (after :meth:`decide` said yes)."""
        self._logger.log(logging.WARNING if error else logging.INFO, "request", extra={"fields": fields})
