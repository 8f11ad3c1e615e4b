"""``infergate-load echo-server --stall``: the echo server whose loop blocks on its first ModelInfer, which
the hotpath section uses to measure what a refusal costs gRPC core. Past its limits gRPC core refuses by
itself (no Python runs), the held calls end at their deadline, and SIGTERM still ends the process. And the
load client's metadata call, which a server still refusing a previous step's backlog answers "busy"."""

from __future__ import annotations

import signal
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from bench.models import build_bench_registry
from bench.servers import ECHO_READY, ServerProcess
from loadtests.payload import fetch_metadata
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc as pb_grpc

pytestmark = pytest.mark.slow

HELD = 4
CALLS = 64
#: Besides the pending calls, the loop took the first call (it stalls in it) and core's matcher may hand a
#: few more to requests the loop made before stalling: 7 held in all in our runs; this allows 10.
HELD_AT_MOST = HELD + 6


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bench_registry(tmp_path_factory.mktemp("stall") / "registry", models=("tiny",))


def _request() -> pb.ModelInferRequest:
    tensor = pb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=[1, 16])
    rows = np.zeros((1, 16), dtype=np.float32)
    return pb.ModelInferRequest(model_name="tiny", inputs=[tensor], raw_input_contents=[rows.tobytes()])


def _code(future: grpc.Future[pb.ModelInferResponse]) -> grpc.StatusCode:
    error = future.exception()
    return grpc.StatusCode.OK if error is None else error.code()  # type: ignore[attr-defined]


@pytest.fixture
def stalled(registry: Path, tmp_path: Path) -> Iterator[tuple[str, ServerProcess]]:
    command = [sys.executable, "-m", "loadtests", "echo-server", "--registry", str(registry), "--port", "0"]
    command += ["--stall", "--max-pending-calls", str(HELD)]
    with ServerProcess(command, ECHO_READY, tmp_path / "echo.log", "stalled echo") as server:
        yield f"127.0.0.1:{server.start(timeout_s=60)[0]}", server


def test_core_refuses_past_the_pending_limit_and_the_held_calls_time_out(
    stalled: tuple[str, ServerProcess],
) -> None:
    target, server = stalled
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name="tiny"), timeout=30)
        assert metadata.name == "tiny"  # the loop still runs until the first ModelInfer
        futures = [stub.ModelInfer.future(_request(), timeout=3) for _ in range(CALLS)]
        codes = Counter(_code(f) for f in futures)
    assert set(codes) <= {grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED}, codes
    assert codes[grpc.StatusCode.CANCELLED] >= CALLS - HELD_AT_MOST, codes
    assert codes[grpc.StatusCode.DEADLINE_EXCEEDED] >= 1, codes  # the stalled call at least
    assert server.stop(grace_s=10) == -signal.SIGTERM  # ended by SIGTERM's default action, not SIGKILL


def test_fetch_metadata_waits_out_a_busy_server_but_not_an_unknown_model() -> None:
    """A server still working off a backlog refuses the metadata call (as the stalled server's core does);
    the load client retries it instead of failing the step, and still fails at once on NOT_FOUND."""
    refusals = iter([grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE])

    def metadata(request: pb.ModelMetadataRequest, context: grpc.ServicerContext) -> pb.ModelMetadataResponse:
        if request.name != "tiny":
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.name}")
        code = next(refusals, None)
        if code is not None:
            context.abort(code, "busy")
        tensor = pb.ModelMetadataResponse.TensorMetadata(name="input", datatype="FP32", shape=[-1, 16])
        return pb.ModelMetadataResponse(name="tiny", inputs=[tensor])

    handler = grpc.unary_unary_rpc_method_handler(
        metadata, pb.ModelMetadataRequest.FromString, pb.ModelMetadataResponse.SerializeToString
    )
    service = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService", {"ModelMetadata": handler}
    )
    server = grpc.server(ThreadPoolExecutor(2), handlers=(service,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            inputs = fetch_metadata(channel, "tiny", "", timeout_s=30, retry_s=0.01)
            assert [(i.name, i.datatype, i.shape) for i in inputs] == [("input", "FP32", (-1, 16))]
            assert next(refusals, None) is None  # both refusals were seen, then the answer
            with pytest.raises(grpc.RpcError) as raised:
                fetch_metadata(channel, "other", "", timeout_s=30, retry_s=0.01)
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    finally:
        server.stop(0)
