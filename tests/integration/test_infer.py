"""ModelInfer through the real tritonclient: outputs equal in-process onnxruntime, bit for bit."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.onnx_models import ONNX_TYPES
from tests.oracle import assert_bitwise_equal, run_reference, sample
from tests.servers import ServerThread


def _infer_input(name: str, array: np.ndarray, datatype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


@pytest.mark.parametrize("datatype", sorted(ONNX_TYPES))
@pytest.mark.parametrize("rows", [1, 5])
def test_every_datatype_matches_onnxruntime(
    client: grpcclient.InferenceServerClient, fixture_registry: Path, datatype: str, rows: int
) -> None:
    model = f"dtype_{datatype.lower()}"
    x = sample(datatype, (rows, 3), np.random.default_rng(rows))
    result = client.infer(model, [_infer_input("x", x, datatype)], request_id=f"req-{datatype}")
    expected = run_reference(fixture_registry, model, 1, {"x": x})["y"]
    assert_bitwise_equal(result.as_numpy("y"), expected)
    response = result.get_response()
    assert response.id == f"req-{datatype}"
    assert response.model_name == model
    assert response.model_version == "1"
    assert response.outputs[0].datatype == datatype
    assert list(response.outputs[0].shape) == [rows, 3]


def test_multiple_inputs_and_outputs(
    client: grpcclient.InferenceServerClient, fixture_registry: Path
) -> None:
    rng = np.random.default_rng(7)
    a = sample("FP32", (6, 4), rng)
    b = rng.integers(-1000, 1000, size=(6, 4)).astype(np.int64)
    result = client.infer("multi_io", [_infer_input("a", a, "FP32"), _infer_input("b", b, "INT64")])
    expected = run_reference(fixture_registry, "multi_io", 1, {"a": a, "b": b})
    for name in ("total", "doubled", "rowmax"):
        assert_bitwise_equal(result.as_numpy(name), expected[name])


def test_requested_output_subset_in_requested_order(client: grpcclient.InferenceServerClient) -> None:
    a = np.ones((2, 4), np.float32)
    b = np.full((2, 4), 3, np.int64)
    outputs = [grpcclient.InferRequestedOutput("rowmax"), grpcclient.InferRequestedOutput("doubled")]
    result = client.infer(
        "multi_io", [_infer_input("a", a, "FP32"), _infer_input("b", b, "INT64")], outputs=outputs
    )
    names = [o.name for o in result.get_response().outputs]
    assert names == ["rowmax", "doubled"]
    np.testing.assert_array_equal(result.as_numpy("doubled"), np.full((2, 4), 6, np.int64))


def test_fixed_shape_model_without_batch_dim(client: grpcclient.InferenceServerClient) -> None:
    x = np.array([[-1, 2, -3], [4, -5, 6]], np.float32)
    result = client.infer("fixed", [_infer_input("x", x, "FP32")])
    np.testing.assert_array_equal(result.as_numpy("y"), np.maximum(x, 0))


def test_two_dynamic_dims(client: grpcclient.InferenceServerClient, fixture_registry: Path) -> None:
    x = sample("FP32", (3, 7, 4), np.random.default_rng(3))
    result = client.infer("sequence", [_infer_input("x", x, "FP32")])
    expected = run_reference(fixture_registry, "sequence", 1, {"x": x})
    assert_bitwise_equal(result.as_numpy("y"), expected["y"])
    assert_bitwise_equal(result.as_numpy("s"), expected["s"])


TYPED_FIELDS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


@pytest.mark.parametrize("datatype", sorted(TYPED_FIELDS))
def test_typed_contents_equal_raw(gateway: ServerThread, fixture_registry: Path, datatype: str) -> None:
    """Typed ``contents`` (built with tritonclient's own protobuf classes) answer like raw bytes."""
    model = f"dtype_{datatype.lower()}"
    x = sample(datatype, (4, 3), np.random.default_rng(11))
    request = service_pb2.ModelInferRequest(model_name=model, id="typed")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=[4, 3])
    getattr(tensor.contents, TYPED_FIELDS[datatype]).extend(x.reshape(-1).tolist())
    with grpc.insecure_channel(gateway.target) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    result = grpcclient.InferResult(response)
    expected = run_reference(fixture_registry, model, 1, {"x": x})["y"]
    assert_bitwise_equal(result.as_numpy("y"), expected)


def test_concurrent_requests_are_independent(gateway: ServerThread) -> None:
    """Many in-flight requests with distinct data each get their own answer."""

    def call(i: int) -> tuple[int, np.ndarray]:
        x = np.full((i % 4 + 1, 3), i, np.float32)
        with grpcclient.InferenceServerClient(gateway.target) as triton:
            return i, triton.infer("dtype_fp32", [_infer_input("x", x, "FP32")], request_id=str(i)).as_numpy(
                "y"
            )

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(call, range(48)))
    for i, y in answers:
        np.testing.assert_array_equal(y, np.full((i % 4 + 1, 3), 2 * i, np.float32))
