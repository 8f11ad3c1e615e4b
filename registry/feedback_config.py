"""``[feedback]`` of ``model.toml``: how ground truth is joined to predictions and judged.

This module owns the typed view of the section and the choice of which output tensors are the
prediction and the probabilities, and what the ground-truth tensor is called (:func:`feedback_roles`):

* ``task``: "auto" (from the signature), "classifier" or "regressor".
* ``prediction``, ``probabilities``, ``label``: tensor names; "" takes the default from the signature:
  an integer output of shape [n] or [n, 1] is the predicted label; a float output [n, k] with fixed
  k > 1 holds the class probabilities (the predicted label is their argmax when there is no integer
  output); a float output [n] or [n, 1] is a regression. The ground-truth tensor in feedback is called
  like the prediction (``label`` overrides that name).
* the prediction store: at most ``max_rows`` rows, ``max_bytes`` bytes, and predictions kept for
  ``ttl_seconds`` (a label whose prediction is older is late);
* quality windows: ``window_seconds`` of prediction time, closed ``grace_seconds`` after their end, or
  once ``window_rows`` rows are labelled;
* decisions: ``min_effect`` (the drop that matters, in the metric's units), ``alpha`` (BH level across
  metrics), ``confidence`` (of the intervals), ``baseline_windows`` (first windows that make the baseline
  when the manifest has no validation metric), ``consecutive`` (degraded windows in a row to mark the
  version degraded, and clean ones to clear it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from registry.checks import check_choice, check_float, check_int, check_str
from registry.errors import ConfigError
from registry.signature import Signature, TensorSpec

__all__ = ["FEEDBACK_TASKS", "FeedbackConfig", "FeedbackRoles", "feedback_roles"]

FEEDBACK_TASKS = frozenset({"auto", "classifier", "regressor"})
_INTEGER = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
_FLOAT = frozenset({"FP16", "FP32", "FP64"})


@dataclass(frozen=True)
class FeedbackConfig:
    """``[feedback]`` (see the module doc)."""

    SECTION: ClassVar[str] = "feedback"
    task: str = "auto"
    prediction: str = ""
    probabilities: str = ""
    label: str = ""
    max_rows: int = 1_000_000
    max_bytes: int = 256 * 1024 * 1024
    ttl_seconds: float = 7 * 24 * 3600.0
    window_rows: int = 1000
    window_seconds: float = 3600.0
    grace_seconds: float = 600.0
    min_effect: float = 0.05
    alpha: float = 0.05
    confidence: float = 0.95
    baseline_windows: int = 3
    consecutive: int = 2

    def __post_init__(self) -> None:
        k = "[feedback]."
        check_choice(k + "task", self.task, FEEDBACK_TASKS, ConfigError)
        for name in ("prediction", "probabilities", "label"):
            check_str(k + name, getattr(self, name), ConfigError)
        check_int(k + "max_rows", self.max_rows, ConfigError, minimum=1)
        check_int(k + "max_bytes", self.max_bytes, ConfigError, minimum=1024)
        check_int(k + "window_rows", self.window_rows, ConfigError, minimum=2)
        for name in ("ttl_seconds", "window_seconds"):
            _set(
                self,
                name,
                check_float(k + name, getattr(self, name), ConfigError, minimum=0.0, exclusive_minimum=True),
            )
        _set(
            self,
            "grace_seconds",
            check_float(k + "grace_seconds", self.grace_seconds, ConfigError, minimum=0.0),
        )
        _set(self, "min_effect", check_float(k + "min_effect", self.min_effect, ConfigError, minimum=0.0))
        for name in ("alpha", "confidence"):
            value = check_float(
                k + name, getattr(self, name), ConfigError, minimum=0.0, exclusive_minimum=True
            )
            if value >= 1.0:
                raise ConfigError(f"{k}{name}: must be < 1.0, got {value}")
            _set(self, name, value)
        check_int(k + "baseline_windows", self.baseline_windows, ConfigError, minimum=0, maximum=1000)
        check_int(k + "consecutive", self.consecutive, ConfigError, minimum=1)


@dataclass(frozen=True)
class FeedbackRoles:
    """The resolved roles of a version's tensors: ``task`` "classifier" or "regressor"; ``prediction``
    (the predicted label or value; None for a classifier that only has probabilities), ``probabilities``
    (None when absent), ``label`` (the ground-truth tensor's name in feedback) and ``classes`` (the
    probabilities' width, 0 when unknown)."""

    task: str
    prediction: str | None
    probabilities: str | None
    label: str
    classes: int


def _rows_only(spec: TensorSpec) -> bool:
    return len(spec.shape) == 1 or (len(spec.shape) == 2 and spec.shape[1] == 1)


def feedback_roles(config: FeedbackConfig, signature: Signature) -> FeedbackRoles:
    """Resolve ``config`` against ``signature`` (see the module doc); ConfigError naming the key when a
    named tensor is not a suitable output, or when no output can be a prediction."""
    outputs = {s.name: s for s in signature.outputs}

    def named(key: str, name: str, kinds: frozenset[str], rows_only: bool) -> TensorSpec | None:
        if not name:
            return None
        spec = outputs.get(name)
        if spec is None or spec.datatype not in kinds or (rows_only and not _rows_only(spec)):
            raise ConfigError(
                f"[feedback].{key}: {name!r} is not a suitable output (outputs: {sorted(outputs)})"
            )
        return spec

    proba = named("probabilities", config.probabilities, _FLOAT, False)
    if proba is not None and not (len(proba.shape) == 2 and proba.shape[1] > 1):
        raise ConfigError(f"[feedback].probabilities: {proba.name!r} must be [n, k] with a fixed k > 1")
    pred = named("prediction", config.prediction, _INTEGER | _FLOAT, True)
    if proba is None and config.task != "regressor":
        proba = next(
            (s for s in signature.outputs if s.datatype in _FLOAT and len(s.shape) == 2 and s.shape[1] > 1),
            None,
        )
    if pred is None:
        wanted = _FLOAT if config.task == "regressor" else _INTEGER
        pred = next((s for s in signature.outputs if s.datatype in wanted and _rows_only(s)), None)
        if pred is None and config.task == "auto" and proba is None:
            pred = next((s for s in signature.outputs if s.datatype in _FLOAT and _rows_only(s)), None)
    task = config.task
    if task == "auto":
        task = (
            "classifier"
            if proba is not None or (pred is not None and pred.datatype in _INTEGER)
            else "regressor"
        )
    if task == "regressor":
        proba = None
    if pred is None and proba is None:
        raise ConfigError(f"[feedback]: no output of {sorted(outputs)} can be a {task}'s prediction")
    if task == "regressor" and pred is None:
        raise ConfigError("[feedback]: a regressor needs a float output [n] or [n, 1]")
    label = config.label or (pred.name if pred is not None else "label")
    classes = int(proba.shape[1]) if proba is not None else 0
    return FeedbackRoles(task, pred.name if pred else None, proba.name if proba else None, label, classes)


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)
