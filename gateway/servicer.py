"""The gRPC transport: GRPCInferenceService methods decode, validate, run, encode and map errors.

Everything else lives below it (model table, validation, runner). Error mapping happens in one place,
:data:`STATUS_BY_ERROR`: a :class:`GatewayError` becomes its status code with its message; any other
exception becomes INTERNAL "internal error", with the traceback in the log only.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import grpc
import numpy.typing as npt

from gateway import metadata
from gateway.codec import encode_array
from gateway.deadlines import request_deadline, request_priority
from gateway.errors import (
    DeadlineExceededError,
    GatewayError,
    InvalidArgumentError,
    ModelLoadError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
)
from gateway.logs import AccessLog
from gateway.metrics import GatewayMetrics
from gateway.models import ModelTable
from gateway.sampler import Sampler
from gateway.validate import decode_request
from gateway.version import LoadedVersion
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[GatewayError], grpc.StatusCode] = {
    InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
    NotFoundError: grpc.StatusCode.NOT_FOUND,
    UnavailableError: grpc.StatusCode.UNAVAILABLE,
    ModelLoadError: grpc.StatusCode.UNAVAILABLE,
    ResourceExhaustedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    DeadlineExceededError: grpc.StatusCode.DEADLINE_EXCEEDED,
}

#: Requests one ModelStreamInfer stream may have in flight before the server stops reading from it.
STREAM_MAX_INFLIGHT = 64

T = TypeVar("T")


def status_of(error: BaseException) -> grpc.StatusCode:
    """The status code for an error (INTERNAL for anything outside the hierarchy)."""
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return grpc.StatusCode.INTERNAL


def public_message(error: BaseException) -> str:
    """What a client may see: the message of a GatewayError, else a fixed text."""
    return str(error) if isinstance(error, GatewayError) else "internal error"


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """KServe V2 / Open Inference Protocol service over a :class:`ModelTable`."""

    def __init__(
        self,
        table: ModelTable,
        metrics: GatewayMetrics | None = None,
        sampler: Sampler | None = None,
        access_log: AccessLog | None = None,
    ) -> None:
        self.table = table
        self.metrics = metrics
        self.sampler = sampler
        self.access_log = access_log
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
            return metadata.model_metadata(request.name, self.table.loaded_versions(request.name), answering)

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
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        return await _guard(context, self.infer(request, context.time_remaining(), context.peer()))

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: Any
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Answers each streamed request as soon as it completes (responses carry the request ``id``).

        Errors are reported in-stream (``error_message``) and the stream continues. At most
        :data:`STREAM_MAX_INFLIGHT` requests of one stream run at once; past that the server stops
        reading, which pushes back on the client through gRPC flow control.
        """
        responses: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        slots = asyncio.Semaphore(STREAM_MAX_INFLIGHT)
        tasks: set[asyncio.Task[None]] = set()

        async def answer(request: pb.ModelInferRequest) -> None:
            try:
                response = await self.infer(request, context.time_remaining(), context.peer())
                responses.put_nowait(pb.ModelStreamInferResponse(infer_response=response))
            except Exception as exc:
                if not isinstance(exc, GatewayError):
                    log.exception("stream request %r failed", request.id)
                failed = pb.ModelInferResponse(model_name=request.model_name, id=request.id)
                responses.put_nowait(
                    pb.ModelStreamInferResponse(error_message=public_message(exc), infer_response=failed)
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

    async def infer(
        self, request: pb.ModelInferRequest, grpc_remaining: float | None = None, peer: str = ""
    ) -> pb.ModelInferResponse:
        """One inference: resolve the version, validate, batch, encode. Raises GatewayError subclasses.

        ``grpc_remaining`` is the call's remaining gRPC deadline in seconds (None: no deadline). A request
        without an ``id`` gets a generated one, echoed in the response and used in the access log.
        """
        started = time.perf_counter_ns()
        loop = asyncio.get_running_loop()
        if not request.id:
            request.id = uuid.uuid4().hex
        trace: dict[str, Any] = {"request_id": request.id, "model": request.model_name, "peer": peer}
        try:
            with self.table.lease(request.model_name, request.model_version) as loaded:
                trace["version"] = str(loaded.version)
                try:
                    response = await self._run(request, loaded, started, loop.time(), grpc_remaining, trace)
                except BaseException:
                    loaded.stats.record_failure(time.perf_counter_ns() - started)
                    raise
        except Exception as exc:
            code = status_of(exc)
            self._count(request, code, started)
            self._access(trace, code.name, started, error=True)
            raise
        self._access(trace, "OK", started, error=False)
        return response

    def _access(self, trace: dict[str, Any], status: str, started: int, *, error: bool) -> None:
        if self.access_log is not None:
            trace["status"] = status
            trace["duration_ms"] = round((time.perf_counter_ns() - started) / 1e6, 3)
            self.access_log.record(trace, error=error)

    async def _run(
        self,
        request: pb.ModelInferRequest,
        loaded: LoadedVersion,
        started: int,
        now: float,
        grpc_remaining: float | None,
        trace: dict[str, Any],
    ) -> pb.ModelInferResponse:
        batching = loaded.config.batching
        decoded = decode_request(request, loaded.signature, max_batch_size=loaded.max_batch_size)
        deadline = request_deadline(
            request, now=now, grpc_remaining=grpc_remaining, budget_ms=batching.latency_budget_ms
        )
        priority = request_priority(request, batching.priority_levels)
        decoded_at = time.perf_counter_ns()
        result = await loaded.batcher.submit(decoded, deadline, priority)
        answered_at = time.perf_counter_ns()
        trace["queue_ms"] = round(result.queue_ns / 1e6, 3)
        trace["compute_ms"] = round(result.compute_ns / 1e6, 3)
        trace["batch_size"] = result.batch_rows
        response = pb.ModelInferResponse(
            model_name=loaded.model, model_version=str(loaded.version), id=request.id
        )
        for name, array in zip(decoded.output_names, result.outputs, strict=True):
            datatype = loaded.output_datatypes[name]
            response.outputs.add(name=name, datatype=datatype, shape=array.shape)
            response.raw_output_contents.append(encode_array(array, datatype))
        finished = time.perf_counter_ns()
        self._sample(request, loaded, decoded.feeds, decoded.output_names, result.outputs)
        loaded.stats.record_request(
            finished - started,
            result.queue_ns,
            decoded_at - started,
            result.compute_ns,
            finished - answered_at,
        )
        if self.metrics is not None:
            labels = (loaded.model, str(loaded.version))
            self.metrics.queue_duration.labels(*labels).observe(result.queue_ns / 1e9)
            self.metrics.request_duration.labels(*labels).observe((finished - started) / 1e9)
            self.metrics.requests.labels(*labels, "OK").inc()
        return response

    def _sample(
        self,
        request: pb.ModelInferRequest,
        loaded: LoadedVersion,
        feeds: Mapping[str, npt.NDArray[Any]],
        output_names: Sequence[str],
        outputs: Sequence[npt.NDArray[Any]],
    ) -> None:
        """Offers the answered request to the sampler (O(1), never blocks; drops are counted there)."""
        sampler = self.sampler
        if sampler is None:
            return
        config = loaded.config.sampling
        if not sampler.decide(request.id, sampler.rate(config.rate)):
            return
        inputs = {spec.name: (spec.datatype, feeds[spec.name]) for spec in loaded.signature.inputs}
        answered = {
            name: (loaded.output_datatypes[name], array)
            for name, array in zip(output_names, outputs, strict=True)
        }
        sampler.offer(
            loaded.model, str(loaded.version), request.id, inputs, answered, config.max_rows_per_request
        )

    def _count(self, request: pb.ModelInferRequest, code: grpc.StatusCode, started: int) -> None:
        if self.metrics is None:
            return
        try:
            loaded = self.table.resolve(request.model_name, request.model_version)
            labels = (loaded.model, str(loaded.version))
        except GatewayError:
            labels = ("", "")
        self.metrics.requests.labels(*labels, code.name).inc()
        self.metrics.request_duration.labels(*labels).observe((time.perf_counter_ns() - started) / 1e9)


async def _now(build: Callable[[], T]) -> T:
    return build()


async def _guard(context: Any, work: Awaitable[T]) -> T:
    """Awaits ``work``; maps its failure to a gRPC status and aborts the call with it."""
    try:
        return await work
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        code = status_of(exc)
        if code is grpc.StatusCode.INTERNAL:
            log.exception("internal error")
        await context.abort(code, public_message(exc))
        raise AssertionError("unreachable: context.abort raises") from exc
