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

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from monitor.errors import SampleError
from protos import monitor_pb2
from registry.layout import MODEL_NAME_RE, parse_version
from registry.signature import DYNAMIC, Signature, TensorSpec, numpy_dtype

__all__ = ["DecodedSample", "parse_batch", "sample_key", "sample_rows"]


@dataclass(frozen=True)
class DecodedSample:
    """One validated sample: ``rows`` rows and its numeric tensors by ``(side, name)``."""

    model: str
    version: int
    rows: int
    tensors: dict[tuple[str, str], npt.NDArray[Any]]

    @classmethod
    def decode(cls, sample: monitor_pb2.Sample, signature: Signature, where: str) -> DecodedSample:
        """Validate ``sample`` against ``signature`` (see the module doc); ``where`` prefixes messages."""
        model, version = sample_key(sample, where)
        tensors: dict[tuple[str, str], npt.NDArray[Any]] = {}
        rows: set[int] = set()
        for side, given, specs in (
            ("input", sample.inputs, signature.inputs),
            ("output", sample.outputs, signature.outputs),
        ):
            by_name = {s.name: s for s in specs}
            seen: set[str] = set()
            for tensor in given:
                spec = by_name.get(tensor.name)
                label = f"{where}: {side} {tensor.name!r}"
                if spec is None:
                    raise SampleError(
                        "signature",
                        f"{label}: not in the signature of {model} v{version} (it has {sorted(by_name)})",
                    )
                if tensor.name in seen:
                    raise SampleError("signature", f"{label}: given twice")
                seen.add(tensor.name)
                array = _array(tensor, spec, label)
                rows.add(int(tensor.shape[0]))
                if array is not None:
                    tensors[(side, tensor.name)] = array
            missing = sorted(set(by_name) - seen) if side == "input" else []
            if missing:
                raise SampleError("signature", f"{where}: missing inputs {missing} of {model} v{version}")
        if len(rows) > 1:
            raise SampleError("shape", f"{where}: tensors disagree on the batch dimension: {sorted(rows)}")
        return cls(model, version, rows.pop() if rows else 0, tensors)


def parse_batch(data: bytes) -> monitor_pb2.SampleBatch:
    """Parse a SampleBatch; SampleError("malformed") if ``data`` is not one."""
    batch = monitor_pb2.SampleBatch()
    try:
        batch.ParseFromString(data)
    except Exception as exc:  # DecodeError, and invalid UTF-8 in string fields, depending on the runtime
        raise SampleError("malformed", f"body is not a monitor.proto SampleBatch: {exc}") from None
    return batch


def sample_key(sample: monitor_pb2.Sample, where: str) -> tuple[str, int]:
    """``(model, version)`` of a sample; SampleError("unknown_model") if they cannot name one."""
    version = parse_version(sample.version)
    if not MODEL_NAME_RE.fullmatch(sample.model):
        raise SampleError("unknown_model", f"{where}: {sample.model!r} is not a model name")
    if version is None:
        raise SampleError("unknown_version", f"{where}: version {sample.version!r} is not a positive integer")
    return sample.model, version


def sample_rows(sample: monitor_pb2.Sample) -> int:
    """Best-effort row count of a (possibly invalid) sample, for counting rejected rows."""
    for tensor in (*sample.inputs, *sample.outputs):
        if tensor.shape and tensor.shape[0] > 0:
            return int(tensor.shape[0])
    return 0


def _array(tensor: monitor_pb2.Tensor, spec: TensorSpec, label: str) -> npt.NDArray[Any] | None:
    if tensor.datatype != spec.datatype:
        raise SampleError("datatype", f"{label}: datatype {tensor.datatype!r}, expected {spec.datatype}")
    shape = tuple(int(d) for d in tensor.shape)
    fits = len(shape) == len(spec.shape) > 0 and all(d >= 0 for d in shape)
    if not fits or any(s not in (DYNAMIC, d) for s, d in zip(spec.shape[1:], shape[1:], strict=False)):
        raise SampleError("shape", f"{label}: shape {list(shape)}, expected {list(spec.shape)} (-1: any)")
    if spec.datatype == "BYTES":
        return None
    dtype = numpy_dtype(spec.datatype).newbyteorder("<")
    expected = math.prod(shape) * dtype.itemsize
    if len(tensor.raw) != expected:
        raise SampleError(
            "shape",
            f"{label}: raw holds {len(tensor.raw)} bytes, shape {list(shape)} "
            f"of {spec.datatype} needs {expected}",
        )
    return np.frombuffer(tensor.raw, dtype=dtype).reshape(shape)
