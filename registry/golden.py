"""The golden check: does a version still compute the outputs it shipped as expected?

This module owns ``golden.npz`` as a check (DESIGN.md §4, issue 5's load sequence): :func:`load_golden`
reads it (never with pickles) and validates it against the version's signature, :func:`golden_mismatches`
compares outputs from any runtime with the expected ones, and :func:`run_reference` computes outputs with
the ``onnx`` package's pure-Python ``ReferenceEvaluator``, so that ``infergate-registry verify`` runs the
check without onnxruntime. The gateway calls the first two with onnxruntime's outputs.

Comparison rules: float outputs match when ``|actual - expected| <= atol + rtol * |expected|``
(``numpy.isclose``), NaN equal to NaN and an infinity equal to itself; integer, bool and string outputs
must be equal exactly (bytes and str compare as UTF-8 text). Only the kind of dtype must agree (float32
against float64 is compared; float against integer is a mismatch).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx

from registry.artifacts import INPUT_PREFIX, OUTPUT_PREFIX, check_arrays, read_npz
from registry.checks import check_float
from registry.errors import GoldenError, NotFoundError, PublishError
from registry.signature import Signature

__all__ = ["GOLDEN_ATOL", "GOLDEN_RTOL", "golden_mismatches", "load_golden", "run_reference"]

GOLDEN_RTOL = 1e-4
GOLDEN_ATOL = 1e-5

Arrays = dict[str, npt.NDArray[Any]]

_KINDS = {
    "f": "float",
    "i": "integer",
    "u": "integer",
    "b": "bool",
    "S": "string",
    "U": "string",
    "O": "string",
}


def load_golden(path: Path, signature: Signature) -> tuple[Arrays, Arrays]:
    """``(inputs, expected_outputs)`` of ``golden.npz`` at ``path``, each keyed by tensor name.

    The file's keys are ``input:<tensor>`` and ``output:<tensor>``; every input and every output of
    ``signature`` must be present, with the signature's dtype and non-batch dimensions and one row count
    (the rules of :func:`registry.artifacts.check_arrays`). BYTES tensors come back as the stored numpy
    ``S``/``U`` arrays. NotFoundError if there is no file; GoldenError naming the file and key otherwise.
    """
    arrays = read_npz(path, GoldenError)
    try:
        check_arrays(arrays, signature, require_outputs=True)
    except PublishError as exc:
        raise GoldenError(f"{path}: {exc}") from None
    inputs = {spec.name: arrays[INPUT_PREFIX + spec.name] for spec in signature.inputs}
    outputs = {spec.name: arrays[OUTPUT_PREFIX + spec.name] for spec in signature.outputs}
    return inputs, outputs


def golden_mismatches(
    expected: Mapping[str, npt.NDArray[Any]],
    actual: Mapping[str, npt.NDArray[Any]],
    *,
    rtol: float = GOLDEN_RTOL,
    atol: float = GOLDEN_ATOL,
) -> list[str]:
    """One line per expected output that ``actual`` does not match; empty when all match.

    A line names the output and says why: missing, a different shape, a different dtype kind, or how
    many elements differ (with the largest absolute error for numbers). Outputs in ``actual`` that are
    not expected are ignored. GoldenError if ``rtol`` or ``atol`` is negative or not finite.
    """
    rtol = check_float("rtol", rtol, GoldenError, minimum=0.0)
    atol = check_float("atol", atol, GoldenError, minimum=0.0)
    problems: list[str] = []
    for name, want in expected.items():
        if name not in actual:
            problems.append(f"output {name!r}: missing from the outputs")
            continue
        problem = _compare(np.asarray(want), np.asarray(actual[name]), rtol, atol)
        if problem is not None:
            problems.append(f"output {name!r}: {problem}")
    return problems


def _compare(want: npt.NDArray[Any], got: npt.NDArray[Any], rtol: float, atol: float) -> str | None:
    if got.shape != want.shape:
        return f"shape {list(got.shape)}, expected {list(want.shape)}"
    kind_want = _KINDS.get(want.dtype.kind, want.dtype.kind)
    kind_got = _KINDS.get(got.dtype.kind, got.dtype.kind)
    if kind_got != kind_want:
        return f"dtype {got.dtype} ({kind_got}), expected {want.dtype} ({kind_want})"
    total = want.size
    if kind_want == "float":
        a, e = got.astype(np.float64), want.astype(np.float64)
        with np.errstate(all="ignore"):
            close = np.isclose(a, e, rtol=rtol, atol=atol, equal_nan=True)
            bad = int(np.count_nonzero(~close))
            if not bad:
                return None
            error = np.abs(a - e)[~close]
        finite = error[np.isfinite(error)]
        detail = f"max abs error {float(finite.max()):.6g}" if finite.size else "no finite error"
        if finite.size < bad:
            detail += f", {bad - finite.size} NaN or infinite mismatches"
        return f"{bad} of {total} elements differ beyond rtol={rtol:g}, atol={atol:g} ({detail})"
    if kind_want == "string":
        differ = np.asarray(_text(got)) != np.asarray(_text(want))
    else:
        differ = np.asarray(got != want)
    bad = int(np.count_nonzero(differ))
    if not bad:
        return None
    message = f"{bad} of {total} elements differ (exact match required)"
    if kind_want == "integer":
        error = np.abs(got.astype(np.float64) - want.astype(np.float64))
        message += f" (max abs error {float(error.max()):.6g})"
    return message


def _text(array: npt.NDArray[Any]) -> list[str]:
    """Every element as text: bytes decoded as UTF-8 (undecodable bytes kept by surrogate escapes)."""
    return [
        v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v)
        for v in array.ravel().tolist()
    ]


def run_reference(onnx_path: Path, inputs: Mapping[str, npt.NDArray[Any]]) -> Arrays:
    """Run the model at ``onnx_path`` on ``inputs`` with ``onnx.reference.ReferenceEvaluator``.

    Returns every graph output by name, in graph order. ``S``/``U`` arrays are fed as object arrays of
    ``str`` (what ONNX string tensors hold). The evaluator interprets the graph's standard operators in
    Python (slow, but needs no onnxruntime); nothing in the file is executed as code. NotFoundError if
    there is no file; GoldenError if it is not a readable model, an input is missing or unknown, or the
    evaluation fails.
    """
    from onnx.reference import ReferenceEvaluator  # imported here: heavy, and only verify needs it

    if not onnx_path.is_file():
        raise NotFoundError(f"{onnx_path}: no such ONNX file")
    try:
        model = onnx.load(str(onnx_path))
    except Exception as exc:  # protobuf DecodeError and friends
        raise GoldenError(f"{onnx_path}: not a readable ONNX model: {exc}") from None
    try:
        evaluator = ReferenceEvaluator(model)
    except Exception as exc:
        raise GoldenError(f"{onnx_path}: the reference evaluator cannot run this model: {exc}") from None
    wanted = list(evaluator.input_names)
    missing = [n for n in wanted if n not in inputs]
    unknown = [n for n in inputs if n not in wanted]
    if missing or unknown:
        raise GoldenError(f"{onnx_path}: inputs missing {missing}, unknown {unknown} (model has {wanted})")
    feeds = {name: _feed(np.asarray(inputs[name])) for name in wanted}
    try:
        results = evaluator.run(None, feeds)
    except Exception as exc:
        raise GoldenError(f"{onnx_path}: reference evaluation failed: {type(exc).__name__}: {exc}") from None
    return {name: np.asarray(value) for name, value in zip(evaluator.output_names, results, strict=True)}


def _feed(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    if array.dtype.kind in "SU":
        return np.asarray(_text(array), dtype=object).reshape(array.shape)
    return array
