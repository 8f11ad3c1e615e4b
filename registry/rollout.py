"""Rollout state: ``<registry>/<model>/rollout.json``, the record every gateway worker and the CLI share.

This module owns the state file and the pure plan derived from it (which version is stable, which one is
the candidate); the gateway measures traffic and judges the gates, and writes transitions through
:func:`replace_state`. The registry never imports grpc or onnxruntime.

The file holds ``stable`` (the version that serves by default), ``candidate`` (the version under rollout, or
the last one judged), ``step`` (index into ``[rollout].steps``; -1 when none runs), ``status`` (idle | running
| promoted | rolled_back | aborted), ``revision`` (+1 per write), ``actor`` ("gateway" or "operator", who
wrote it), ``step_started`` and ``updated_at`` (UTC
wall time, for people only; gateways time steps with their own monotonic clocks), ``reason`` and ``figures``
(why the last transition happened, with the measured numbers), and ``candidate_stamp``: the file stamp of the
candidate's ``model.onnx`` when it was rolled back or aborted, so it is not retried until its files change or
``infergate-registry rollout retry``.

Writes are atomic (temp file + rename) and compare-and-replace under an advisory lock
(``<model>/.rollout.lock``): a writer names the state it read, and nothing is written when the file holds
something else by then, so of two gateway workers judging the same step only one writes the transition.
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry.errors import ConfigError
from registry.fsutil import FileStamp, file_stamp, replace_atomic

__all__ = [
    "BLOCKING",
    "STATE_FILE",
    "STATUSES",
    "RolloutPlan",
    "RolloutState",
    "candidate_stamp",
    "describe_version",
    "plan_rollout",
    "read_state",
    "replace_state",
    "rollout_facts",
    "utc_now",
]

STATE_FILE = "rollout.json"
LOCK_FILE = ".rollout.lock"
STATUSES = ("idle", "running", "promoted", "rolled_back", "aborted")
ACTORS = ("", "gateway", "operator")
#: Statuses that keep their candidate from being tried again while its files are unchanged.
BLOCKING = ("rolled_back", "aborted")


def utc_now() -> str:
    """Wall time for display, ISO 8601 UTC with milliseconds."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class RolloutState:
    """One model's rollout record (module docstring). Equality compares every field."""

    stable: int | None
    candidate: int | None = None
    step: int = -1
    status: str = "idle"
    step_started: str = ""
    updated_at: str = ""
    reason: str = ""
    figures: Mapping[str, float | int | str] = field(default_factory=dict)
    candidate_stamp: FileStamp | None = None
    #: Incremented by every write: a reader holding a higher revision knows a scan it gets is stale.
    revision: int = 0
    #: Who wrote this revision: "gateway", "operator" (``infergate-registry rollout``) or "" (unknown).
    actor: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ConfigError(f"{STATE_FILE}: status: expected one of {list(STATUSES)}, got {self.status!r}")
        for key in ("stable", "candidate"):
            value = getattr(self, key)
            if value is not None and (type(value) is not int or value < 1):
                raise ConfigError(f"{STATE_FILE}: {key}: expected a version number, got {value!r}")
        if self.actor not in ACTORS:
            raise ConfigError(f"{STATE_FILE}: actor: expected one of {list(ACTORS)}, got {self.actor!r}")
        if type(self.revision) is not int or self.revision < 0:
            raise ConfigError(f"{STATE_FILE}: revision: expected an integer >= 0, got {self.revision!r}")
        if type(self.step) is not int or self.step < -1:
            raise ConfigError(f"{STATE_FILE}: step: expected an integer >= -1, got {self.step!r}")
        if self.status == "running" and (self.candidate is None or self.step < 0):
            raise ConfigError(f"{STATE_FILE}: a running rollout needs a candidate and a step")

    def replace(self, **changes: Any) -> RolloutState:
        """The next revision: a copy with ``changes``, ``updated_at`` set to now and ``revision`` + 1 (and
        ``actor`` "gateway" unless the changes name it)."""
        changes.setdefault("actor", "gateway")
        return dataclasses.replace(self, updated_at=utc_now(), revision=self.revision + 1, **changes)

    def to_json(self) -> bytes:
        doc = dataclasses.asdict(self)
        doc["figures"] = dict(self.figures)
        doc["candidate_stamp"] = list(self.candidate_stamp) if self.candidate_stamp is not None else None
        return (json.dumps(doc, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, *, source: str = STATE_FILE) -> RolloutState:
        """Parses the file's bytes; ConfigError naming ``source`` when it is not a valid state."""
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict):
                raise ValueError("expected a JSON object")
            names = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(doc) - names)
            if unknown:
                raise ValueError(f"unknown keys {unknown}")
            stamp = doc.get("candidate_stamp")
            if stamp is not None:
                if not (isinstance(stamp, list) and len(stamp) == 3 and all(type(v) is int for v in stamp)):
                    raise ValueError(f"candidate_stamp: expected three integers, got {stamp!r}")
                doc["candidate_stamp"] = (stamp[0], stamp[1], stamp[2])
            if not isinstance(doc.get("figures", {}), dict):
                raise ValueError("figures: expected an object")
            for key in ("step_started", "updated_at", "reason", "actor"):
                if not isinstance(doc.get(key, ""), str):
                    raise ValueError(f"{key}: expected a string")
            if "stable" not in doc:
                raise ValueError("stable: missing")
            return cls(**doc)
        except (ValueError, TypeError, ConfigError) as exc:
            raise ConfigError(f"{source}: invalid rollout state: {exc}") from None


