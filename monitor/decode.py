"""Sample decoding: from ``monitor.proto`` bytes to validated numpy tensors.

This module owns the monitor's edge of the data path (DESIGN.md §3): a ``SampleBatch`` arrives as a POST
body or a WebSocket binary frame; every sample in it names a model and a version (a decimal string) and
carries its input and output tensors (V2 datatype names, row-major little-endian ``raw`` bytes).

A sample is accepted only if every one of its tensors is in the version's signature with the same
datatype and rank, fixed dimensions match, all tensors share the batch dimension, each ``raw`` holds
exactly ``prod(shape) * itemsize`` bytes, no tensor appears twice, and every signature input is present
(outputs are optional). Anything else raises :class:`~monitor.errors.SampleError` naming the sample and
the tensor. Arrays are zero-copy views of the message's bytes. BYTES tensors are checked for presence
and rank only: they carry no numeric features.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from monitor.errors import SampleError
from protos import monitor_pb2
from registry.layout import MODEL_NAME_RE, parse_version
from registry.signature import DYNAMIC, Signature, TensorSpec, numpy_dtype, per_signature

__all__ = ["DecodedSample", "parse_batch", "sample_key", "sample_rows"]


@dataclass(frozen=True)
class DecodedSample:
    """One validated sample: ``rows`` rows and its numeric tensors by ``(side, name)``."""

    model: str
    version: int
    rows: int
    tensors: dict[tuple[str, str], npt.NDArray[Any]]

    @classmethod
    def decode(cls, sample: monitor_pb2.Sample, signature: Signature, where: str | int) -> DecodedSample:
        """Validate ``sample`` against ``signature`` (see the module doc); ``where`` prefixes messages (an
        int ``i`` reads "sample i"; messages are built only when a check fails)."""
        model, version = sample_key(sample, where)
        plan = _plan(signature)
        tensors: dict[tuple[str, str], npt.NDArray[Any]] = {}
        rows: set[int] = set()
        for side, given, by_name in (
            ("input", sample.inputs, plan.inputs),
            ("output", sample.outputs, plan.outputs),
        ):
            seen: set[str] = set()
            for tensor in given:
                name = tensor.name
                spec = by_name.get(name)
                if spec is None:
                    raise SampleError(
                        "signature",
                        f"{_label(where, side, name)}: not in the signature of {model} v{version} "
                        f"(it has {sorted(by_name)})",
                    )
                if name in seen:
                    raise SampleError("signature", f"{_label(where, side, name)}: given twice")
                seen.add(name)
                array, count = _array(tensor, spec, where, side)
                rows.add(count)
                if array is not None:
                    tensors[(side, name)] = array
            if side == "input" and len(seen) < len(by_name):
                missing = sorted(set(by_name) - seen)
                raise SampleError(
                    "signature", f"{_where(where)}: missing inputs {missing} of {model} v{version}"
                )
        if len(rows) > 1:
            raise SampleError(
                "shape", f"{_where(where)}: tensors disagree on the batch dimension: {sorted(rows)}"
            )
        return cls(model, version, rows.pop() if rows else 0, tensors)


@dataclass(frozen=True)
class _Plan:
    """A signature's tensor specs by name, per side, derived once."""

    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]


_plan = per_signature(
    lambda signature: _Plan({s.name: s for s in signature.inputs}, {s.name: s for s in signature.outputs})
)


def _where(where: str | int) -> str:
    return f"sample {where}" if isinstance(where, int) else where


def _label(where: str | int, side: str, name: str) -> str:
    return f"{_where(where)}: {side} {name!r}"


def parse_batch(data: bytes) -> monitor_pb2.SampleBatch:
    """Parse a SampleBatch; SampleError("malformed") if ``data`` is not one."""
    batch = monitor_pb2.SampleBatch()
    try:
        batch.ParseFromString(data)
    except Exception as exc:  # DecodeError, and invalid UTF-8 in string fields, depending on the runtime
        raise SampleError("malformed", f"body is not a monitor.proto SampleBatch: {exc}") from None
    return batch


def sample_key(sample: monitor_pb2.Sample, where: str | int) -> tuple[str, int]:
    """``(model, version)`` of a sample; SampleError("unknown_model") if they cannot name one."""
    model, text = sample.model, sample.version
    known = _KEYS.get((model, text))
    if known is not None:
        return known
    version = parse_version(text)
    if not MODEL_NAME_RE.fullmatch(model):
        raise SampleError("unknown_model", f"{_where(where)}: {model!r} is not a model name")
    if version is None:
        raise SampleError("unknown_version", f"{_where(where)}: version {text!r} is not a positive integer")
    if len(_KEYS) > 4096:  # names come from clients: never grow without bound
        _KEYS.clear()
    _KEYS[(model, text)] = (model, version)
    return model, version


#: Valid (model, version text) pairs already parsed: a batch's samples mostly repeat one or two.
_KEYS: dict[tuple[str, str], tuple[str, int]] = {}


def sample_rows(sample: monitor_pb2.Sample) -> int:
    """Best-effort row count of a (possibly invalid) sample, for counting rejected rows."""
    for tensor in (*sample.inputs, *sample.outputs):
        if tensor.shape and tensor.shape[0] > 0:
            return int(tensor.shape[0])
    return 0


def _array(
    tensor: monitor_pb2.Tensor, spec: TensorSpec, where: str | int, side: str
) -> tuple[npt.NDArray[Any] | None, int]:
    """The tensor as a zero-copy array (None for BYTES) and its row count, or SampleError."""
    if tensor.datatype != spec.datatype:
        raise SampleError(
            "datatype",
            f"{_label(where, side, tensor.name)}: datatype {tensor.datatype!r}, expected {spec.datatype}",
        )
    shape = tuple(tensor.shape)
    want = spec.shape
    if (
        len(shape) != len(want)
        or not want
        or min(shape) < 0
        or any(s != DYNAMIC and s != d for s, d in zip(want[1:], shape[1:], strict=False))
    ):
        raise SampleError(
            "shape",
            f"{_label(where, side, tensor.name)}: shape {list(shape)}, expected {list(want)} (-1: any)",
        )
    if spec.datatype == "BYTES":
        return None, shape[0]
    dtype = _dtype(spec.datatype)
    expected = math.prod(shape) * dtype.itemsize
    raw = tensor.raw
    if len(raw) != expected:
        raise SampleError(
            "shape",
            f"{_label(where, side, tensor.name)}: raw holds {len(raw)} bytes, shape {list(shape)} "
            f"of {spec.datatype} needs {expected}",
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape), shape[0]


@functools.cache
def _dtype(datatype: str) -> np.dtype[Any]:
    """The little-endian numpy dtype of a numeric V2 datatype."""
    return numpy_dtype(datatype).newbyteorder("<")
