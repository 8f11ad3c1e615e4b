"""The validation fast path takes only requests the full path accepts, and decodes them to the same
feeds, rows and outputs; anything it declines goes to the full path, whose messages the client sees.
Checked on generated requests, valid and broken, against the full path as the oracle."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import InvalidArgumentError
from gateway.validate import _decode_fast, _decode_full, decode_request, request_plan
from protos import inference_pb2 as pb
from registry.signature import Signature, TensorSpec

SIGNATURE = Signature(
    inputs=(TensorSpec("a", "FP32", (-1, 3)), TensorSpec("b", "INT64", (-1, 2, 2))),
    outputs=(TensorSpec("y", "FP32", (-1, 1)), TensorSpec("z", "FP32", (-1, 1))),
)
FIXED = Signature(inputs=(TensorSpec("a", "FP32", (1, 3)),), outputs=(TensorSpec("y", "FP32", (1, 1)),))
DTYPES = {"FP32": np.float32, "INT64": np.int64}


def build(signature: Signature, rows: list[int], tweak: str, outputs: list[str]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    for spec, count in zip(signature.inputs, rows, strict=False):
        shape = [count, *spec.shape[1:]]
        tensor = request.inputs.add(name=spec.name, datatype=spec.datatype, shape=shape)
        data = np.ones(shape, DTYPES[spec.datatype]).tobytes()
        if tweak == "short" and spec.name == "a":
            data = data[:-1]
        if tweak == "dtype" and spec.name == "a":
            tensor.datatype = "FP64"
        if tweak == "param" and spec.name == "a":
            tensor.parameters["shared_memory_region"].string_param = "r"
        if tweak == "dims" and spec.name == "a":
            tensor.shape[-1] = 4
        request.raw_input_contents.append(data)
    if tweak == "duplicate" and request.inputs:
        request.inputs.add().CopyFrom(request.inputs[0])
        request.raw_input_contents.append(request.raw_input_contents[0])
    if tweak == "missing_raw" and request.raw_input_contents:
        del request.raw_input_contents[-1]
    for name in outputs:
        request.outputs.add(name=name)
    return request


def outcome(call: Any) -> Any:
    try:
        decoded = call()
    except InvalidArgumentError as exc:
        return ("error", str(exc))
    return (
        {name: (array.dtype, array.shape, array.tobytes()) for name, array in decoded.feeds.items()},
        decoded.rows,
        decoded.output_names,
    )


@settings(max_examples=200, deadline=None)
@given(
    signature=st.sampled_from([SIGNATURE, FIXED]),
    rows=st.lists(st.integers(0, 5), min_size=0, max_size=3),
    tweak=st.sampled_from(["", "", "", "short", "dtype", "param", "dims", "duplicate", "missing_raw"]),
    outputs=st.lists(st.sampled_from(["y", "z", "w"]), max_size=2),
    max_batch_size=st.sampled_from([0, 4, 64]),
)
def test_the_fast_path_agrees_with_the_full_path(
    signature: Signature, rows: list[int], tweak: str, outputs: list[str], max_batch_size: int
) -> None:
    request = build(signature, rows, tweak, outputs)
    plan = request_plan(signature)
    full = outcome(lambda: _decode_full(request, plan, max_batch_size))
    assert outcome(lambda: decode_request(request, signature, max_batch_size=max_batch_size)) == full
    decoded = _fast_or_none(request, plan, max_batch_size)
    if decoded is not None and decoded != "error":
        assert full[0] != "error"  # the fast path never accepts what the full path refuses


def _fast_or_none(request: pb.ModelInferRequest, plan: Any, max_batch_size: int) -> Any:
    try:
        return _decode_fast(request, plan, max_batch_size)
    except InvalidArgumentError:
        return "error"  # only an unknown or repeated requested output; the full path says the same


def test_the_common_request_takes_the_fast_path() -> None:
    request = build(SIGNATURE, [2, 2], "", [])
    decoded = _decode_fast(request, request_plan(SIGNATURE), 64)
    assert decoded is not None
    assert decoded.rows == 2
    assert decoded.output_names == ("y", "z")
    np.testing.assert_array_equal(decoded.feeds["b"], np.ones((2, 2, 2), np.int64))
    with pytest.raises(ValueError, match="read-only"):
        decoded.feeds["a"][0, 0] = 2.0  # a read-only view over the request's bytes, as before
