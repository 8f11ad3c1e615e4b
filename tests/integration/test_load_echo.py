"""The echo baseline answers with the same response shapes as the gateway, so its ceiling is comparable."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from bench.models import build_bench_registry
from gateway.config import GatewayConfig
from loadtests.config import LoadConfig
from loadtests.echo import EchoServer
from loadtests.payload import build_payloads, fetch_metadata, load_rows
from loadtests.run import run_load
from loadtests.stream import MODEL_STREAM_INFER, id_field
from loadtests.unary import MODEL_INFER
from protos import inference_pb2 as pb
from registry.demo import build_demo
from tests.servers import ServerThread


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("echo") / "registry"
    build_demo(root)
    return build_bench_registry(root, models=("tiny",))


@pytest.fixture(scope="module")
def servers(registry: Path) -> Iterator[tuple[str, str]]:
    gateway = ServerThread(GatewayConfig(registry, port=0, metrics_port=None))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    echo = EchoServer(registry)
    port = asyncio.run_coroutine_threadsafe(echo.start(), loop).result(30)
    yield gateway.target, f"127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(echo.stop(0), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()
    gateway.stop()


def _shapes(response: pb.ModelInferResponse) -> list[tuple[str, str, list[int], int]]:
    return [
        (o.name, o.datatype, list(o.shape), len(raw))
        for o, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    ]


@pytest.mark.parametrize(("model", "rows"), [("tiny", 1), ("tiny", 5), ("classifier", 3), ("regressor", 2)])
def test_unary_and_stream_responses_have_the_same_shapes(
    servers: tuple[str, str], registry: Path, model: str, rows: int
) -> None:
    gateway, echo = servers
    with grpc.insecure_channel(gateway) as channel:
        inputs = fetch_metadata(channel, model, "")
    with grpc.insecure_channel(echo) as channel:
        assert fetch_metadata(channel, model, "") == inputs
    arrays = load_rows(
        inputs, "reference", registry=registry, npz=None, model=model, version="", rows=rows, seed=0
    )
    payload = build_payloads(model, "", inputs, arrays, rows=rows).requests[0]
    answers = []
    for target in (gateway, echo):
        with grpc.insecure_channel(target) as channel:
            unary = pb.ModelInferResponse.FromString(channel.unary_unary(MODEL_INFER)(payload, timeout=10))
            stream = channel.stream_stream(MODEL_STREAM_INFER)(iter([payload + id_field("7")]), timeout=10)
            streamed = [pb.ModelStreamInferResponse.FromString(raw) for raw in stream]
        assert len(streamed) == 1
        assert not streamed[0].error_message
        assert streamed[0].infer_response.id == "7"
        assert _shapes(streamed[0].infer_response) == _shapes(unary)
        assert unary.model_name == model
        answers.append(_shapes(unary))
    assert answers[0] == answers[1]
    assert all(shape[0] == rows for _, _, shape, _ in answers[0])


def test_echo_is_a_load_target(servers: tuple[str, str]) -> None:
    _, echo = servers
    report = run_load(LoadConfig(target=echo, model="tiny", levels=(4,), requests=200, duration_s=30.0,
                                 warmup_s=0.1, rows=2, progress=False))  # fmt: skip
    assert report["requests"] == report["ok"] == 200
    assert report["errors"] == {}
    assert np.isclose(report["rows_per_s"], 2 * report["throughput_rps"])
