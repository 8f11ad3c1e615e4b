"""The gRPC transport: a thin adapter from GRPCInferenceService calls to the data plane and the table.

Inference (unary and streaming) goes to :class:`gateway.dataplane.DataPlane`; metadata and repository
calls go to the model table. Error mapping happens in one place, :func:`status_of`: a
:class:`GatewayError` becomes the status its class names, with its message; any other exception becomes
INTERNAL "internal error", with the traceback in the log only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from gateway import metadata
from gateway.dataplane import DataPlane
from gateway.errors import GatewayError, ModelLoadError, status_name
from gateway.models import ModelTable
from gateway.wire import stream_response
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc as pb_grpc
from registry.rollout import rollout_facts

log = logging.getLogger(__name__)


#: Requests one ModelStreamInfer stream may have in flight before the server stops reading from it.
STREAM_MAX_INFLIGHT = 64

T = TypeVar("T")


def status_of(error: BaseException) -> grpc.StatusCode:
    """The status code for an error (INTERNAL for anything outside the hierarchy)."""
    return grpc.StatusCode[status_name(error)]


def public_message(error: BaseException) -> str:
    """What a client may see: the message of a GatewayError, else a fixed text."""
    return str(error) if isinstance(error, GatewayError) else "internal error"


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """KServe V2 / Open Inference Protocol service over a :class:`ModelTable`."""

    def __init__(self, table: ModelTable, plane: DataPlane | None = None) -> None:
        self.table = table
        self.plane = plane if plane is not None else DataPlane(table)
        self.ready = False
        self.draining = False

    # -- health and metadata -------------------------------------------------------------------
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.ready and not self.draining)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        try:
            self.table.resolve(request.name, request.version)
        except GatewayError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=not self.draining)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        return metadata.server_metadata()

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        def build() -> pb.ModelMetadataResponse:
            answering = self.table.resolve(request.name, request.version)
            info = self.table.model_info(request.name)
            rollout = rollout_facts(info.rollout, info.config.rollout.steps) if info is not None else None
            return metadata.model_metadata(
                request.name, self.table.loaded_versions(request.name), answering, rollout
            )

        return await _guard(context, _now(build))

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        return await _guard(
            context, _now(lambda: metadata.model_config(self.table.resolve(request.name, request.version)))
        )

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Any
    ) -> pb.ModelStatisticsResponse:
        def build() -> pb.ModelStatisticsResponse:
            if not request.name:
                return metadata.model_statistics(self.table.all_loaded())
            if request.version:
                return metadata.model_statistics([self.table.resolve(request.name, request.version)])
            return metadata.model_statistics(self.table.loaded_versions(request.name))

        return await _guard(context, _now(build))

    # -- repository ----------------------------------------------------------------------------
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Any
    ) -> pb.RepositoryIndexResponse:
        return metadata.repository_index(self.table.index(), request.ready)

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        async def load() -> pb.RepositoryModelLoadResponse:
            await self.table.load_model(request.model_name, force=True)
            if not self.table.loaded_versions(request.model_name):
                raise ModelLoadError(
                    f"model '{request.model_name}': no version could be loaded (see RepositoryIndex)"
                )
            return pb.RepositoryModelLoadResponse()

        return await _guard(context, load())

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        async def unload() -> pb.RepositoryModelUnloadResponse:
            await self.table.unload_model(request.model_name)
            return pb.RepositoryModelUnloadResponse()

        return await _guard(context, unload())

    # -- inference -----------------------------------------------------------------------------
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> bytes:
        """Answers with the encoded response (the server registers ModelInfer to send bytes as they are)."""
        try:
            return await self.plane.infer(request, context.time_remaining(), context.peer)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await _abort(context, exc)
            raise AssertionError("unreachable: context.abort raises") from exc

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: Any
    ) -> AsyncIterator[bytes]:
        """Answers each streamed request as soon as it completes (responses carry the request ``id``).

        Errors are reported in-stream (``error_message``) and the stream continues. At most
        :data:`STREAM_MAX_INFLIGHT` requests of one stream run at once; past that the server stops
        reading, which pushes back on the client through gRPC flow control.
        """
        responses: asyncio.Queue[bytes | None] = asyncio.Queue()  # encoded ModelStreamInferResponses
        slots = asyncio.Semaphore(STREAM_MAX_INFLIGHT)
        tasks: set[asyncio.Task[None]] = set()

        async def answer(request: pb.ModelInferRequest) -> None:
            try:
                response = await self.plane.infer(request, context.time_remaining(), context.peer)
                responses.put_nowait(stream_response(response))
            except Exception as exc:
                if not isinstance(exc, GatewayError):
                    log.exception("stream request %r failed", request.id)
                failed = pb.ModelInferResponse(model_name=request.model_name, id=request.id)
                responses.put_nowait(
                    pb.ModelStreamInferResponse(
                        error_message=public_message(exc), infer_response=failed
                    ).SerializeToString()
                )
            finally:
                slots.release()

        async def read() -> None:
            try:
                async for request in request_iterator:
                    await slots.acquire()
                    task = asyncio.create_task(answer(request))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.gather(*tasks)
            finally:
                responses.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (item := await responses.get()) is not None:
                yield item
            await reader  # re-raises a failure of the request iterator
        finally:
            reader.cancel()
            for task in list(tasks):
                task.cancel()


async def _now(build: Callable[[], T]) -> T:
    return build()


async def _guard(context: Any, work: Awaitable[T]) -> T:
    """Awaits ``work``; maps its failure to a gRPC status and aborts the call with it."""
    try:
        return await work
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        await _abort(context, exc)
        raise AssertionError("unreachable: context.abort raises") from exc


async def _abort(context: Any, exc: Exception) -> None:
    """Aborts the call with the error's status and public message (raises, as ``context.abort`` does)."""
    code = status_of(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.exception("internal error", exc_info=exc)
    await context.abort(code, public_message(exc))
