"""The monitor's one error hierarchy.

Every failure the monitor reports on purpose is a :class:`MonitorError`. The HTTP and WebSocket
handlers map :class:`SampleError` (a client's fault: malformed protobuf, unknown model or version, a
tensor that does not match the signature) to HTTP 400 or WebSocket close 1003 with the message as the
reason; anything else is logged and never crashes the service. Registry errors that reach the monitor
(a missing version, a bad manifest) are wrapped into these classes at the boundary.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "MonitorError",
    "NoReferenceError",
    "ProfileError",
    "SampleError",
    "StatsError",
]


class MonitorError(Exception):
    """Base class of every error raised on purpose by the ``monitor`` package."""


class ConfigError(MonitorError):
    """A monitor setting (command line or :class:`monitor.config.MonitorConfig` field) is invalid."""


class StatsError(MonitorError, ValueError):
    """A statistics wrapper got arrays of the wrong shape, dtype or range."""


class ProfileError(MonitorError):
    """A reference profile cannot be built from a version's ``reference.npz`` (or its cache is bad)."""


class NoReferenceError(ProfileError):
    """The version has no ``reference.npz`` (or no numeric tensor in it): it is counted, not monitored."""


class SampleError(MonitorError):
    """Samples refused as the client's fault. ``reason`` is a short label for metrics (``malformed``,
    ``unknown_model``, ``signature``...); the message says what was wrong, naming the tensor."""

    def __init__(self, reason: str, message: str, rows: int = 0) -> None:
        super().__init__(message)
        self.reason = reason
        self.rows = rows
