"""Request validation: a ModelInferRequest is checked against the serving version's signature and decoded
into numpy feeds *before* it can reach a session or, later, join a batch.

Contract: :func:`decode_request` either returns feeds that onnxruntime accepts for this signature, or
raises :class:`InvalidArgumentError` whose message names the tensor and what was expected. It never
touches shared state, so a bad request cannot affect any other request.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.codec import ALL_CONTENTS_FIELDS, NUMPY_DTYPES, decode_contents, decode_raw
from gateway.errors import InvalidArgumentError
from protos import inference_pb2 as pb
from registry.signature import Signature, TensorSpec, per_signature

#: Requested-output parameters of the protocol that this server does not implement.
_UNSUPPORTED_OUTPUT_PARAMETERS = frozenset({"classification", "shared_memory_region"})
_UNSUPPORTED_INPUT_PARAMETERS = frozenset({"shared_memory_region"})


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~1 µs more, once per request
class DecodedRequest:
    """A validated request: feeds by input name, its row count, and the outputs to return, in order."""

    feeds: dict[str, npt.NDArray[Any]]
    rows: int
    output_names: tuple[str, ...]


def is_batchable(signature: Signature) -> bool:
    """A model batches along dim 0 when every input and output has a dynamic leading dim."""
    specs = (*signature.inputs, *signature.outputs)
    return all(spec.shape and spec.shape[0] == -1 for spec in specs)


@dataclass(frozen=True)
class RequestPlan:
    """What validation needs of a signature, derived once: specs by name, the names for messages, the
    default outputs, and for the fast path (:func:`_decode_fast`) each input's datatype, dtype and dims
    (None when a dim after the first is dynamic, or the input takes BOOL or BYTES)."""

    specs: dict[str, TensorSpec]
    expected_names: str
    outputs: tuple[str, ...]
    fast: dict[str, tuple[str, np.dtype[Any], int, int, list[int]] | None]


def _build_plan(signature: Signature) -> RequestPlan:
    specs = {spec.name: spec for spec in signature.inputs}
    return RequestPlan(
        specs,
        ", ".join(f"'{name}'" for name in specs),
        tuple(spec.name for spec in signature.outputs),
        {name: _fast_spec(spec) for name, spec in specs.items()},
    )


#: A signature's plan, derived once per signature object; a caller that keeps it (the data plane, per
#: loaded version) calls :func:`decode_planned` instead of :func:`decode_request`.
request_plan = per_signature(_build_plan)


def _fast_spec(spec: TensorSpec) -> tuple[str, np.dtype[Any], int, int, list[int]] | None:
    """(datatype, dtype, rank, first dim or -1, the other dims as a list: a request's dims slice to a
    list) of an input the fast path can take."""
    dtype = NUMPY_DTYPES.get(spec.datatype)
    tail = list(spec.shape[1:])
    if not spec.shape or dtype is None or spec.datatype == "BOOL" or any(d <= 0 for d in tail):
        return None
    return spec.datatype, dtype, len(spec.shape), spec.shape[0], tail


def _decode_fast(
    request: pb.ModelInferRequest, plan: RequestPlan, max_batch_size: int
) -> DecodedRequest | None:
    """The common well-formed request (every input once, numeric non-BOOL raw contents, the signature's
    dims after the first, no parameters, no typed contents), decoded with the checks that establish what
    the full path checks; None for anything else, and the full path then decides, with its messages."""
    inputs = request.inputs
    raws = request.raw_input_contents
    count = len(plan.specs)
    if not count or len(inputs) != count or len(raws) != count:
        return None
    feeds: dict[str, npt.NDArray[Any]] = {}
    rows = -1
    for index in range(count):  # indexing, not zip: iterating protobuf containers costs more
        tensor = inputs[index]
        name = tensor.name
        fast = plan.fast.get(name)
        if fast is None or name in feeds or tensor.datatype != fast[0] or tensor.parameters:
            return None
        if tensor.HasField("contents"):
            return None
        _, dtype, rank, head, tail = fast
        shape = tensor.shape[:]  # a list
        if len(shape) != rank or shape[1:] != tail:
            return None
        first = shape[0]
        if first <= 0 or (head >= 0 and first != head) or (rows >= 0 and first != rows):
            return None
        if max_batch_size > 0 and first > max_batch_size:
            return None
        raw = raws[index]
        if len(raw) != math.prod(shape) * dtype.itemsize:
            return None
        feeds[name] = np.ndarray(shape, dtype, buffer=raw)  # a read-only view, as np.frombuffer gives
        rows = first
    outputs = plan.outputs if not request.outputs else _output_names(request, plan.outputs)
    return DecodedRequest(feeds, rows if max_batch_size > 0 else 1, outputs)


def decode_request(
    request: pb.ModelInferRequest, signature: Signature, *, max_batch_size: int
) -> DecodedRequest:
    """Validates and decodes ``request``; ``max_batch_size`` 0 means the model does not batch."""
    return decode_planned(request, request_plan(signature), max_batch_size)


def decode_planned(request: pb.ModelInferRequest, plan: RequestPlan, max_batch_size: int) -> DecodedRequest:
    """:func:`decode_request` with the signature's plan already at hand (:func:`request_plan`)."""
    decoded = _decode_fast(request, plan, max_batch_size)
    return decoded if decoded is not None else _decode_full(request, plan, max_batch_size)


