"""Gateway process configuration: a frozen dataclass validated on construction."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class GatewayConfig:
    """Where to serve from and how. Ports may be 0 (the OS picks); ``metrics_port`` None disables /metrics;
    ``poll_interval`` 0 disables the registry watcher."""

    registry: Path
    host: str = "127.0.0.1"
    port: int = 8001
    metrics_port: int | None = 8002
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    grace_seconds: float = 30.0
    poll_interval: float = 2.0

    def __post_init__(self) -> None:
        if self.poll_interval < 0:
            raise ValueError(f"poll_interval must be >= 0 (0 disables the watcher), got {self.poll_interval}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port must be in 0..65535, got {self.metrics_port}")
        if self.max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes must be at least 1024, got {self.max_message_bytes}")
        if self.grace_seconds < 0:
            raise ValueError(f"grace_seconds must be >= 0, got {self.grace_seconds}")

    @property
    def address(self) -> str:
        """host:port for grpc, with IPv6 literals bracketed."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"
