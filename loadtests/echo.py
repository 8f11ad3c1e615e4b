"""The echo baseline: a bare ``grpc.aio`` V2 server that answers ModelInfer without running a model.

It is the ceiling Python gRPC sets: the same transport, message parsing and server options as the
gateway, but the response is a constant (zeros) of the right shape, serialized once per (model,
version, rows, outputs) and cached.

Contracts:

* Serves, for every READY version of every model in a registry (signatures from the manifests):
  ModelInfer, ModelStreamInfer (one response per request, ids echoed), ModelMetadata, ModelReady,
  ServerLive and ServerReady. Unknown model or version -> NOT_FOUND. Nothing is validated beyond that.
* Output shapes follow the signature with the batch dim (a dynamic leading dim) set to the request's
  rows (``inputs[0].shape[0]``) and other dynamic dims set to 1; requested outputs are honoured.
* Binds the host it is given (default 127.0.0.1); port 0 picks a free port (:attr:`EchoServer.port`).
* ``stall``: the first ModelInfer blocks the event loop for good (a blocking sleep), so gRPC core holds
  the calls that follow up to its limits (``max_pending_calls``, ``max_concurrent_streams``) and refuses
  the rest by itself; the server CPU this costs is what one refusal costs a core (``bench.hotpath_refusals``).
  Such a server stops only by a signal's default action (SIGTERM), since its loop never runs again.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from protos import fields as wire
from protos import inference_pb2 as pb
from registry.layout import default_version, scan_registry
from registry.manifest import load_manifest
from registry.signature import Signature, numpy_dtype

__all__ = ["EchoServer", "main"]

_SERVICE = "inference.GRPCInferenceService"
_CACHE_LIMIT = 512


@dataclass
class _Model:
    name: str
    version: str
    signature: Signature
    versions: list[str]
    cache: dict[tuple[int, tuple[str, ...]], bytes] = field(default_factory=dict)

    @property
    def batchable(self) -> bool:
        return all(s.shape and s.shape[0] == -1 for s in self.signature.inputs)

    def response(self, rows: int, wanted: tuple[str, ...]) -> bytes:
        key = (rows, wanted)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        response = pb.ModelInferResponse(model_name=self.name, model_version=self.version)
        specs = {s.name: s for s in self.signature.outputs}
        for name in wanted or tuple(specs):
            spec = specs[name]
            shape = [d if d >= 0 else 1 for d in spec.shape]
            if self.batchable and spec.shape and spec.shape[0] == -1:
                shape[0] = rows
            count = int(np.prod(shape)) if shape else 1
            raw = b"\x00" * (count * (4 if spec.datatype == "BYTES" else numpy_dtype(spec.datatype).itemsize))
            response.outputs.add(name=name, datatype=spec.datatype, shape=shape)
            response.raw_output_contents.append(raw)
        body = response.SerializeToString()
        if len(self.cache) < _CACHE_LIMIT:
            self.cache[key] = body
        return body


class EchoServer:
    """The echo baseline server over ``registry`` (see the module contract)."""

    def __init__(
        self,
        registry: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_pending_calls: int = 0,
        max_concurrent_streams: int = 0,
        stall: bool = False,
    ) -> None:
        self.host, self.requested_port = host, port
        self.max_pending_calls = max_pending_calls
        self.max_concurrent_streams = max_concurrent_streams
        self.stall = stall
        self.port = 0
        self.models: dict[tuple[str, str], _Model] = {}
        for name, info in scan_registry(registry).items():
            versions = [str(v) for v in info.versions]
            chosen = default_version(info, info.versions)
            for version in info.versions:
                signature = load_manifest(info.version(version).manifest_path).signature
                model = _Model(name, str(version), signature, versions)
                self.models[(name, str(version))] = model
                if version == chosen:
                    self.models[(name, "")] = model
        self._server: grpc.aio.Server | None = None

    def _model(self, name: str, version: str) -> _Model | None:
        return self.models.get((name, version))

    async def _infer(self, request: pb.ModelInferRequest, context: Any) -> bytes:
        while self.stall:  # blocks the loop for good (module contract)
            time.sleep(3600)  # noqa: ASYNC251 (blocking the loop is the point)
        model = self._model(request.model_name, request.model_version)
        if model is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.model_name!r}")
            raise AssertionError("unreachable")
        return self._answer(model, request)

    def _answer(self, model: _Model, request: pb.ModelInferRequest) -> bytes:
        rows = (
            int(request.inputs[0].shape[0])
            if model.batchable and request.inputs and request.inputs[0].shape
            else 1
        )
        body = model.response(rows, tuple(o.name for o in request.outputs))
        return body + wire.field(3, request.id.encode()) if request.id else body

    async def _stream(
        self, requests: AsyncIterator[pb.ModelInferRequest], context: Any
    ) -> AsyncIterator[bytes]:
        async for request in requests:
            model = self._model(request.model_name, request.model_version)
            if model is None:
                failed = pb.ModelInferResponse(model_name=request.model_name, id=request.id)
                yield pb.ModelStreamInferResponse(
                    error_message="unknown model", infer_response=failed
                ).SerializeToString()
                continue
            yield wire.field(2, self._answer(model, request))

    async def _metadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        model = self._model(request.name, request.version)
        if model is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.name!r}")
            raise AssertionError("unreachable")
        response = pb.ModelMetadataResponse(name=model.name, versions=model.versions, platform="echo")
        for spec in model.signature.inputs:
            response.inputs.add(name=spec.name, datatype=spec.datatype, shape=list(spec.shape))
        for spec in model.signature.outputs:
            response.outputs.add(name=spec.name, datatype=spec.datatype, shape=list(spec.shape))
        return response

    async def _model_ready(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self._model(request.name, request.version) is not None)

    async def start(self) -> int:
        """Binds and starts; returns the port."""
        limit = 64 * 1024 * 1024
        options = [
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),
        ]
        if self.max_pending_calls:
            options.append(("grpc.server.max_pending_requests", self.max_pending_calls))
            options.append(("grpc.server.max_pending_requests_hard_limit", self.max_pending_calls))
        if self.max_concurrent_streams:
            options.append(("grpc.max_concurrent_streams", self.max_concurrent_streams))
        server = grpc.aio.server(options=options)

        def unary(fn: Any, request: Any, response: Any = None) -> grpc.RpcMethodHandler[Any, Any]:
            return grpc.unary_unary_rpc_method_handler(fn, request.FromString, response)

        async def live(request: Any, context: Any) -> pb.ServerLiveResponse:
            return pb.ServerLiveResponse(live=True)

        async def ready(request: Any, context: Any) -> pb.ServerReadyResponse:
            return pb.ServerReadyResponse(ready=True)

        handlers = {
            "ModelInfer": unary(self._infer, pb.ModelInferRequest),
            "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(
                self._stream, pb.ModelInferRequest.FromString
            ),
            "ModelMetadata": unary(
                self._metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse.SerializeToString
            ),
            "ModelReady": unary(
                self._model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse.SerializeToString
            ),
            "ServerLive": unary(live, pb.ServerLiveRequest, pb.ServerLiveResponse.SerializeToString),
            "ServerReady": unary(ready, pb.ServerReadyRequest, pb.ServerReadyResponse.SerializeToString),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_SERVICE, handlers),))
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.port = server.add_insecure_port(f"{host}:{self.requested_port}")
        await server.start()
        self._server = server
        return self.port

    async def stop(self, grace: float = 1.0) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)


async def _serve(args: argparse.Namespace) -> int:
    server = EchoServer(
        args.registry,
        args.host,
        args.port,
        max_pending_calls=args.max_pending_calls,
        max_concurrent_streams=args.max_concurrent_streams,
        stall=args.stall,
    )
    port = await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    if not args.stall:  # a stalled loop never runs a handler: SIGTERM's default action ends it
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
    print(f"infergate echo listening on {args.host}:{port}", flush=True)
    await stopping.wait()
    await server.stop()
    return 0


def main(argv: list[str]) -> int:
    """``infergate-load echo-server --registry DIR [--host 127.0.0.1] [--port 0]``: serve until SIGTERM."""
    parser = argparse.ArgumentParser(prog="infergate-load echo-server", description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, required=True, help="registry whose signatures to echo")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: any free port)")
    limits = {
        "--max-pending-calls": "calls gRPC core holds for the loop (default: core's)",
        "--max-concurrent-streams": "HTTP/2 streams per connection (default: core's)",
    }
    for flag, text in limits.items():
        parser.add_argument(flag, type=int, default=0, help=text)
    parser.add_argument(
        "--stall",
        action="store_true",
        help="the first ModelInfer blocks the loop for good: gRPC core refuses what its limits do not hold",
    )
    return asyncio.run(_serve(parser.parse_args(argv)))
