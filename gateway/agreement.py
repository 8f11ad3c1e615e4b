"""Output agreement between a candidate version and the stable version on the same request (rollout gate).

Pure numpy, vectorised over rows. :func:`agreement_kind` chooses how one output is compared, from the
``[rollout]`` setting, the output's V2 datatype and its name:

* "label": integer and boolean outputs compare by equality of the whole row; float outputs whose name
  says they are class scores (``prob``, ``score``, ``logit``, ``softmax``) compare by the argmax of the
  row (the predicted label).
* "relative": float outputs compare element-wise, ``|a - b| <= tolerance * max(|b|, 1e-6)``; a row
  agrees when every element does (NaN agrees only with NaN).
* BYTES outputs compare by equality.

:func:`agreeing_rows` returns (rows compared, rows agreeing) for one pair of arrays, :func:`agreeing_mask`
the per-row verdicts (a batch of mirrored requests is compared at once, then counted per request).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["SCORE_NAMES", "agreeing_mask", "agreeing_rows", "agreement_kind"]

#: Name fragments of float outputs that hold per-class scores (compared by argmax in "auto").
SCORE_NAMES = ("prob", "score", "logit", "softmax")
_FLOATS = ("FP16", "FP32", "FP64")


def agreement_kind(setting: str, datatype: str, name: str) -> str:
    """ "label", "argmax", "relative" or "equal" for an output, given ``[rollout].agreement``."""
    if datatype not in _FLOATS:
        return "equal"
    if setting == "relative":
        return "relative"
    if setting == "label" or any(part in name.lower() for part in SCORE_NAMES):
        return "argmax"
    return "relative"


def agreeing_rows(
    kind: str, candidate: npt.NDArray[Any], stable: npt.NDArray[Any], tolerance: float
) -> tuple[int, int]:
    """(rows compared, rows that agree); shapes that differ disagree on every row of the stable output."""
    agree = agreeing_mask(kind, candidate, stable, tolerance)
    return len(agree), int(np.count_nonzero(agree))


def agreeing_mask(
    kind: str, candidate: npt.NDArray[Any], stable: npt.NDArray[Any], tolerance: float
) -> npt.NDArray[np.bool_]:
    """Per row of ``stable``, whether the candidate agrees (all False when the shapes differ)."""
    rows = int(stable.shape[0]) if stable.ndim else 1
    if candidate.shape != stable.shape:
        return np.zeros(rows, dtype=bool)
    if stable.ndim == 0:
        candidate, stable = candidate.reshape(1), stable.reshape(1)
    a = candidate.reshape(rows, -1)
    b = stable.reshape(rows, -1)
    if kind == "argmax":
        if a.shape[1] == 0:
            return np.ones(rows, dtype=bool)
        same: npt.NDArray[np.bool_] = np.argmax(a, axis=1) == np.argmax(b, axis=1)
        return same
    if kind == "relative":
        a64 = a.astype(np.float64, copy=False)
        b64 = b.astype(np.float64, copy=False)
        with np.errstate(invalid="ignore"):
            close = np.abs(a64 - b64) <= tolerance * np.maximum(np.abs(b64), 1e-6)
        close |= np.isnan(a64) & np.isnan(b64)
        close |= np.isinf(a64) & (a64 == b64)
        return np.asarray(close.all(axis=1), dtype=bool)
    equal: npt.NDArray[np.bool_] = (a == b).all(axis=1)
    return equal
