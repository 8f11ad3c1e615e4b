"""gateway.wire: encoded responses are byte for byte what protobuf serializes for the same message."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from gateway.codec import encode_array
from gateway.wire import TEMPLATES_MAX, ResponseWire, answered_by, passthrough, stream_response
from protos import inference_pb2 as pb
from protos.fields import field

DATATYPES = {"y": "FP32", "label": "INT64", "name": "BYTES"}


def _message(
    model: str, version: str, request_id: str, names: list[str], arrays: list[npt.NDArray[Any]]
) -> pb.ModelInferResponse:
    """The response as protobuf builds it, field by field (the independent oracle)."""
    response = pb.ModelInferResponse(model_name=model, model_version=version, id=request_id)
    for name, array in zip(names, arrays, strict=True):
        response.outputs.add(name=name, datatype=DATATYPES[name], shape=array.shape)
        response.raw_output_contents.append(encode_array(array, DATATYPES[name]))
    return response


@pytest.mark.parametrize("request_id", ["", "r-1", "x" * 300])  # 300: a two-byte length
@pytest.mark.parametrize("rows", [1, 3, 5000])  # 5000 rows of 8 floats: a three-byte length
def test_an_encoded_response_is_what_protobuf_serializes(request_id: str, rows: int) -> None:
    wire = ResponseWire("tiny", "7", DATATYPES)
    arrays: list[npt.NDArray[Any]] = [
        np.arange(rows * 8, dtype=np.float32).reshape(rows, 8),
        np.arange(rows, dtype=np.int64).reshape(rows, 1) - 2,
    ]
    names = ["y", "label"]
    expected = _message("tiny", "7", request_id, names, arrays)
    encoded = wire.encode(request_id, names, arrays)
    assert encoded == expected.SerializeToString()
    assert pb.ModelInferResponse.FromString(encoded) == expected


def test_outputs_keep_the_requested_order_and_bytes_outputs_encode() -> None:
    wire = ResponseWire("m", "1", DATATYPES)
    arrays = [np.array([[b"ab"], [b""]], dtype=object), np.ones((2, 8), dtype=np.float32)]
    names = ["name", "y"]
    encoded = wire.encode("id", names, arrays)
    assert pb.ModelInferResponse.FromString(encoded) == _message("m", "1", "id", names, arrays)


def test_the_metadata_cache_starts_over_past_its_bound_and_stays_correct() -> None:
    wire = ResponseWire("m", "1", DATATYPES)
    for rows in range(1, TEMPLATES_MAX + 3):
        array = np.zeros((rows, 8), dtype=np.float32)
        assert wire.encode("", ["y"], [array]) == _message("m", "1", "", ["y"], [array]).SerializeToString()
    assert len(wire._outputs) <= TEMPLATES_MAX


def test_a_stream_response_wraps_the_encoded_response() -> None:
    wire = ResponseWire("m", "1", DATATYPES)
    array = np.ones((1, 8), dtype=np.float32)
    inner = wire.encode("s-1", ["y"], [array])
    streamed = pb.ModelStreamInferResponse.FromString(stream_response(inner))
    assert streamed.error_message == ""
    assert streamed.infer_response == pb.ModelInferResponse.FromString(inner)


def test_passthrough_sends_bytes_as_they_are_and_serializes_messages() -> None:
    message = pb.ModelInferResponse(model_name="m", id="1")
    assert passthrough(b"\x0a\x01m") == b"\x0a\x01m"
    assert passthrough(message) == message.SerializeToString()


def test_answered_by_reads_the_model_and_version_from_the_head() -> None:
    encoded = ResponseWire("m", "1", DATATYPES).encode("id", ["y"], [np.ones((1, 8), dtype=np.float32)])
    assert answered_by(encoded, "m", "1")
    assert not answered_by(encoded, "m", "12")  # a longer version: another length byte, no prefix match
    assert not answered_by(encoded, "m", "2")
    assert not answered_by(encoded, "mm", "1")
    other = ResponseWire("m", "12", DATATYPES).encode("", ["y"], [np.ones((1, 8), dtype=np.float32)])
    assert not answered_by(other, "m", "1")


@pytest.mark.parametrize("length", [0, 1, 126, 127, 128, 129, 300, 16384])
@pytest.mark.parametrize(("number", "attribute"), [(1, "model_name"), (3, "id")])
def test_a_field_is_what_protobuf_writes_for_a_string_of_any_length(
    number: int, attribute: str, length: int
) -> None:
    """The one-byte table of short heads and the varint loop past it agree with protobuf."""
    data = "x" * length
    message = pb.ModelInferResponse()
    setattr(message, attribute, data)
    expected = message.SerializeToString()
    encoded = field(number, data.encode())
    if length:
        assert encoded == expected
    else:  # protobuf leaves an empty string out; the field itself is tag and a zero length
        assert pb.ModelInferResponse.FromString(encoded) == pb.ModelInferResponse()
        assert encoded == bytes((number << 3 | 2, 0))


def test_outputs_whose_arrays_are_not_of_their_datatype_are_converted() -> None:
    """An output array in another dtype than its datatype's (int32 for INT64) is converted, as the codec
    converts it, instead of sent as its own bytes."""
    wire = ResponseWire("m", "1", DATATYPES)
    label = np.array([[3], [-4]], dtype=np.int32)
    encoded = wire.encode("id", ["label"], [label])
    assert encoded == _message("m", "1", "id", ["label"], [label]).SerializeToString()
    decoded = pb.ModelInferResponse.FromString(encoded).raw_output_contents[0]
    assert np.frombuffer(decoded, dtype="<i8").tolist() == [3, -4]


def test_a_bytes_output_held_as_float64_is_encoded_as_bytes() -> None:
    """BYTES has no numpy dtype; a float64 array (the dtype numpy reads ``None`` as) still goes through the
    codec's length-prefixed encoding, never out as its own eight-byte floats."""
    wire = ResponseWire("m", "1", DATATYPES)
    name = np.array([[1.5], [2.0]], dtype=np.float64)
    encoded = wire.encode("id", ["name"], [name])
    assert encoded == _message("m", "1", "id", ["name"], [name]).SerializeToString()
    assert pb.ModelInferResponse.FromString(encoded).raw_output_contents[0] != name.tobytes()
