"""The extra call acceptors (gateway/acceptors.py) on the grpcio this project locks: the internals they use
are there, the calls they take are answered exactly as onnxruntime answers them, and they end with the
server. (With the default ``accept_ahead``, every other gateway test goes through them too: auth,
shutdown with calls in flight, bad input, deadlines.)"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from gateway.acceptors import supported
from gateway.config import GatewayConfig
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc as pb_grpc
from tests.oracle import assert_bitwise_equal, run_reference
from tests.servers import ServerThread

CALLS = 64


def test_the_locked_grpcio_has_the_internals_the_acceptors_use() -> None:
    assert supported() is None


def _call(target: str, i: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.full((i % 4 + 1, 3), float(i), np.float32)
    tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    with grpcclient.InferenceServerClient(target) as triton:
        return x, triton.infer("dtype_fp32", [tensor], request_id=str(i)).as_numpy("y")


@pytest.mark.parametrize("accept_ahead", [0, 4])
def test_calls_are_answered_exactly_and_the_acceptors_end_with_the_server(
    fixture_registry: Path, accept_ahead: int
) -> None:
    config = GatewayConfig(
        fixture_registry, sampling=False, port=0, metrics_port=None, accept_ahead=accept_ahead
    )
    server = ServerThread(config)
    try:
        assert server.server.acceptors.running == accept_ahead
        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(lambda i: _call(server.target, i), range(CALLS)))
        for x, y in answers:
            assert_bitwise_equal(y, run_reference(fixture_registry, "dtype_fp32", 1, {"x": x})["y"])
    finally:
        server.stop()
    assert server.server.acceptors.running == 0
    assert server.server.acceptors.cancelled == 0  # gRPC core's shutdown ended them, nothing had to


def test_a_malformed_call_taken_by_an_acceptor_gets_its_status(fixture_registry: Path) -> None:
    """The acceptors hand calls to grpc.aio's own call path: the servicer's INVALID_ARGUMENT still
    arrives, and the next call is answered."""
    server = ServerThread(GatewayConfig(fixture_registry, sampling=False, port=0, metrics_port=None))
    try:
        tensor = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[2, 3])
        short = np.zeros(4, np.float32).tobytes()  # 4 values for a [2, 3] shape
        request = pb.ModelInferRequest(model_name="dtype_fp32", inputs=[tensor], raw_input_contents=[short])
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
            with pytest.raises(grpc.RpcError) as refused:
                stub.ModelInfer(request, timeout=30)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        x, y = _call(server.target, 3)
        assert_bitwise_equal(y, run_reference(fixture_registry, "dtype_fp32", 1, {"x": x})["y"])
    finally:
        server.stop()
