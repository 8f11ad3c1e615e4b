"""Operator actions on a model's rollout: status, promote, abort, retry (``infergate-registry rollout``).

Each action reads ``rollout.json`` and writes its successor with compare-and-replace
(:func:`registry.rollout.replace_state`), so it never overwrites a transition a gateway wrote meanwhile
(it fails with a message instead; run it again). Gateways pick the change up at their next registry poll.

* ``promote``: the running candidate becomes the stable version now (every step skipped).
* ``abort``: the running candidate is dropped; the stable version takes all traffic; the candidate is not
  tried again until its files change or ``retry``.
* ``retry``: forgets a rolled back or aborted candidate's verdict; the rollout starts again at step 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.errors import NotFoundError, PublishError
from registry.layout import check_model_name, scan_model
from registry.rollout import BLOCKING, RolloutState, candidate_stamp, replace_state, utc_now

__all__ = ["RolloutStatus", "abort", "promote", "retry", "rollout_status"]


@dataclass(frozen=True)
class RolloutStatus:
    """What ``rollout status`` prints: the model's mode and steps, the plan and the recorded state."""

    model: str
    mode: str
    steps: tuple[float, ...]
    stable: int | None
    candidate: int | None
    blocked: int | None
    state: RolloutState | None

    def as_json(self) -> dict[str, Any]:
        state = self.state
        doc: dict[str, Any] = {
            "model": self.model,
            "mode": self.mode,
            "steps": list(self.steps),
            "stable": self.stable,
            "candidate": self.candidate,
            "blocked": self.blocked,
            "status": state.status if state is not None else "none",
        }
        if state is not None:
            step = state.step
            doc.update(
                step=step,
                percent=self.steps[step]
                if state.status == "running" and 0 <= step < len(self.steps)
                else None,
                recorded_candidate=state.candidate,
                step_started=state.step_started,
                updated_at=state.updated_at,
                reason=state.reason,
                figures=dict(state.figures),
            )
        return doc


def rollout_status(root: Path, model: str) -> RolloutStatus:
    """The model's rollout as the registry holds it. NotFoundError for an unknown model."""
    info = scan_model(_model_dir(root, model))
    plan = info.rollout_plan
    rollout = info.config.rollout
    return RolloutStatus(
        model=model,
        mode=rollout.mode,
        steps=rollout.steps,
        stable=plan.stable if plan is not None else None,
        candidate=plan.candidate if plan is not None else None,
        blocked=plan.blocked if plan is not None else None,
        state=info.rollout,
    )


def promote(root: Path, model: str) -> RolloutState:
    """Makes the running candidate the stable version; PublishError when no rollout is running."""
    model_dir = _model_dir(root, model)
    state = _running(model_dir, model, "promote")
    assert state.candidate is not None
    done = state.replace(
        stable=state.candidate,
        step=-1,
        status="promoted",
        reason="promoted by an operator",
        figures={},
        actor="operator",
    )
    return _write(model_dir, model, state, done)


def abort(root: Path, model: str) -> RolloutState:
    """Drops the running candidate (the stable version takes all traffic); PublishError when none runs."""
    model_dir = _model_dir(root, model)
    state = _running(model_dir, model, "abort")
    assert state.candidate is not None
    done = state.replace(
        step=-1,
        status="aborted",
        reason="aborted by an operator",
        candidate_stamp=candidate_stamp(model_dir, state.candidate),
        actor="operator",
    )
    return _write(model_dir, model, state, done)


def retry(root: Path, model: str) -> RolloutState:
    """Forgets a rolled back or aborted candidate's verdict; PublishError when there is none."""
    model_dir = _model_dir(root, model)
    state = scan_model(model_dir).rollout
    if state is None or state.status not in BLOCKING:
        status = "no rollout" if state is None else state.status
        raise PublishError(f"{model}: nothing to retry (rollout status: {status})")
    done = state.replace(
        candidate=None,
        step=-1,
        status="idle",
        reason=f"retry of version {state.candidate} requested by an operator",
        figures={},
        candidate_stamp=None,
        step_started=utc_now(),
        actor="operator",
    )
    return _write(model_dir, model, state, done)


def _model_dir(root: Path, model: str) -> Path:
    model_dir = root / check_model_name(model)
    if not model_dir.is_dir():
        raise NotFoundError(f"model {model!r} not found in {root}")
    return model_dir


def _running(model_dir: Path, model: str, action: str) -> RolloutState:
    state = scan_model(model_dir).rollout
    if state is None or state.status != "running":
        status = "no rollout" if state is None else state.status
        raise PublishError(f"{model}: cannot {action}: no rollout is running (status: {status})")
    return state


def _write(model_dir: Path, model: str, expected: RolloutState, new: RolloutState) -> RolloutState:
    if not replace_state(model_dir, expected, new):
        raise PublishError(f"{model}: the rollout changed while this command ran; check status and retry")
    return new
