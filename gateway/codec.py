"""Tensor codec: V2 wire tensors <-> numpy arrays (the decode and encode stages of the data path).

Contracts:
- ``raw`` tensors are row-major little-endian; numeric tensors become zero-copy ``np.frombuffer`` views
  over the request bytes (read-only); their byte length must equal prod(shape) x itemsize.
- BYTES elements carry a 4-byte little-endian length prefix each; they decode to an object array of
  ``str``, because ONNX string tensors are UTF-8 text (onnxruntime would stringify ``bytes`` objects as
  ``"b'..'"``). Invalid UTF-8 is refused. That decoder walks elements one by one, as variable-length
  data requires.
- FP16 has no typed ``contents`` field in the protocol, so it travels only as raw bytes.
- Every failure raises :class:`InvalidArgumentError` naming the tensor and what was expected.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from gateway.errors import InvalidArgumentError
from registry.signature import V2_DATATYPES, numpy_dtype

#: V2 datatype name -> numpy dtype, explicitly little-endian (the wire order); BYTES -> object.
NUMPY_DTYPES: Final[dict[str, np.dtype[Any]]] = {
    name: numpy_dtype(name).newbyteorder("<") if name != "BYTES" else numpy_dtype(name)
    for name in V2_DATATYPES
}

#: V2 datatype -> the InferTensorContents field that carries it (None: raw only).
CONTENTS_FIELD: Final[dict[str, str | None]] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP16": None,
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

ALL_CONTENTS_FIELDS: Final[tuple[str, ...]] = (
    "bool_contents",
    "int_contents",
    "int64_contents",
    "uint_contents",
    "uint64_contents",
    "fp32_contents",
    "fp64_contents",
    "bytes_contents",
)

_LENGTH_PREFIX = struct.Struct("<I")


def element_count(shape: Sequence[int]) -> int:
    """prod(shape) as an exact Python int (no int64 overflow)."""
    return math.prod(int(d) for d in shape)


def decode_raw(name: str, datatype: str, shape: Sequence[int], raw: bytes) -> npt.NDArray[Any]:
    """Decodes one raw tensor. Numeric data becomes a read-only view over ``raw``."""
    count = element_count(shape)
    if datatype == "BYTES":
        return decode_bytes(name, raw, count).reshape(tuple(shape))
    dtype = NUMPY_DTYPES[datatype]
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise InvalidArgumentError(
            f"input '{name}': raw content is {len(raw)} bytes, expected {expected} "
            f"(shape {list(shape)} x {dtype.itemsize} bytes per {datatype})"
        )
    array = np.frombuffer(raw, dtype=dtype).reshape(tuple(shape))
    if datatype == "BOOL" and count and np.any(array.view(np.uint8) > 1):
        raise InvalidArgumentError(f"input '{name}': BOOL bytes must be 0 or 1")
    return array


def decode_bytes(name: str, raw: bytes, count: int) -> npt.NDArray[np.object_]:
    """Splits length-prefixed BYTES elements into UTF-8 strings; the buffer holds exactly ``count``."""
    out = np.empty(count, dtype=object)
    view = memoryview(raw)
    end = len(raw)
    pos = 0
    for index in range(count):
        if pos + 4 > end:
            raise InvalidArgumentError(
                f"input '{name}': BYTES element {index} has a truncated 4-byte length prefix "
                f"(expected {count} elements)"
            )
        (length,) = _LENGTH_PREFIX.unpack_from(view, pos)
        pos += 4
        if pos + length > end:
            raise InvalidArgumentError(
                f"input '{name}': BYTES element {index} declares {length} bytes but only {end - pos} remain"
            )
        out[index] = _utf8(name, index, view[pos : pos + length])
        pos += length
    if pos != end:
        raise InvalidArgumentError(f"input '{name}': {end - pos} trailing bytes after {count} BYTES elements")
    return out


def _utf8(name: str, index: int, data: bytes | memoryview) -> str:
    try:
        return str(data, "utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgumentError(
            f"input '{name}': BYTES element {index} is not valid UTF-8 ({exc.reason})"
        ) from None


def decode_contents(name: str, datatype: str, shape: Sequence[int], contents: Any) -> npt.NDArray[Any]:
    """Decodes typed ``InferTensorContents``; exactly the field matching ``datatype`` may be set."""
    field = CONTENTS_FIELD[datatype]
    if field is None:
        raise InvalidArgumentError(
            f"input '{name}': {datatype} has no typed contents field; send it in raw_input_contents"
        )
    for other in ALL_CONTENTS_FIELDS:
        if other != field and len(getattr(contents, other)):
            raise InvalidArgumentError(
                f"input '{name}': {datatype} data belongs in contents.{field}, not {other}"
            )
    values = getattr(contents, field)
    count = element_count(shape)
    if len(values) != count:
        raise InvalidArgumentError(
            f"input '{name}': contents.{field} holds {len(values)} values, "
            f"expected {count} for shape {list(shape)}"
        )
    dtype = NUMPY_DTYPES[datatype]
    if datatype == "BYTES":
        out = np.empty(count, dtype=object)
        out[:] = [_utf8(name, index, value) for index, value in enumerate(values)]
        return out.reshape(tuple(shape))
    wide = np.asarray(values)
    if dtype.kind in "iu" and count:
        info = np.iinfo(dtype)
        if wide.min() < info.min or wide.max() > info.max:
            raise InvalidArgumentError(
                f"input '{name}': contents.{field} value out of range for {datatype} [{info.min}, {info.max}]"
            )
    return wide.astype(dtype, copy=False).reshape(tuple(shape))


def encode_array(array: npt.NDArray[Any], datatype: str) -> bytes:
    """Encodes an output array as raw V2 bytes (row-major little-endian, BYTES length-prefixed)."""
    if datatype == "BYTES":
        parts: list[bytes] = []
        for item in array.reshape(-1):
            data = item if isinstance(item, bytes) else str(item).encode("utf-8")
            parts.append(_LENGTH_PREFIX.pack(len(data)))
            parts.append(data)
        return b"".join(parts)
    dtype = NUMPY_DTYPES[datatype]
    if array.dtype == dtype:
        return array.tobytes()  # always row-major, whatever the array's own layout
    return np.ascontiguousarray(array, dtype=dtype).tobytes()