def _decode_full(request: pb.ModelInferRequest, plan: RequestPlan, max_batch_size: int) -> DecodedRequest:
    """Every check, in order, with the message of the first that fails."""
    specs = plan.specs
    _check_names([tensor.name for tensor in request.inputs], specs, plan.expected_names)
    uses_raw = len(request.raw_input_contents) > 0
    if uses_raw and len(request.raw_input_contents) != len(request.inputs):
        raise InvalidArgumentError(
            f"raw_input_contents has {len(request.raw_input_contents)} entries "
            f"for {len(request.inputs)} inputs; "
            "send raw data for every input or for none"
        )
    feeds: dict[str, npt.NDArray[Any]] = {}
    rows: int | None = None
    for index, tensor in enumerate(request.inputs):
        spec = specs[tensor.name]
        _check_input_parameters(tensor)
        _check_datatype(tensor.name, tensor.datatype, spec)
        shape = _check_shape(tensor.name, list(tensor.shape), spec, max_batch_size)
        has_contents = tensor.HasField("contents") and any(
            len(getattr(tensor.contents, field)) for field in ALL_CONTENTS_FIELDS
        )
        if uses_raw and has_contents:
            raise InvalidArgumentError(
                f"input '{tensor.name}': has both typed contents and raw_input_contents; send exactly one"
            )
        if uses_raw:
            feeds[tensor.name] = decode_raw(
                tensor.name, spec.datatype, shape, request.raw_input_contents[index]
            )
        elif has_contents or tensor.HasField("contents"):
            feeds[tensor.name] = decode_contents(tensor.name, spec.datatype, shape, tensor.contents)
        else:
            raise InvalidArgumentError(f"input '{tensor.name}': no data; set contents or raw_input_contents")
        if max_batch_size > 0:
            if rows is not None and shape[0] != rows:
                raise InvalidArgumentError(
                    f"input '{tensor.name}': has {shape[0]} rows but other inputs have {rows}; "
                    "all inputs must share the batch dimension"
                )
            rows = shape[0]
    outputs = plan.outputs if not request.outputs else _output_names(request, plan.outputs)
    return DecodedRequest(feeds, rows if rows is not None else 1, outputs)


def _check_names(names: Sequence[str], specs: dict[str, TensorSpec], expected: str) -> None:
    if not names:
        raise InvalidArgumentError(f"request has no inputs; expected {expected}")
    seen: set[str] = set()
    for name in names:
        if name not in specs:
            raise InvalidArgumentError(f"input '{name}': unknown input; expected {expected}")
        if name in seen:
            raise InvalidArgumentError(f"input '{name}': given more than once")
        seen.add(name)
    missing = [name for name in specs if name not in seen]
    if missing:
        raise InvalidArgumentError(f"input '{missing[0]}': missing; expected {expected}")


def _check_input_parameters(tensor: pb.ModelInferRequest.InferInputTensor) -> None:
    for key in tensor.parameters:
        if key in _UNSUPPORTED_INPUT_PARAMETERS:
            raise InvalidArgumentError(f"input '{tensor.name}': parameter '{key}' is not supported")


def _check_datatype(name: str, datatype: str, spec: TensorSpec) -> None:
    if datatype != spec.datatype:
        raise InvalidArgumentError(
            f"input '{name}': datatype {datatype or '(empty)'} given, expected {spec.datatype}"
        )


def _check_shape(name: str, shape: list[int], spec: TensorSpec, max_batch_size: int) -> list[int]:
    expected = list(spec.shape)
    if len(shape) != len(expected):
        raise InvalidArgumentError(
            f"input '{name}': shape {shape} has rank {len(shape)}, "
            f"expected rank {len(expected)} like {expected}"
        )
    for axis, (got, want) in enumerate(zip(shape, expected, strict=True)):
        if got < 0:
            raise InvalidArgumentError(f"input '{name}': shape {shape} has negative dim {got} at axis {axis}")
        if want != -1 and got != want:
            raise InvalidArgumentError(
                f"input '{name}': shape {shape} differs from {expected} at axis {axis}"
            )
    if max_batch_size > 0:
        if shape[0] == 0:
            raise InvalidArgumentError(f"input '{name}': zero rows; at least one row is required")
        if shape[0] > max_batch_size:
            raise InvalidArgumentError(
                f"input '{name}': {shape[0]} rows exceed the model's max_batch_size of {max_batch_size}"
            )
    if 0 in shape:
        raise InvalidArgumentError(f"input '{name}': shape {shape} is empty; every dim must be at least 1")
    return shape


def _output_names(request: pb.ModelInferRequest, known: tuple[str, ...]) -> tuple[str, ...]:
    names: list[str] = []
    for output in request.outputs:
        if output.name not in known:
            raise InvalidArgumentError(
                f"output '{output.name}': unknown output; expected one of {', '.join(repr(k) for k in known)}"
            )
        if output.name in names:
            raise InvalidArgumentError(f"output '{output.name}': requested more than once")
        for key in output.parameters:
            if key in _UNSUPPORTED_OUTPUT_PARAMETERS:
                raise InvalidArgumentError(f"output '{output.name}': parameter '{key}' is not supported")
        names.append(output.name)
    return tuple(names)
