"""Gateway process configuration: a frozen dataclass validated on construction."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.poller import CHOICES as POLLER_CHOICES
from gateway.security import validate as validate_security

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_MONITOR_URL = "ws://127.0.0.1:8090/v1/samples/stream"


@dataclass(frozen=True)
class GatewayConfig:
    """Where to serve from and how. Ports may be 0 (the OS picks); ``metrics_port`` None disables /metrics;
    ``poll_interval`` 0 disables the registry watcher; ``sampling`` False turns the monitor stream off, and
    ``sample_rate`` (when set) overrides every model's ``[sampling].rate``."""

    registry: Path
    host: str = "127.0.0.1"
    port: int = 8001
    metrics_port: int | None = 8002
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    grace_seconds: float = 30.0
    poll_interval: float = 2.0
    monitor_url: str = DEFAULT_MONITOR_URL
    sampling: bool = True
    sample_rate: float | None = None
    access_log_rate: float = 0.01
    #: Access-log lines per second for overload refusals (RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED); 0 = none.
    access_log_shed_rate: float = 10.0
    reuse_port: bool = False
    default_intra_op_threads: int = 0
    worker_index: int | None = None
    device: str | None = None
    require_gpu: bool = False
    #: Overload protection (README "Overload"): the adaptive limit on inferences in flight (its ceiling,
    #: or a fixed limit when ``adaptive_concurrency`` is off; 0 = no limit), HTTP/2 streams per
    #: connection (0 = gRPC's default) and calls gRPC core may hold before Python takes them (0 = gRPC's
    #: default); past the last, gRPC core refuses a call without running any Python.
    max_concurrency: int = 512
    adaptive_concurrency: bool = True
    max_concurrent_streams: int = 0
    max_pending_calls: int = 64
    #: Extra requests for the next ModelInfer call kept outstanding with gRPC core, so a turn of the event
    #: loop takes up to this many more waiting calls (gateway/acceptors.py; 0 = grpc.aio's one).
    accept_ahead: int = 8
    #: Scheduling policy of grpc.aio's completion-queue poller and gRPC core's transport threads
    #: (gateway/poller.py, gateway/sharing.py): "batch" (SCHED_BATCH: their wake-ups do not preempt the
    #: event loop, which yields the core every 200 µs while busy), "normal" (the default policy) or "auto"
    #: (batch while the process may use one core only).
    poller_scheduling: str = "auto"
    #: Security (README "Security"; gateway/security.py): TLS files (mTLS with ``tls_client_ca``), the
    #: scoped token file (checked for changes every ``auth_reload_seconds``), reflection under auth, and the
    #: monitor's ingest token. All off by default.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    auth_tokens: Path | None = None
    auth_reflection: str = "open"
    auth_reload_seconds: float = 1.0
    monitor_token_file: Path | None = None
    #: CA bundle verifying a ``wss://`` monitor's certificate (None: the system's trust store).
    monitor_tls_ca: Path | None = None
    #: Who changes what serves (gateway/control.py): "poll" (the watcher), "explicit" (Repository RPCs
    #: only) or "none" (load at start only).
    model_control: str = "poll"
    #: Directory of trusted Ed25519 public keys (registry/signing.py): when set, a version must be signed
    #: by one of them to load.
    trusted_keys: Path | None = None
    #: Staged rollouts (docs/registry.md "Safe rollout"): where promotion/rollback events are POSTed (None:
    #: log lines only), the monitor's read token for its ``/v1/drift`` (the drift gate), and how often the
    #: controller judges the running steps.
    rollout_webhook: str | None = None
    #: Signs rollout webhook events (registry.webhook_signing); needs ``rollout_webhook``.
    rollout_webhook_secret_file: Path | None = None
    monitor_read_token_file: Path | None = None
    rollout_tick_s: float = 0.25

    def __post_init__(self) -> None:
        if self.sample_rate is not None and not 0.0 <= self.sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in [0, 1], got {self.sample_rate}")
        if self.sampling and not self.monitor_url.startswith(("ws://", "wss://")):
            raise ValueError(f"monitor_url must be a ws:// or wss:// URL, got {self.monitor_url!r}")
        if not 0.0 <= self.access_log_rate <= 1.0:
            raise ValueError(f"access_log_rate must be in [0, 1], got {self.access_log_rate}")
        if self.access_log_shed_rate < 0:
            raise ValueError(f"access_log_shed_rate must be >= 0, got {self.access_log_shed_rate}")
        if self.default_intra_op_threads < 0:
            raise ValueError(f"default_intra_op_threads must be >= 0, got {self.default_intra_op_threads}")
        if self.device is not None and not _valid_device(self.device):
            raise ValueError(f"device must be 'cpu' or 'cuda:N', got {self.device!r}")
        if self.poll_interval < 0:
            raise ValueError(f"poll_interval must be >= 0 (0 disables the watcher), got {self.poll_interval}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port must be in 0..65535, got {self.metrics_port}")
        if self.max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes must be at least 1024, got {self.max_message_bytes}")
        for name in ("max_concurrency", "max_concurrent_streams", "max_pending_calls", "accept_ahead"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 = no limit), got {getattr(self, name)}")
        if self.poller_scheduling not in POLLER_CHOICES:
            wanted = list(POLLER_CHOICES)
            raise ValueError(f"poller_scheduling must be one of {wanted}, got {self.poller_scheduling!r}")
        if self.grace_seconds < 0:
            raise ValueError(f"grace_seconds must be >= 0, got {self.grace_seconds}")
        if self.rollout_webhook is not None and not self.rollout_webhook.startswith(("http://", "https://")):
            raise ValueError(
                f"rollout_webhook must be an http:// or https:// URL, got {self.rollout_webhook!r}"
            )
        if self.rollout_webhook_secret_file is not None and self.rollout_webhook is None:
            raise ValueError(
                "rollout_webhook_secret_file signs rollout webhook events: set rollout_webhook too"
            )
        if not self.rollout_tick_s > 0:
            raise ValueError(f"rollout_tick_s must be > 0, got {self.rollout_tick_s}")
        validate_security(self)

    @property
    def address(self) -> str:
        """host:port for grpc, with IPv6 literals bracketed."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"


def _valid_device(device: str) -> bool:
    if device == "cpu":
        return True
    kind, _, index = device.partition(":")
    return kind == "cuda" and index.isdigit()
