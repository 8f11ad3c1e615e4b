"""Monitor settings: the typed, immutable view of ``infergate-monitor``'s options.

This module owns the process-wide settings of the drift sidecar (DESIGN.md §6, §8): where the registry
and the history database are, where to listen, where alerts go, and how reference profiles are built.
Per-model thresholds are not here: they come from each model's ``model.toml`` ``[drift]`` section
(:class:`registry.config.DriftConfig`). Every dataclass is frozen and validated in ``__post_init__``;
a bad value raises :class:`monitor.errors.ConfigError` naming the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from monitor.errors import ConfigError

__all__ = ["MonitorConfig", "ProfileSettings", "WebhookSettings"]


def _int(name: str, value: object, minimum: int, maximum: int | None = None) -> None:
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ConfigError(f"{name}: expected an integer {bound}, got {value!r}")


def _positive(name: str, value: object) -> None:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{name}: expected a positive number, got {value!r}")


@dataclass(frozen=True)
class ProfileSettings:
    """How a version's reference profile is built (its cache is rebuilt when these change).

    ``fine_bins`` quantile bins per continuous feature; at most ``max_features`` columns per tensor before
    it is reduced to per-row summaries; above ``max_reference_rows`` reference rows a deterministic
    subsample is used; integer and bool columns with at most ``max_categories`` distinct values are
    categorical.
    """

    fine_bins: int = 1000
    max_features: int = 256
    max_reference_rows: int = 100_000
    max_categories: int = 20

    def __post_init__(self) -> None:
        _int("fine_bins", self.fine_bins, 2, 100_000)
        _int("max_features", self.max_features, 1)
        _int("max_reference_rows", self.max_reference_rows, 2)
        _int("max_categories", self.max_categories, 1)


@dataclass(frozen=True)
class WebhookSettings:
    """Where drift events are POSTed (``url`` None: nowhere) and how delivery is retried.

    Attempt ``k`` (from 1) waits ``min(backoff_s * 2**(k-1), max_backoff_s)`` after a failure; after
    ``attempts`` failures the event is dropped and counted. At most ``queue_size`` events wait; when full,
    the oldest is dropped. Sending never blocks ingestion.
    """

    url: str | None = None
    attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    timeout_s: float = 5.0
    queue_size: int = 1000
    #: HMAC-SHA256 key for the ``X-Infergate-Signature-256`` header (monitor/webhook.py); None: unsigned.
    secret_file: Path | None = None

    def __post_init__(self) -> None:
        if self.secret_file is not None and not self.secret_file.is_file():
            raise ConfigError(f"webhook secret_file: {self.secret_file} is not a file")
        if self.url is not None:
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(f"alert_webhook: expected an http(s) URL, got {self.url!r}")
        _int("webhook attempts", self.attempts, 1)
        for name in ("backoff_s", "max_backoff_s", "timeout_s"):
            _positive(f"webhook {name}", getattr(self, name))
        _int("webhook queue_size", self.queue_size, 1)


@dataclass(frozen=True)
class MonitorConfig:
    """Everything ``create_app`` needs. ``db`` None keeps history in memory (tests); ``port`` 0 picks one.

    ``max_body_bytes`` caps a POST body and a WebSocket frame. ``tick_s`` is how often time-based windows
    are checked for closing. ``unknown_ttl_s`` is how long "no such model or version" is remembered
    before the registry is looked at again.
    """

    registry: Path
    host: str = "127.0.0.1"
    port: int = 8090
    db: Path | None = Path("monitor.db")
    webhook: WebhookSettings = field(default_factory=WebhookSettings)
    profile: ProfileSettings = field(default_factory=ProfileSettings)
    max_body_bytes: int = 16 * 1024 * 1024
    tick_s: float = 0.5
    unknown_ttl_s: float = 5.0
    history_limit: int = 10_000
    #: Bearer tokens (monitor/auth.py): ingest needs ``ingest_token_file``'s token when set; reads need
    #: ``read_token_file``'s when set, else they are open.
    ingest_token_file: Path | None = None
    read_token_file: Path | None = None
    #: A separate address for ingest (monitor/auth.py); None serves it on ``host:port`` with the rest.
    ingest_host: str | None = None
    ingest_port: int = 8091
    #: How often changed prediction stores are saved to ``db`` (monitor/feedback_db.py), seconds.
    feedback_snapshot_s: float = 30.0
    #: TLS of the ingest address (monitor/tls.py), for a monitor other pods ship to; needs ``ingest_host``.
    ingest_tls_cert: Path | None = None
    ingest_tls_key: Path | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.registry, Path):
            raise ConfigError(f"registry: expected a path, got {self.registry!r}")
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError(f"host: expected a host name or address, got {self.host!r}")
        _int("port", self.port, 0, 65535)
        if self.db is not None and not isinstance(self.db, Path):
            raise ConfigError(f"db: expected a path or None, got {self.db!r}")
        if not isinstance(self.webhook, WebhookSettings) or not isinstance(self.profile, ProfileSettings):
            raise ConfigError("webhook and profile must be WebhookSettings and ProfileSettings")
        _int("max_body_bytes", self.max_body_bytes, 1024)
        _positive("tick_s", self.tick_s)
        _positive("unknown_ttl_s", self.unknown_ttl_s)
        _positive("feedback_snapshot_s", self.feedback_snapshot_s)
        _int("history_limit", self.history_limit, 1)
        for name in ("ingest_token_file", "read_token_file"):
            path = getattr(self, name)
            if path is not None and not (isinstance(path, Path) and path.is_file()):
                raise ConfigError(f"{name}: {path!r} is not a file")
        _int("ingest_port", self.ingest_port, 0, 65535)
        if self.ingest_host is not None and self.ingest_port != 0 and self.ingest_port == self.port:
            raise ConfigError(f"ingest_port: must differ from port ({self.port})")
        if (self.ingest_tls_cert is None) != (self.ingest_tls_key is None):
            raise ConfigError("ingest_tls_cert and ingest_tls_key: give both or neither")
        if self.ingest_tls_cert is not None and self.ingest_host is None:
            raise ConfigError("ingest_tls_cert: TLS is for the separate ingest address; set ingest_host")
