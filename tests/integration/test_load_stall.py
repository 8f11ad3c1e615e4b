"""Coordinated omission: a server that stalls for 1 s mid-run must show up in the open-loop p99.

An open-loop client keeps sending on schedule while the server is stalled, and measures each request
from its intended send time, so a fifth of the requests (those due during the stall) wait up to 1 s.
A client that waited for responses before sending would record only a handful of slow requests.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from loadtests.config import LoadConfig
from loadtests.run import run_load
from protos import inference_pb2 as pb

STALL_S = 1.0


class StallingServer:
    """ModelMetadata + ModelInfer on 127.0.0.1:0; every answer between 1.5 s and 2.5 s after the first
    request waits until the stall ends."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.first: float | None = None
        self.server: grpc.aio.Server | None = None
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)

    async def _infer(self, request: bytes, context: Any) -> bytes:
        now = time.monotonic()
        self.first = now if self.first is None else self.first
        stall_from = self.first + 1.5
        if stall_from <= now < stall_from + STALL_S:
            await asyncio.sleep(stall_from + STALL_S - now)
        return b""

    async def _metadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        response = pb.ModelMetadataResponse(name=request.name, versions=["1"], platform="test")
        response.inputs.add(name="x", datatype="FP32", shape=[-1, 4])
        response.outputs.add(name="y", datatype="FP32", shape=[-1, 4])
        return response

    async def _start(self) -> int:
        server = grpc.aio.server()
        handlers = {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(self._infer),
            "ModelMetadata": grpc.unary_unary_rpc_method_handler(
                self._metadata, pb.ModelMetadataRequest.FromString, pb.ModelMetadataResponse.SerializeToString
            ),
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("inference.GRPCInferenceService", handlers),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self.server = server
        return port

    def stop(self) -> None:
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.stop(0), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def stalling() -> Iterator[StallingServer]:
    server = StallingServer()
    yield server
    server.stop()


def test_open_loop_p99_shows_a_one_second_stall(stalling: StallingServer) -> None:
    rate, duration = 100.0, 5.0
    report = run_load(
        LoadConfig(target=f"127.0.0.1:{stalling.port}", model="m", levels=(rate,), mode="open",
                   duration_s=duration, warmup_s=0.5, progress=False)
    )  # fmt: skip
    # Nothing was omitted: every request of the schedule was sent and answered, stall or not.
    assert report["errors"] == {}
    assert report["requests"] == report["ok"] == int(rate * duration)
    assert report["latency_ms"]["p99"] >= 500.0
    assert report["latency_ms"]["max"] >= 800.0
    # The stall is visible in the timeline too: some window's max latency is near the full second.
    assert max(v for v in report["steps"][0]["timeline"]["max_ms"] if v is not None) >= 800.0
