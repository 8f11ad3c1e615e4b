"""``model.toml`` ``[rollout]``: how a new version reaches traffic (immediately, mirrored, or as a canary)
and the gates it must pass at every step.

Keys (all optional; see docs/registry.md "Safe rollout"):

* ``mode``: "immediate" (today's behaviour: the new version takes all traffic once it loads), "shadow"
  (each step mirrors that percent of requests to the candidate; clients always get the stable answer) or
  "canary" (the candidate answers that percent of requests, sticky by request id).
* ``steps``: percent per step, strictly increasing in (0, 100], ending at 100.
* ``step_seconds``: least time per step; ``min_requests``: least candidate requests (canary) or compared
  mirrored requests (shadow) per step before the step is judged.
* ``max_error_ratio``: the candidate's error ratio may exceed the stable version's by at most this
  (absolute, 0..1). ``max_p99_ratio``: candidate p99 / stable p99 over the step's window (>= 1).
* ``min_agreement``: the share of compared rows whose outputs agree (0..1). ``agreement`` chooses how:
  "auto" (from the compared output's datatype and name), "label" (equal integers, or equal argmax of a
  float output), "relative" (``|a - b| <= max_relative_error * max(|b|, 1e-6)`` everywhere in the row);
  ``agreement_output`` names the output compared ("" = the first).
* ``shadow_max_inflight``: groups of mirrored requests in flight at most (gateway.rollout_live: the copies
  made within one mirror window travel as one group; copies past the cap are dropped and counted).
* ``mirror_window_ms``: how long mirrored copies gather before they go to the other version as one
  group (0: until the end of the event-loop turn that made the first of them).
* ``drift_gate``: also fail the step when the monitor reports drift for the candidate;
  ``max_drift_psi``: fail when any feature's PSI exceeds this (0 = only the monitor's own verdict).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, ClassVar

from registry.checks import check_bool, check_choice, check_float, check_int, check_str
from registry.errors import ConfigError

__all__ = ["AGREEMENT_MODES", "ROLLOUT_MODES", "RolloutConfig"]

ROLLOUT_MODES = ("immediate", "shadow", "canary")
AGREEMENT_MODES = ("auto", "label", "relative")


@dataclass(frozen=True)
class RolloutConfig:
    """``[rollout]``: the rollout policy of a model (module docstring)."""

    SECTION: ClassVar[str] = "rollout"
    mode: str = "immediate"
    steps: tuple[float, ...] = (1.0, 5.0, 25.0, 50.0, 100.0)
    step_seconds: float = 60.0
    min_requests: int = 100
    max_error_ratio: float = 0.01
    max_p99_ratio: float = 1.5
    min_agreement: float = 0.95
    agreement: str = "auto"
    agreement_output: str = ""
    max_relative_error: float = 1e-3
    shadow_max_inflight: int = 4
    mirror_window_ms: float = 100.0
    drift_gate: bool = True
    max_drift_psi: float = 0.0

    def __post_init__(self) -> None:
        k = "[rollout]."
        check_choice(k + "mode", self.mode, ROLLOUT_MODES, ConfigError)
        _set(self, "steps", _steps(k + "steps", self.steps))
        _set(
            self,
            "step_seconds",
            check_float(
                k + "step_seconds", self.step_seconds, ConfigError, minimum=0.0, exclusive_minimum=True
            ),
        )
        check_int(k + "min_requests", self.min_requests, ConfigError, minimum=1)
        for key in ("max_error_ratio", "min_agreement"):
            _set(self, key, check_float(k + key, getattr(self, key), ConfigError, minimum=0.0, maximum=1.0))
        _set(
            self,
            "max_p99_ratio",
            check_float(k + "max_p99_ratio", self.max_p99_ratio, ConfigError, minimum=1.0),
        )
        check_choice(k + "agreement", self.agreement, AGREEMENT_MODES, ConfigError)
        check_str(k + "agreement_output", self.agreement_output, ConfigError)
        _set(
            self,
            "max_relative_error",
            check_float(k + "max_relative_error", self.max_relative_error, ConfigError, minimum=0.0),
        )
        check_int(k + "shadow_max_inflight", self.shadow_max_inflight, ConfigError, minimum=1)
        _set(
            self,
            "mirror_window_ms",
            check_float(
                k + "mirror_window_ms", self.mirror_window_ms, ConfigError, minimum=0.0, maximum=1000.0
            ),
        )
        check_bool(k + "drift_gate", self.drift_gate, ConfigError)
        _set(
            self,
            "max_drift_psi",
            check_float(k + "max_drift_psi", self.max_drift_psi, ConfigError, minimum=0.0),
        )

    @property
    def staged(self) -> bool:
        """True for "shadow" and "canary": a new version goes through the steps and gates."""
        return self.mode != "immediate"


def _steps(key: str, value: object) -> tuple[float, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(f"{key}: expected a non-empty list of percents, got {type(value).__name__}")
    steps = tuple(
        check_float(f"{key}[{i}]", item, ConfigError, minimum=0.0, maximum=100.0, exclusive_minimum=True)
        for i, item in enumerate(value)
    )
    if any(b <= a for a, b in itertools.pairwise(steps)):
        raise ConfigError(f"{key}: must be strictly increasing, got {list(steps)}")
    if steps[-1] != 100.0:
        raise ConfigError(f"{key}: the last step must be 100, got {steps[-1]}")
    return steps


def _set(obj: Any, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)
