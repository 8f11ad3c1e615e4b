"""Every malformed request gets a clear status and message, and never harms the server or other requests.

Requests are built with tritonclient's own protobuf classes and stub, so they can be malformed in ways
the high-level client refuses to produce.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from gateway.config import GatewayConfig
from tests.onnx_models import build_registry, dtype_model
from tests.servers import ServerThread

Request = service_pb2.ModelInferRequest
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def fp32_request(shape: list[int], *, rows_data: int | None = None, model: str = "dtype_fp32") -> Request:
    """A well-formed raw FP32 request for dtype_fp32 (x[batch, 3])."""
    request = Request(model_name=model)
    request.inputs.add(name="x", datatype="FP32", shape=shape)
    count = int(np.prod(shape)) if rows_data is None else rows_data
    request.raw_input_contents.append(np.arange(count, dtype=np.float32).tobytes())
    return request


def multi_request(rows_a: int = 2, rows_b: int = 2) -> Request:
    request = Request(model_name="multi_io")
    request.inputs.add(name="a", datatype="FP32", shape=[rows_a, 4])
    request.inputs.add(name="b", datatype="INT64", shape=[rows_b, 4])
    request.raw_input_contents.append(np.zeros((rows_a, 4), np.float32).tobytes())
    request.raw_input_contents.append(np.zeros((rows_b, 4), np.int64).tobytes())
    return request


def _mutate(build: Callable[[], Request], change: Callable[[Request], object]) -> Callable[[], Request]:
    def make() -> Request:
        request = build()
        change(request)
        return request

    return make


def _bytes_request(raw: bytes, shape: list[int]) -> Request:
    request = Request(model_name="dtype_bytes")
    request.inputs.add(name="x", datatype="BYTES", shape=shape)
    request.raw_input_contents.append(raw)
    return request


def _prefixed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def _typed(datatype: str, field: str, values: list[object], shape: list[int]) -> Request:
    request = Request(model_name=f"dtype_{datatype.lower()}")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=shape)
    getattr(tensor.contents, field).extend(values)
    return request


def _both(request: Request) -> None:
    request.inputs[0].contents.fp32_contents.extend([0.0] * 6)


def _no_data(request: Request) -> None:
    del request.raw_input_contents[:]


def _duplicate(request: Request) -> None:
    request.inputs.add(name="x", datatype="FP32", shape=[2, 3])
    request.raw_input_contents.append(request.raw_input_contents[0])


def _classification(request: Request) -> None:
    request.outputs.add(name="y").parameters["classification"].int64_param = 2


def _drop_b(request: Request) -> None:
    del request.inputs[1]
    del request.raw_input_contents[1]


#: (case id, request factory, expected code, words the message must contain)
CASES: list[tuple[str, Callable[[], Request], grpc.StatusCode, tuple[str, ...]]] = [
    (
        "unknown input",
        _mutate(lambda: fp32_request([2, 3]), lambda r: setattr(r.inputs[0], "name", "z")),
        INVALID,
        ("'z'", "unknown input", "'x'"),
    ),
    ("missing input", _mutate(multi_request, _drop_b), INVALID, ("'b'", "missing")),
    ("no inputs", lambda: Request(model_name="dtype_fp32"), INVALID, ("no inputs", "'x'")),
    (
        "duplicate input",
        _mutate(lambda: fp32_request([2, 3]), _duplicate),
        INVALID,
        ("'x'", "more than once"),
    ),
    (
        "wrong datatype",
        _mutate(lambda: fp32_request([2, 3]), lambda r: setattr(r.inputs[0], "datatype", "FP64")),
        INVALID,
        ("'x'", "FP64", "expected FP32"),
    ),
    ("wrong rank", lambda: fp32_request([6]), INVALID, ("'x'", "rank 1", "rank 2")),
    ("fixed dim differs", lambda: fp32_request([2, 4]), INVALID, ("'x'", "[2, 4]", "axis 1")),
    ("negative dim", lambda: fp32_request([-2, 3], rows_data=6), INVALID, ("'x'", "negative")),
    ("raw length", lambda: fp32_request([2, 3], rows_data=5), INVALID, ("'x'", "20 bytes", "expected 24")),
    ("raw and typed", _mutate(lambda: fp32_request([2, 3]), _both), INVALID, ("'x'", "both")),
    ("neither raw nor typed", _mutate(lambda: fp32_request([2, 3]), _no_data), INVALID, ("'x'", "no data")),
    (
        "typed count",
        lambda: _typed("FP32", "fp32_contents", [1.0] * 5, [2, 3]),
        INVALID,
        ("'x'", "5 values", "expected 6"),
    ),
    (
        "typed wrong field",
        lambda: _typed("FP32", "int_contents", [1] * 6, [2, 3]),
        INVALID,
        ("'x'", "fp32_contents"),
    ),
    (
        "typed out of range",
        lambda: _typed("INT8", "int_contents", [300] * 3, [1, 3]),
        INVALID,
        ("'x'", "out of range", "INT8"),
    ),
    ("typed fp16", lambda: _typed("FP16", "fp32_contents", [1.0] * 3, [1, 3]), INVALID, ("'x'", "raw")),
    ("zero rows", lambda: fp32_request([0, 3]), INVALID, ("'x'", "zero rows")),
    ("batch too large", lambda: multi_request(9, 9), INVALID, ("'a'", "9 rows", "max_batch_size of 8")),
    ("rows differ", lambda: multi_request(2, 3), INVALID, ("'b'", "3 rows", "2")),
    (
        "raw count",
        _mutate(multi_request, lambda r: r.raw_input_contents.pop()),
        INVALID,
        ("raw_input_contents", "1 entries", "2 inputs"),
    ),
    (
        "bytes truncated prefix",
        lambda: _bytes_request(_prefixed(b"ab", b"c") + b"\x01\x00", [1, 3]),
        INVALID,
        ("'x'", "element 2", "length prefix"),
    ),
    (
        "bytes overlong length",
        lambda: _bytes_request(_prefixed(b"ab", b"c") + struct.pack("<I", 99) + b"z", [1, 3]),
        INVALID,
        ("'x'", "element 2", "99 bytes"),
    ),
    (
        "bytes trailing",
        lambda: _bytes_request(_prefixed(b"a", b"b", b"c") + b"zz", [1, 3]),
        INVALID,
        ("'x'", "trailing"),
    ),
    (
        "bytes not utf-8",
        lambda: _bytes_request(_prefixed(b"a", b"\xff\xfe", b"c"), [1, 3]),
        INVALID,
        ("'x'", "element 1", "UTF-8"),
    ),
    (
        "unknown output",
        _mutate(lambda: fp32_request([2, 3]), lambda r: r.outputs.add(name="nope")),
        INVALID,
        ("'nope'", "unknown output", "'y'"),
    ),
    (
        "classification",
        _mutate(lambda: fp32_request([2, 3]), _classification),
        INVALID,
        ("'y'", "classification", "not supported"),
    ),
    (
        "unknown model",
        lambda: fp32_request([2, 3], model="no_such_model"),
        grpc.StatusCode.NOT_FOUND,
        ("'no_such_model'",),
    ),
    (
        "unknown version",
        _mutate(lambda: fp32_request([2, 3]), lambda r: setattr(r, "model_version", "7")),
        grpc.StatusCode.NOT_FOUND,
        ("version 7",),
    ),
    (
        "malformed version",
        _mutate(lambda: fp32_request([2, 3]), lambda r: setattr(r, "model_version", "v1")),
        INVALID,
        ("'v1'",),
    ),
]


@pytest.fixture
def stub(gateway: ServerThread) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(gateway.target) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


@pytest.mark.parametrize(("build", "code", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_request_gets_clear_status(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
    build: Callable[[], Request],
    code: grpc.StatusCode,
    words: tuple[str, ...],
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(build(), timeout=10)
    assert info.value.code() == code, info.value.details()
    for word in words:
        assert word in info.value.details(), (word, info.value.details())
    # The server is unharmed: a good request right after is answered correctly.
    good = stub.ModelInfer(fp32_request([2, 3]), timeout=10)
    np.testing.assert_array_equal(
        np.frombuffer(good.raw_output_contents[0], np.float32), 2 * np.arange(6, dtype=np.float32)
    )


def test_bad_requests_never_affect_concurrent_good_ones(gateway: ServerThread) -> None:
    def call(i: int) -> tuple[int, object]:
        with grpc.insecure_channel(gateway.target) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            if i % 2:
                try:
                    stub.ModelInfer(CASES[i % len(CASES)][1](), timeout=10)
                except grpc.RpcError as exc:
                    return i, exc.code()
                return i, grpc.StatusCode.OK
            return i, stub.ModelInfer(fp32_request([2, 3]), timeout=10).raw_output_contents[0]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(call, range(64)))
    expected = (2 * np.arange(6, dtype=np.float32)).tobytes()
    for i, outcome in results:
        if i % 2 == 0:
            assert outcome == expected
        else:
            assert outcome != grpc.StatusCode.OK


def test_oversized_message_is_resource_exhausted(tmp_path: Path) -> None:
    root = build_registry(tmp_path / "registry", {"dtype_fp32": dtype_model("FP32")})
    server = ServerThread(
        GatewayConfig(root, sampling=False, port=0, metrics_port=None, max_message_bytes=64 * 1024)
    )
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(fp32_request([10_000, 3]), timeout=10)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert stub.ModelInfer(fp32_request([4, 3]), timeout=10).model_version == "1"
    finally:
        server.stop()
