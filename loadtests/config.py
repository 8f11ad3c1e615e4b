"""The configuration of one ``infergate-load`` run: a frozen dataclass validated on construction.

Contracts:

* ``levels`` is the offered load of each step: concurrencies (closed loop) or requests/s (open loop).
  One level is a plain run; several are a sweep reported as one run.
* Bounds: each step lasts ``warmup_s + duration_s`` or until ``requests`` measured requests were sent,
  whichever comes first. With ``requests`` and no explicit duration, ``duration_s`` is a safety cap
  (:data:`REQUESTS_ONLY_CAP_S`), so every run ends on its own.
* ``budget_ms`` (goodput) defaults to ``timeout_us / 1000`` when a timeout is given.
* :meth:`LoadConfig.step` turns one level into the :class:`StepSpec` the client processes receive.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loadtests.native import unsupported
from loadtests.secure import ClientSecurity
from loadtests.spec import StepSpec, split_target

__all__ = ["DEFAULT_DURATION_S", "REQUESTS_ONLY_CAP_S", "LoadConfig"]

DEFAULT_DURATION_S = 10.0
REQUESTS_ONLY_CAP_S = 600.0
INPUT_SOURCES = ("reference", "npz", "random")


@dataclass(frozen=True)
class LoadConfig:
    target: str
    model: str
    levels: tuple[float, ...]
    mode: str = "closed"
    version: str = ""
    poisson: bool = False
    stream: bool = False
    duration_s: float = DEFAULT_DURATION_S
    requests: int | None = None
    warmup_s: float = 1.0
    rows: int = 1
    timeout_us: int | None = None
    priority: int | None = None
    budget_ms: float | None = None
    processes: int = 1
    payloads: int = 1
    input_source: str = "random"
    registry: Path | None = None
    npz: Path | None = None
    seed: int = 0
    deadline_s: float = 10.0
    max_inflight: int = 2048
    drain_s: float = 5.0
    metrics_url: str | None = None
    json_path: Path | None = None
    plot_dir: Path | None = None
    progress: bool = True
    label: str = ""
    security: ClientSecurity | None = None  # TLS and token (loadtests/secure.py)
    native_client: Path | None = None  # the compiled engine (loadtests/native.py) instead of Python gRPC

    def __post_init__(self) -> None:
        split_target(self.target)
        if self.mode not in ("closed", "open"):
            raise ValueError(f"--mode must be closed or open, got {self.mode!r}")
        if not self.levels:
            raise ValueError("at least one concurrency or rate is needed")
        if self.mode == "closed" and any(level < 1 or level != int(level) for level in self.levels):
            raise ValueError("closed-loop concurrency must be a whole number >= 1")
        if self.mode == "open" and any(level <= 0 for level in self.levels):
            raise ValueError("open-loop rate must be > 0")
        if self.poisson and self.mode != "open":
            raise ValueError("--poisson needs --mode open")
        if self.duration_s <= 0 or self.warmup_s < 0:
            raise ValueError("--duration must be > 0 and --warmup >= 0")
        if self.requests is not None and self.requests < 1:
            raise ValueError("--requests must be >= 1")
        if self.rows < 1 or self.processes < 1 or self.payloads < 1:
            raise ValueError("--rows, --processes and --payloads must be >= 1")
        if self.timeout_us is not None and self.timeout_us < 1:
            raise ValueError("--timeout-us must be >= 1")
        if self.budget_ms is not None and self.budget_ms <= 0:
            raise ValueError("--budget-ms must be > 0")
        if self.input_source not in INPUT_SOURCES:
            raise ValueError(f"--input must be one of {INPUT_SOURCES}")
        if self.input_source == "reference" and self.registry is None:
            raise ValueError("--input reference needs --registry DIR")
        if self.input_source == "npz" and self.npz is None:
            raise ValueError("--input npz needs --npz FILE")
        if self.native_client is not None and (reason := unsupported(self)) is not None:
            raise ValueError(reason)

    @property
    def budget_ns(self) -> int | None:
        """The goodput budget in ns: ``budget_ms``, else the timeout parameter, else none."""
        if self.budget_ms is not None:
            return int(self.budget_ms * 1e6)
        return self.timeout_us * 1000 if self.timeout_us is not None else None

    @property
    def window_ns(self) -> int:
        """Timeline window: about 200 windows per step, at least 50 ms, whole milliseconds."""
        return max(50, int(self.duration_s * 1000 / 200)) * 1_000_000

    def step(self, level: float, payloads: tuple[bytes, ...], rows: int) -> StepSpec:
        """The spec of the step that offers ``level``."""
        return StepSpec(
            target=self.target,
            mode=self.mode,
            payloads=payloads,
            rows=rows,
            concurrency=int(level) if self.mode == "closed" else 1,
            rate=float(level) if self.mode == "open" else 0.0,
            poisson=self.poisson,
            stream=self.stream,
            warmup_s=self.warmup_s,
            duration_s=self.duration_s,
            requests=self.requests,
            deadline_s=self.deadline_s,
            budget_ns=self.budget_ns,
            max_inflight=self.max_inflight,
            window_ns=self.window_ns,
            drain_s=self.drain_s,
            seed=self.seed,
            security=self.security,
            native_client=None if self.native_client is None else str(self.native_client),
        )

    def parameters(self) -> dict[str, Any]:
        """Every parameter, JSON-ready (paths as strings)."""
        params = {
            k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
            for k, v in asdict(self).items()
        }
        params["security"] = self.security.describe() if self.security is not None else None  # no token
        return params