@dataclass(frozen=True)
class RolloutPlan:
    """What the policy serves under a staged rollout: ``stable`` (None: no record yet, serve as immediate),
    ``candidate`` (a READY version above stable that is not blocked, or None) and ``blocked`` (a rolled
    back or aborted candidate whose files are unchanged, never served by default)."""

    stable: int | None
    candidate: int | None
    blocked: int | None


def read_state(model_dir: Path) -> RolloutState | None:
    """The model's rollout state, or None when it has none; ConfigError if unreadable or invalid."""
    path = model_dir / STATE_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return RolloutState.from_json(data, source=str(path))


def candidate_stamp(model_dir: Path, version: int) -> FileStamp | None:
    """The stamp of the version's ``model.onnx`` (None when it is missing)."""
    return file_stamp(model_dir / str(version) / "model.onnx")


@contextmanager
def _locked(model_dir: Path) -> Iterator[None]:
    with (model_dir / LOCK_FILE).open("a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def replace_state(model_dir: Path, expected: RolloutState | None, new: RolloutState) -> bool:
    """Writes ``new`` if the file still holds ``expected`` (None: no file); returns whether it wrote.

    Readers see the old or the new file in full. Blocking (file I/O); call it from a worker thread.
    """
    with _locked(model_dir):
        try:
            current = read_state(model_dir)
        except ConfigError:
            current = None if expected is None else RolloutState(stable=None, reason="<unreadable>")
        if current != expected:
            return False
        replace_atomic(model_dir / STATE_FILE, new.to_json())
        return True


def plan_rollout(ready: tuple[int, ...], state: RolloutState | None, stamp_of: Any = None) -> RolloutPlan:
    """The stable version, candidate and blocked version for READY versions ``ready`` and ``state``.

    ``stamp_of(version)`` gives a version's current file stamp (to see whether a blocked candidate
    changed); without it a blocked candidate stays blocked. Pure apart from that call.
    """
    blocked = None
    if state is not None and state.status in BLOCKING and state.candidate in ready:
        current = stamp_of(state.candidate) if stamp_of is not None else state.candidate_stamp
        if current == state.candidate_stamp:
            blocked = state.candidate
    usable = [v for v in ready if v != blocked]
    if state is None or state.stable is None or state.stable not in usable:
        return RolloutPlan(None, None, blocked)
    newest = max(usable)
    return RolloutPlan(state.stable, newest if newest > state.stable else None, blocked)


def rollout_facts(state: RolloutState | None, steps: tuple[float, ...]) -> dict[str, str | int | float]:
    """The recorded rollout, flat, for ModelMetadata ``parameters`` (``rollout.*``; empty without one)."""
    if state is None:
        return {}
    facts: dict[str, str | int | float] = {"rollout.status": state.status, "rollout.step": state.step}
    for key, value in (("stable", state.stable), ("candidate", state.candidate)):
        if value is not None:
            facts[f"rollout.{key}"] = value
    if state.status == "running" and 0 <= state.step < len(steps):
        facts["rollout.percent"] = steps[state.step]
    if state.reason:
        facts["rollout.reason"] = state.reason
    if state.updated_at:
        facts["rollout.updated_at"] = state.updated_at
    return facts


def describe_version(
    state: RolloutState | None, plan: RolloutPlan | None, version: int, mode: str, steps: tuple[float, ...]
) -> str:
    """What the rollout means for ``version``, for RepositoryIndex ``reason`` ("" when nothing)."""
    if state is None or plan is None:
        return ""
    if state.status == "running" and state.candidate is not None and 0 <= state.step < len(steps):
        where = f"step {state.step + 1}/{len(steps)} ({steps[state.step]:g}% {mode})"
        if version == state.candidate:
            return f"rollout candidate against version {state.stable}: {where}"
        if version == state.stable:
            return f"rollout stable; candidate version {state.candidate} at {where}"
    if version == plan.blocked:
        return f"{state.status.replace('_', ' ')}: {state.reason}; not retried until its files change"
    return ""
