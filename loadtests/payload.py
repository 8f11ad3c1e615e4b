"""Request payloads: input rows from a registry reference sample, an ``.npz`` file or random data, each
serialized once into ``ModelInferRequest`` bytes.

Contracts:

* :func:`fetch_metadata` asks the target for ``ModelMetadata`` (input names, datatypes and shapes);
  every source is checked against it, so a payload the server would reject fails here with a message.
  A server still refusing a previous step's backlog (CANCELLED, UNAVAILABLE, RESOURCE_EXHAUSTED) is
  asked again until the call's timeout.
* Sources: ``reference`` reads ``<registry>/<model>/<version>/reference.npz`` (keys ``input:<name>``;
  version = ``--version``, else the pin, else the highest READY one); ``npz`` reads keys ``<name>`` or
  ``input:<name>``; ``random`` draws from ModelMetadata (normal floats, small ints, short strings).
* The leading dim is the batch dim when it is dynamic (-1): each payload carries ``rows`` rows (payload k
  takes rows ``k*rows ...`` of the source, wrapping around). Other dynamic dims become 1 for random data.
  A model without a dynamic leading dim is sent its declared shape and counts as 1 row per request.
* ``timeout`` (int64 µs) and ``priority`` (int64) are set as request parameters when given. The request
  has no ``id``: streaming adds one per slot (see :mod:`loadtests.stream`).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from protos import inference_pb2 as pb
from registry.layout import default_version, scan_model
from registry.signature import numpy_dtype

__all__ = ["InputSpec", "Payloads", "build_payloads", "fetch_metadata", "load_rows"]

_METADATA = "/inference.GRPCInferenceService/ModelMetadata"


@dataclass(frozen=True)
class InputSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Payloads:
    """Serialized requests and the rows each one carries."""

    requests: tuple[bytes, ...]
    rows: int
    source: str


#: Codes a server answers while it is still working off a backlog (a previous overload step): gRPC core's
#: refusal past its pending limit, the transport's refused stream, the server's own overload refusal.
_BUSY = (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)


def fetch_metadata(
    channel: grpc.Channel, model: str, version: str, timeout_s: float = 10.0, retry_s: float = 0.2
) -> list[InputSpec]:
    """The model's inputs as the target describes them. A busy refusal (:data:`_BUSY`) is retried every
    ``retry_s`` until ``timeout_s`` has passed (monotonic clock), then raised; any other error (e.g.
    NOT_FOUND) is raised at once (grpc.RpcError)."""
    call = channel.unary_unary(
        _METADATA,
        request_serializer=pb.ModelMetadataRequest.SerializeToString,
        response_deserializer=pb.ModelMetadataResponse.FromString,
    )
    give_up = time.monotonic() + timeout_s
    while True:
        left = give_up - time.monotonic()
        try:
            response = call(pb.ModelMetadataRequest(name=model, version=version), timeout=max(left, 0.01))
            break
        except grpc.RpcError as error:
            if error.code() not in _BUSY or time.monotonic() + retry_s >= give_up:
                raise
            time.sleep(retry_s)
    return [InputSpec(t.name, t.datatype, tuple(int(d) for d in t.shape)) for t in response.inputs]


def load_rows(
    inputs: list[InputSpec],
    source: str,
    *,
    registry: Path | None,
    npz: Path | None,
    model: str,
    version: str,
    rows: int,
    seed: int,
) -> dict[str, npt.NDArray[Any]]:
    """The source's arrays by input name (at least ``rows`` rows when batchable)."""
    if source == "random":
        rng = np.random.default_rng(seed)
        return {spec.name: _random(spec, max(rows, 1) * 16, rng) for spec in inputs}
    if source == "reference":
        if registry is None:
            raise ValueError("--input reference needs --registry")
        info = scan_model(registry / model)
        chosen = int(version) if version else default_version(info, info.versions)
        if chosen is None:
            raise ValueError(f"{registry / model}: no READY version")
        path = info.version(chosen).reference_path
    else:
        if npz is None:
            raise ValueError("--input npz needs --npz FILE")
        path = npz
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    out = {}
    for spec in inputs:
        found = arrays.get(f"input:{spec.name}", arrays.get(spec.name))
        if found is None:
            raise ValueError(f"{path}: no array for input {spec.name!r} (keys {sorted(arrays)})")
        out[spec.name] = found
    return out


def build_payloads(
    model: str,
    version: str,
    inputs: list[InputSpec],
    arrays: Mapping[str, npt.NDArray[Any]],
    *,
    rows: int,
    count: int = 1,
    timeout_us: int | None = None,
    priority: int | None = None,
    source: str = "",
) -> Payloads:
    """``count`` serialized requests of ``rows`` rows each (see the module contract)."""
    batchable = all(spec.shape and spec.shape[0] == -1 for spec in inputs)
    requests = []
    for k in range(count):
        request = pb.ModelInferRequest(model_name=model, model_version=version)
        if timeout_us is not None:
            request.parameters["timeout"].int64_param = timeout_us
        if priority is not None:
            request.parameters["priority"].int64_param = priority
        for spec in inputs:
            array = np.asarray(arrays[spec.name])
            if batchable:
                index = (np.arange(rows) + k * rows) % max(len(array), 1)
                array = array[index]
            array = array.astype(numpy_dtype(spec.datatype), copy=False)
            _check_shape(spec, array.shape)
            request.inputs.add(name=spec.name, datatype=spec.datatype, shape=list(array.shape))
            request.raw_input_contents.append(_encode(array, spec.datatype))
        requests.append(request.SerializeToString())
    return Payloads(tuple(requests), rows if batchable else 1, source)


def _random(spec: InputSpec, rows: int, rng: np.random.Generator) -> npt.NDArray[Any]:
    shape = [d if d >= 0 else 1 for d in spec.shape]
    if spec.shape and spec.shape[0] == -1:
        shape[0] = rows
    dtype = numpy_dtype(spec.datatype)
    if spec.datatype == "BYTES":
        return np.array([f"s{i}" for i in rng.integers(0, 100, size=shape).ravel()], dtype=object).reshape(
            shape
        )
    if spec.datatype == "BOOL":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.kind in "iu":
        return rng.integers(0, 10, size=shape).astype(dtype)
    return rng.normal(size=shape).astype(dtype)


def _check_shape(spec: InputSpec, shape: tuple[int, ...]) -> None:
    ok = len(shape) == len(spec.shape) and all(d in (-1, s) for d, s in zip(spec.shape, shape, strict=True))
    if not ok:
        raise ValueError(
            f"input {spec.name!r}: data has shape {list(shape)}, the model expects {list(spec.shape)}"
        )


def _encode(array: npt.NDArray[Any], datatype: str) -> bytes:
    if datatype != "BYTES":
        return np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    parts = []
    for item in array.ravel():
        data = item if isinstance(item, bytes) else str(item).encode()
        parts.append(struct.pack("<I", len(data)) + data)
    return b"".join(parts)
