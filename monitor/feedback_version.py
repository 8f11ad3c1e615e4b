"""What the feedback path holds for one model version: its tensor roles, quality windows and state.

This module owns the per-version rules of the join: which output of a sample is the prediction and
which the probabilities (:meth:`VersionFeedback.predictions`), what a ground-truth tensor must be
(:meth:`VersionFeedback.label`: named like ``[feedback].label`` or unnamed; the prediction's datatype
for a classifier with an integer prediction, INT64 for one with probabilities only, the prediction's
datatype for a regressor; shape [n] or [n, 1]; class labels in [0, classes) when the number of classes
is known), and the quality state shown in the ``quality`` block (windows, hysteresis, last result).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from monitor.calibration import Calibrator
from monitor.decisions import DriftTracker
from monitor.feedback_wire import WireTensor, as_wire, wire_array
from monitor.quality_baseline import WindowBaseline
from monitor.quality_windows import QualityWindows
from registry.feedback_config import FeedbackConfig, FeedbackRoles
from registry.signature import Signature

__all__ = ["LabelError", "VersionFeedback"]

F64 = npt.NDArray[np.float64]


class LabelError(ValueError):
    """A ground-truth or carried-prediction tensor refused: ``reason`` (``signature``, ``datatype``,
    ``shape``, ``value``) and the message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(eq=False)
class VersionFeedback:
    """One version's feedback state; ``validation`` holds its manifest's validation metrics."""

    model: str
    version: int
    signature: Signature
    config: FeedbackConfig
    roles: FeedbackRoles
    validation: dict[str, float]
    windows: QualityWindows = field(init=False)
    tracker: DriftTracker = field(init=False)
    last: dict[str, Any] | None = None
    #: The running CBPE estimate of the newest open window (``index`` and the estimate).
    running: dict[str, Any] | None = None
    window_baseline: WindowBaseline = field(default_factory=WindowBaseline)
    counts: dict[str, int] = field(default_factory=dict)
    reference_path: Path | None = None
    calibrator: Calibrator | None = None
    #: Why there is no calibrator (once it was looked for).
    calibrator_detail: str | None = None

    def __post_init__(self) -> None:
        self.windows = QualityWindows(self.config)
        self.tracker = DriftTracker(self.config.consecutive)
        pred = self.roles.prediction
        self.label_datatype = self.signature.output(pred).datatype if pred is not None else "INT64"

    @property
    def classifier(self) -> bool:
        return self.roles.task == "classifier"

    def predictions(
        self, tensors: dict[tuple[str, str], npt.NDArray[Any]], rows: int
    ) -> tuple[F64, npt.NDArray[np.float32] | None] | None:
        """Per-row prediction (float64) and probabilities of a validated sample's outputs (NaN rows when
        a model with probabilities did not return them for this request); None when the sample has
        neither."""
        proba = tensors.get(("output", self.roles.probabilities)) if self.roles.probabilities else None
        pred = tensors.get(("output", self.roles.prediction)) if self.roles.prediction else None
        if pred is None and proba is None:
            return None
        if proba is not None:
            p32 = proba.astype(np.float32, copy=False).reshape(rows, -1)
        elif self.roles.probabilities is not None:  # the request asked for some outputs only
            p32 = np.full((rows, self.roles.classes), np.nan, np.float32)
        else:
            p32 = None
        if pred is None:
            assert p32 is not None
            return np.argmax(p32, axis=1).astype(np.float64), p32
        return pred.reshape(rows).astype(np.float64), p32

    def label(self, given: Sequence[Any], rows: int) -> F64:
        """The ground truth of a request with ``rows`` stored rows (its first rows when the label has
        more: the sampler keeps a request's first rows); LabelError saying why it is refused."""
        tensors = [as_wire(t) for t in given]
        found = [t for t in tensors if t.name in ("", self.roles.label)]
        if len(found) != 1:
            raise LabelError(
                "signature", f"expected one label tensor named {self.roles.label!r} (or unnamed)"
            )
        try:
            array = wire_array(found[0], self.label_datatype)
        except TypeError as exc:
            raise LabelError("datatype", f"label {self.roles.label!r}: {exc}") from None
        except ValueError as exc:
            raise LabelError("shape", f"label {self.roles.label!r}: {exc}") from None
        if array.ndim == 0:
            array = array.reshape(1)
        if not (array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1)) or len(array) < rows:
            raise LabelError(
                "shape",
                f"label {self.roles.label!r}: shape {list(array.shape)}, expected [{rows}] or [{rows}, 1]",
            )
        values = array.reshape(-1)[:rows].astype(np.float64)
        if not np.isfinite(values).all():
            raise LabelError("value", f"label {self.roles.label!r}: not finite")
        classes = self.roles.classes
        if self.classifier and classes and ((values < 0) | (values >= classes)).any():
            raise LabelError("value", f"label {self.roles.label!r}: class outside [0, {classes})")
        return values

    def carried(self, given: Sequence[Any]) -> tuple[F64, npt.NDArray[np.float32] | None, int]:
        """A prediction carried by a feedback item: (prediction, probabilities, rows); LabelError."""
        by_name: dict[str, WireTensor] = {t.name: t for t in map(as_wire, given)}
        arrays: dict[tuple[str, str], npt.NDArray[Any]] = {}
        for name in (self.roles.prediction, self.roles.probabilities):
            if name is None or name not in by_name:
                continue
            spec = self.signature.output(name)
            try:
                array = wire_array(by_name[name], spec.datatype)
            except TypeError as exc:
                raise LabelError("datatype", f"prediction {name!r}: {exc}") from None
            except ValueError as exc:
                raise LabelError("shape", f"prediction {name!r}: {exc}") from None
            fixed = all(s in (-1, d) for s, d in zip(spec.shape[1:], array.shape[1:], strict=False))
            if array.ndim != len(spec.shape) or not fixed or len(array) == 0:
                raise LabelError(
                    "shape", f"prediction {name!r}: shape {list(array.shape)}, expected {list(spec.shape)}"
                )
            arrays[("output", name)] = array
        rows = {len(a) for a in arrays.values()}
        if len(rows) != 1:
            names = [n for n in (self.roles.prediction, self.roles.probabilities) if n]
            raise LabelError(
                "signature", f"prediction: expected {' and/or '.join(map(repr, names))} with equal rows"
            )
        n = rows.pop()
        got = self.predictions(arrays, n)
        assert got is not None
        return got[0], got[1], n
