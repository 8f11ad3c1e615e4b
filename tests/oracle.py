"""Independent references for the gateway tests: in-process onnxruntime and V2 sample data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from registry.layout import version_info

#: V2 datatype -> numpy dtype used by tritonclient.
NP_TYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}


def run_reference(
    registry: Path, model: str, version: int, feeds: dict[str, npt.NDArray[Any]]
) -> dict[str, npt.NDArray[Any]]:
    """Runs the published model.onnx in a fresh in-process session (BYTES in/out as UTF-8 bytes)."""
    path = version_info(registry, model, version).onnx_path
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ort_feeds = {name: _to_ort(array) for name, array in feeds.items()}
    names = [o.name for o in session.get_outputs()]
    outputs = session.run(names, ort_feeds)
    return {name: _from_ort(array) for name, array in zip(names, outputs, strict=True)}


def sample(datatype: str, shape: tuple[int, ...], rng: np.random.Generator) -> npt.NDArray[Any]:
    """Random data of a V2 datatype, spanning the type's range (halved for Add to stay in range)."""
    dtype = NP_TYPES[datatype]
    if datatype == "BOOL":
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if datatype == "BYTES":
        words = [
            bytes(rng.integers(97, 123, size=int(n)).astype(np.uint8))
            for n in rng.integers(0, 9, size=shape).flat
        ]
        return np.array(words, dtype=np.object_).reshape(shape)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        low, high = max(int(info.min) // 2, -(2**62)), min(int(info.max) // 2, 2**62)
        return rng.integers(low, high, size=shape, endpoint=True).astype(dtype)
    return (rng.normal(size=shape) * 100).astype(dtype)


def assert_bitwise_equal(actual: npt.NDArray[Any], expected: npt.NDArray[Any]) -> None:
    """Same dtype, same shape, same bytes (NaN payloads included); BYTES compared element-wise."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if expected.dtype == np.object_:
        assert actual.dtype == np.object_
        assert actual.tolist() == expected.tolist()
        return
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.tobytes() == expected.tobytes()


def _to_ort(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    if array.dtype == np.object_:
        decoded = np.empty(array.shape, dtype=object)
        decoded.flat[:] = [item.decode("utf-8") for item in array.flat]
        return decoded
    return array


def _from_ort(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    if array.dtype == np.object_:
        encoded = np.empty(array.shape, dtype=object)
        encoded.flat[:] = [str(item).encode("utf-8") for item in array.flat]
        return encoded
    return array
