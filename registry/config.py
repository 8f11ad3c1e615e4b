"""Per-model configuration: ``<registry>/<model>/model.toml``.

This module owns the typed, immutable view of ``model.toml`` (DESIGN.md §4): one frozen dataclass per
section, each validated in ``__post_init__`` with the defaults of the design, and the loader that turns
a TOML file into a :class:`ModelConfig`. Every key is optional; an unknown section or key, a value of
the wrong type or a value out of range raises :class:`ConfigError` whose message names the full key,
e.g. ``model.toml: [batching].max_batch_sise: unknown key``. A typo is never silently ignored.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from registry.checks import (
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_int_tuple,
    check_str,
)
from registry.errors import ConfigError
from registry.feedback_config import FeedbackConfig
from registry.rollout_config import RolloutConfig

__all__ = [
    "PROVIDERS",
    "PSI_THRESHOLD_MODES",
    "VERSION_POLICIES",
    "BatchingConfig",
    "DriftConfig",
    "FeedbackConfig",
    "ModelConfig",
    "ProviderOption",
    "RolloutConfig",
    "RuntimeConfig",
    "SamplingConfig",
    "VersionsConfig",
    "WARMUP_MODES",
    "WarmupConfig",
    "load_model_config",
    "parse_model_config",
]

PROVIDERS = frozenset({"tensorrt", "cuda", "cpu"})
VERSION_POLICIES = frozenset({"latest", "all", "specific"})
PSI_THRESHOLD_MODES = frozenset({"fixed", "calibrated"})
WARMUP_MODES = frozenset({"auto", "off", "file"})

ProviderOption = str | int | float | bool
"""A provider option value, passed through to onnxruntime by the gateway."""

_DEFAULT_CUDA: Mapping[str, ProviderOption] = MappingProxyType({"device_id": 0})
_DEFAULT_TENSORRT: Mapping[str, ProviderOption] = MappingProxyType({"fp16": False})


#: ``[batching].scheduler``: "deadline" (EDF, SLO-aware batch sizes, shedding) or "fixed" (FIFO with a fixed
#: queue delay, as Triton's dynamic batcher; for comparison).
SCHEDULERS = ("deadline", "fixed")


@dataclass(frozen=True)
class BatchingConfig:
    """``[batching]``: batch size and queue limits (rows), queue delay and default latency budget (ms)."""

    SECTION: ClassVar[str] = "batching"
    max_batch_size: int = 64
    max_queue_delay_ms: float = 2.0
    latency_budget_ms: float = 100.0
    max_queue_size: int = 4096
    priority_levels: int = 1
    scheduler: str = "deadline"

    def __post_init__(self) -> None:
        k = "[batching]."
        check_choice(k + "scheduler", self.scheduler, SCHEDULERS, ConfigError)
        check_int(k + "max_batch_size", self.max_batch_size, ConfigError, minimum=1)
        _set(
            self,
            "max_queue_delay_ms",
            check_float(k + "max_queue_delay_ms", self.max_queue_delay_ms, ConfigError, minimum=0.0),
        )
        _set(self, "latency_budget_ms", _positive(k + "latency_budget_ms", self.latency_budget_ms))
        check_int(k + "max_queue_size", self.max_queue_size, ConfigError, minimum=1)
        check_int(k + "priority_levels", self.priority_levels, ConfigError, minimum=1)


@dataclass(frozen=True)
class RuntimeConfig:
    """``[runtime]``: ordered execution providers, sessions per version, threads, GPU requirement, buckets.

    ``cuda`` and ``tensorrt`` are provider options passed through to onnxruntime: scalar values only,
    merged over the defaults (``device_id = 0``, ``fp16 = false``). ``buckets`` are strictly ascending
    batch sizes to pad to; empty means no padding. ``intra_op_threads = 0`` means onnxruntime's default.
    """

    SECTION: ClassVar[str] = "runtime"
    providers: tuple[str, ...] = ("cpu",)
    instances: int = 1
    intra_op_threads: int = 0
    require_gpu: bool = False
    buckets: tuple[int, ...] = ()
    cuda: Mapping[str, ProviderOption] = field(default_factory=lambda: _DEFAULT_CUDA)
    tensorrt: Mapping[str, ProviderOption] = field(default_factory=lambda: _DEFAULT_TENSORRT)

    def __post_init__(self) -> None:
        k = "[runtime]."
        if not isinstance(self.providers, list | tuple) or not self.providers:
            raise ConfigError(f"{k}providers: expected a non-empty list of {sorted(PROVIDERS)}")
        providers = tuple(
            check_choice(f"{k}providers[{i}]", p, PROVIDERS, ConfigError)
            for i, p in enumerate(self.providers)
        )
        if len(set(providers)) != len(providers):
            raise ConfigError(f"{k}providers: repeated values in {list(providers)}")
        _set(self, "providers", providers)
        check_int(k + "instances", self.instances, ConfigError, minimum=1)
        check_int(k + "intra_op_threads", self.intra_op_threads, ConfigError, minimum=0)
        check_bool(k + "require_gpu", self.require_gpu, ConfigError)
        _set(
            self,
            "buckets",
            check_int_tuple(k + "buckets", self.buckets, ConfigError, minimum=1, ascending=True),
        )
        _set(self, "cuda", _provider_options("runtime.cuda", self.cuda, _DEFAULT_CUDA))
        _set(self, "tensorrt", _provider_options("runtime.tensorrt", self.tensorrt, _DEFAULT_TENSORRT))
        check_int("[runtime.cuda].device_id", self.cuda["device_id"], ConfigError, minimum=0)
        check_bool("[runtime.tensorrt].fp16", self.tensorrt["fp16"], ConfigError)


@dataclass(frozen=True)
class VersionsConfig:
    """``[versions]``: which READY versions to serve, and whether a breaking signature may replace another.

    ``latest`` counts versions for policy "latest"; ``specific`` lists them for policy "specific" (then
    non-empty). A pinned READY version is served in addition, whatever the policy.
    """

    SECTION: ClassVar[str] = "versions"
    policy: str = "latest"
    latest: int = 1
    specific: tuple[int, ...] = ()
    allow_breaking_signature: bool = False

    def __post_init__(self) -> None:
        k = "[versions]."
        check_choice(k + "policy", self.policy, VERSION_POLICIES, ConfigError)
        check_int(k + "latest", self.latest, ConfigError, minimum=1)
        _set(self, "specific", check_int_tuple(k + "specific", self.specific, ConfigError, minimum=1))
        if self.policy == "specific" and not self.specific:
            raise ConfigError(f'{k}specific: must list at least one version when policy = "specific"')
        check_bool(k + "allow_breaking_signature", self.allow_breaking_signature, ConfigError)


@dataclass(frozen=True)
class SamplingConfig:
    """``[sampling]``: the fraction of requests sent to the monitor and the row cap per sampled request."""

    SECTION: ClassVar[str] = "sampling"
    rate: float = 0.05
    max_rows_per_request: int = 64

    def __post_init__(self) -> None:
        _set(self, "rate", check_float("[sampling].rate", self.rate, ConfigError, minimum=0.0, maximum=1.0))
        check_int("[sampling].max_rows_per_request", self.max_rows_per_request, ConfigError, minimum=1)


@dataclass(frozen=True)
class DriftConfig:
    """``[drift]``: monitor window size (rows, seconds), PSI bins and threshold, KS effect and level, and
    how many consecutive drifting windows raise an alert.

    ``psi_threshold_mode`` picks the PSI cut: "calibrated" (the default: the null quantile
    ``chi2(B - 1, 1 - alpha / F) * (1/n + 1/m)``, docs/monitor.md; chosen from ``python -m bench
    drift-power``) or "fixed" (``psi_threshold``). ``nonfinite_threshold`` is the change in a
    feature's NaN or +-inf rate (absolute, vs the reference) that counts as drift. Windows of at most
    ``audit_max_rows`` rows keep raw values for the exact KS test (0 turns that off). ``sliding_panes``
    closed windows make up the sliding window. The first ``skew_windows`` windows of a version are also
    compared with its training profile (``training.npz``), the training/serving skew check (0 turns it
    off).
    """

    SECTION: ClassVar[str] = "drift"
    window_rows: int = 1000
    window_seconds: float = 60.0
    bins: int = 10
    psi_threshold: float = 0.2
    ks_min_effect: float = 0.1
    alpha: float = 0.01
    consecutive: int = 2
    psi_threshold_mode: str = "calibrated"
    nonfinite_threshold: float = 0.01
    audit_max_rows: int = 100_000
    sliding_panes: int = 5
    skew_windows: int = 1

    def __post_init__(self) -> None:
        k = "[drift]."
        check_int(k + "window_rows", self.window_rows, ConfigError, minimum=2)
        _set(self, "window_seconds", _positive(k + "window_seconds", self.window_seconds))
        check_int(k + "bins", self.bins, ConfigError, minimum=2)
        _set(self, "psi_threshold", _positive(k + "psi_threshold", self.psi_threshold))
        _set(
            self,
            "ks_min_effect",
            check_float(k + "ks_min_effect", self.ks_min_effect, ConfigError, minimum=0.0, maximum=1.0),
        )
        alpha = check_float(k + "alpha", self.alpha, ConfigError, minimum=0.0, exclusive_minimum=True)
        if alpha >= 1.0:
            raise ConfigError(f"{k}alpha: must be < 1.0, got {alpha}")
        _set(self, "alpha", alpha)
        check_int(k + "consecutive", self.consecutive, ConfigError, minimum=1)
        check_choice(k + "psi_threshold_mode", self.psi_threshold_mode, PSI_THRESHOLD_MODES, ConfigError)
        _set(
            self,
            "nonfinite_threshold",
            check_float(k + "nonfinite_threshold", self.nonfinite_threshold, ConfigError, minimum=0.0,
                        maximum=1.0, exclusive_minimum=True),
        )  # fmt: skip
        check_int(k + "audit_max_rows", self.audit_max_rows, ConfigError, minimum=0)
        check_int(k + "sliding_panes", self.sliding_panes, ConfigError, minimum=1)
        check_int(k + "skew_windows", self.skew_windows, ConfigError, minimum=0, maximum=1000)


@dataclass(frozen=True)
class WarmupConfig:
    """``[warmup]``: what the gateway runs to warm a version up and seed its latency profile.

    "auto": the inputs of the version's ``golden.npz``, else the input rows of its ``reference.npz``,
    else synthetic zeros and empty strings; "off": no warm-up runs; "file": the ``input:<tensor>`` arrays
    of ``file``, a relative path inside the version directory (then required, and only then allowed).
    """

    SECTION: ClassVar[str] = "warmup"
    mode: str = "auto"
    file: str = ""

    def __post_init__(self) -> None:
        check_choice("[warmup].mode", self.mode, WARMUP_MODES, ConfigError)
        path = Path(check_str("[warmup].file", self.file, ConfigError))
        if self.mode != "file" and self.file:
            raise ConfigError(f'[warmup].file: only used with mode = "file", got mode = "{self.mode}"')
        if self.mode == "file" and (not self.file or path.is_absolute() or ".." in path.parts):
            raise ConfigError(
                f'[warmup].file: mode = "file" needs a relative path inside the version directory, '
                f"got {self.file!r}"
            )


_SECTIONS: tuple[type[Any], ...] = (
    BatchingConfig,
    RuntimeConfig,
    VersionsConfig,
    SamplingConfig,
    DriftConfig,
    RolloutConfig,
    WarmupConfig,
    FeedbackConfig,
)


@dataclass(frozen=True)
class ModelConfig:
    """The whole of ``model.toml``; ``ModelConfig()`` is the configuration of a model without one."""

    batching: BatchingConfig = field(default_factory=BatchingConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    versions: VersionsConfig = field(default_factory=VersionsConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)

    def __post_init__(self) -> None:
        for cls in _SECTIONS:
            if not isinstance(getattr(self, cls.SECTION), cls):
                raise ConfigError(f"[{cls.SECTION}]: expected a {cls.__name__}")


def load_model_config(path: Path | None) -> ModelConfig:
    """Load ``model.toml`` at ``path``; ``None`` or a missing file gives the defaults.

    ConfigError (message prefixed with the path) if the file is unreadable, not TOML, or invalid.
    """
    if path is None:
        return ModelConfig()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ModelConfig()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    return parse_model_config(data, source=str(path))


def parse_model_config(data: Mapping[str, Any], *, source: str = "model.toml") -> ModelConfig:
    """Build a ModelConfig from parsed TOML; ConfigError messages start with ``source``."""
    try:
        known = {cls.SECTION: cls for cls in _SECTIONS}
        for section in data:
            if section not in known:
                raise ConfigError(f"[{section}]: unknown section (expected one of {sorted(known)})")
        return ModelConfig(**{name: _parse_section(cls, data.get(name, {})) for name, cls in known.items()})
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _parse_section(cls: type[Any], table: object) -> Any:
    section = cls.SECTION
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{section}]: expected a table")
    allowed = {f.name for f in fields(cls)}
    for key in table:
        if key not in allowed:
            raise ConfigError(f"[{section}].{key}: unknown key")
    for key in ("cuda", "tensorrt"):
        if section == "runtime" and key in table and not isinstance(table[key], Mapping):
            raise ConfigError(f"[runtime].{key}: expected a table ([runtime.{key}])")
    return cls(**table)


def _provider_options(
    section: str, options: object, defaults: Mapping[str, ProviderOption]
) -> Mapping[str, ProviderOption]:
    if not isinstance(options, Mapping):
        raise ConfigError(f"[{section}]: expected a table")
    for key, value in options.items():
        if not isinstance(value, str | int | float | bool):
            raise ConfigError(
                f"[{section}].{key}: expected a string, number or boolean, got {type(value).__name__}"
            )
    return MappingProxyType({**defaults, **options})


def _positive(key: str, value: object) -> float:
    return check_float(key, value, ConfigError, minimum=0.0, exclusive_minimum=True)


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)
