"""The data plane: one inference, from a decoded ``ModelInferRequest`` to its ``ModelInferResponse``.

It owns every step between the transport and the batcher, for the unary and the streaming paths alike (and any
later front end): route (a staged rollout's split, :meth:`DataPlane._split`, is the one place that decides
which version a request without ``model_version`` reaches) -> lease the version -> admit (the adaptive
concurrency limit) -> validate and decode -> deadline and priority -> ``batcher.submit`` -> encode ->
statistics, metrics, sampling hand-off and the access log. The servicer only adapts gRPC calls to it and maps
errors to status codes.

Contracts:
- :meth:`DataPlane.infer` returns the encoded response (bytes, :mod:`gateway.wire`) or raises a
  :class:`GatewayError` (or, for a bug, any other exception, which the transport answers INTERNAL).
  Every attempt on a version is counted exactly once in ``infergate_requests_total`` and
  ``infergate_request_duration_seconds``: a canary request the candidate failed counts that failure
  under the candidate and the stable version's answer under the stable one.
- Per-request work is bounded and allocation-light: metric children, the encoded response fields and the
  validation plan are resolved once per loaded version (:class:`_VersionHot`, kept on the version); a
  request that runs alone inline never makes the batcher's coroutine (:meth:`Batcher.serve`); request ids
  and access-log records are built only when something will use them.
- Admission never blocks: when the adaptive limit refuses, the call is answered RESOURCE_EXHAUSTED before
  it costs decoding, validation or a queue slot. Overload refusals pass the access log's rate limit
  (:meth:`AccessLog.decide`), so a flood of them does not cost a log line each.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from gateway.concurrency import ConcurrencyLimit
from gateway.deadlines import request_schedule
from gateway.deferred import defer
from gateway.errors import DeadlineExceededError, InvalidArgumentError, ResourceExhaustedError, status_name
from gateway.execution import BatchResult
from gateway.logs import AccessLog, access_record
from gateway.metrics import GatewayMetrics
from gateway.models import ModelTable, release
from gateway.rollout import RolloutController
from gateway.rollout_live import LiveRollout
from gateway.sample_offers import SampleOffers
from gateway.sampler import Sampler
from gateway.validate import DecodedRequest, RequestPlan, decode_planned, request_plan
from gateway.version import LoadedVersion
from gateway.wire import ResponseWire, answered_by
from protos import inference_pb2 as pb

#: Status names as ``infergate_requests_total{code}`` and the access log spell them.
OK = "OK"


@dataclass(eq=False, slots=True)
class _VersionHot:
    """What the hot path needs of one loaded version, resolved once (label lookups take a lock); kept on
    the version (``LoadedVersion.hot``) with the data plane that resolved it."""

    owner: object
    queue_duration: Any
    request_duration: Any
    requests_ok: Any
    #: The version's responses, encoded from fields encoded once (gateway.wire).
    wire: ResponseWire
    plan: RequestPlan


class DataPlane:
    """Runs inferences against a :class:`ModelTable`; shared by every transport path."""

    def __init__(
        self,
        table: ModelTable,
        metrics: GatewayMetrics | None = None,
        sampler: Sampler | None = None,
        access_log: AccessLog | None = None,
        limit: ConcurrencyLimit | None = None,
        rollouts: RolloutController | None = None,
    ) -> None:
        self.table = table
        self.rollouts = rollouts
        self.rollout_metrics = rollouts.metrics if rollouts is not None else None
        self.metrics = metrics
        self._offers = SampleOffers(sampler) if sampler is not None else None
        self.access_log = access_log
        self.limit = limit
        self._owner = object()  # marks the per-version state this plane resolved (_hot_of)
        # Generated request ids: 32 hex digits, a per-process random half and a counter (unique, cheap).
        self._id_prefix = os.urandom(8).hex()
        self._ids = itertools.count(1)

    def _hot_of(self, loaded: LoadedVersion) -> _VersionHot:
        hot: _VersionHot | None = loaded.hot
        if hot is not None and hot.owner is self._owner:
            return hot
        version = str(loaded.version)
        metrics = self.metrics
        hot = _VersionHot(
            self._owner,
            metrics.queue_duration.labels(loaded.model, version) if metrics is not None else None,
            metrics.request_duration.labels(loaded.model, version) if metrics is not None else None,
            metrics.requests.labels(loaded.model, version, OK) if metrics is not None else None,
            ResponseWire(loaded.model, version, loaded.output_datatypes),
            request_plan(loaded.signature),
        )
        loaded.hot = hot
        return hot

    def infer(
        self,
        request: pb.ModelInferRequest,
        grpc_remaining: float | None = None,
        peer: Callable[[], str] | None = None,
    ) -> Coroutine[Any, Any, bytes]:
        """One inference: resolve the version, admit, validate, batch, encode; the awaitable returns the
        serialized ``ModelInferResponse`` (gateway.wire) or raises GatewayError. A plain function handing
        back the coroutine that does the work, so the caller awaits it directly: one level less in the
        chain every suspension and resumption goes through.

        ``grpc_remaining`` is the call's remaining gRPC deadline in seconds (None: no deadline); ``peer``
        names the client, called only when the access log records this request. A request without an
        ``id`` gets a generated one, echoed in the response.
        """
        if not request.id:
            request.id = f"{self._id_prefix}{next(self._ids):016x}"
        rollouts = self.rollouts
        live = (
            rollouts.live(request.model_name) if rollouts is not None and not request.model_version else None
        )
        if live is None:
            return self._infer(request, grpc_remaining, peer, request.model_version, None)
        return self._split(request, grpc_remaining, peer, live)

    async def _split(
        self,
        request: pb.ModelInferRequest,
        grpc_remaining: float | None,
        peer: Callable[[], str] | None,
        live: LiveRollout,
    ) -> bytes:
        """A request without a version while ``live`` runs: the canary's share goes to the candidate, and
        a candidate failure is answered by the stable version (counted against the candidate unless the
        stable version refuses the input too); the rest goes to the default (stable) version, mirrored to
        the candidate in shadow mode."""
        window = live.window
        started = time.perf_counter()
        if live.canary and live.picks(request.id):
            try:
                response = await self._infer(request, grpc_remaining, peer, str(live.candidate), live)
            except Exception:
                failed_after = time.perf_counter() - started
                try:
                    response = await self._infer(request, grpc_remaining, peer, str(live.stable), None)
                except InvalidArgumentError:
                    raise  # the stable version refuses it too: the client's input, not the candidate
                except Exception:
                    window.candidate.record(False, failed_after)
                    raise
                window.candidate.record(False, failed_after)
                return response
            window.candidate.record(True, time.perf_counter() - started)
            return response
        try:
            response = await self._infer(request, grpc_remaining, peer, "", live)
        except Exception as exc:
            if not isinstance(exc, InvalidArgumentError):
                window.stable.record(False, time.perf_counter() - started)
            raise
        if answered_by(response, request.model_name, str(live.stable)):
            window.stable.record(True, time.perf_counter() - started)
        return response

    async def _infer(
        self,
        request: pb.ModelInferRequest,
        grpc_remaining: float | None,
        peer: Callable[[], str] | None,
        version: str,
        live: LiveRollout | None,
    ) -> bytes:
        started = time.perf_counter_ns()
        limit = self.limit
        acquired = False  # holds a slot of the concurrency limit
        budget_s = 0.0  # > 0 once decoded: the budget the concurrency limit judges the call against
        late = False
        loaded: LoadedVersion | None = None
        try:
            loaded = self.table.acquire(request.model_name, version)
            try:
                if limit is not None:
                    if not limit.try_acquire():
                        self._count_shed(loaded, "concurrency_limit")
                        raise ResourceExhaustedError(
                            f"server overloaded: {limit.inflight} inferences in flight "
                            f"(adaptive limit {limit.limit}); retry with backoff"
                        )
                    acquired = True
                hot = self._hot_of(loaded)
                decoded = decode_planned(request, hot.plan, loaded.max_batch_size)
                now = asyncio.get_running_loop().time()
                batching = loaded.config.batching
                deadline, priority = request_schedule(
                    request,
                    now=now,
                    grpc_remaining=grpc_remaining,
                    budget_ms=batching.latency_budget_ms,
                    levels=batching.priority_levels,
                )
                if acquired:
                    budget_s = max(deadline - now, 1e-6)
                decoded_at = time.perf_counter_ns()
                outcome = loaded.batcher.serve(decoded, deadline, priority)
                result = outcome if isinstance(outcome, BatchResult) else await outcome
                response, result_fields = self._answer(
                    request, loaded, hot, decoded, result, started, decoded_at, live
                )
            except BaseException as exc:
                late = isinstance(exc, DeadlineExceededError)
                loaded.stats.record_failure(time.perf_counter_ns() - started)
                raise
            finally:
                release(loaded)
        except Exception as exc:
            self._count_failure(loaded, exc, started)
            access = self.access_log
            if access is not None and access.decide(error=True, status=status_name(exc)):
                self._access(access, request, loaded, exc, started, None, peer)
            raise
        finally:
            if acquired and limit is not None:
                if budget_s:
                    held = (time.perf_counter_ns() - started) / 1e9
                    limit.release(max(held, budget_s) if late else held, budget_s)
                else:
                    limit.forget()  # refused as invalid input: says nothing about latency
        access = self.access_log
        if access is not None and access.decide(error=False):
            self._access(access, request, loaded, None, started, result_fields, peer)
        return response

    def _answer(
        self,
        request: pb.ModelInferRequest,
        loaded: LoadedVersion,
        hot: _VersionHot,
        decoded: DecodedRequest,
        result: BatchResult,
        started: int,
        decoded_at: int,
        live: LiveRollout | None,
    ) -> tuple[bytes, tuple[int, int, int]]:
        """The encoded response to an answered request, with its statistics, metrics, sample and shadow
        copy."""
        answered_at = time.perf_counter_ns()
        response = hot.wire.encode(request.id, decoded.output_names, result.outputs)
        finished = time.perf_counter_ns()
        if live is not None and (
            loaded.version == live.candidate or (not live.canary and live.picks(request.id))
        ):
            # After the answer is built; the copy runs as its own task and never delays this request.
            sample = self._offers.shadow if self._offers is not None else None
            live.mirror(self.table, self.rollout_metrics, loaded, decoded, result.outputs, request.id, sample)
        # Counted after the handler returns, while gRPC sends the answer (gateway.deferred).
        defer(
            self._record,
            request.id,
            loaded,
            hot,
            decoded,
            result,
            finished - started,
            decoded_at - started,
            finished - answered_at,
        )
        return response, (result.queue_ns, result.compute_ns, result.batch_rows)

    def _record(
        self,
        request_id: str,
        loaded: LoadedVersion,
        hot: _VersionHot,
        decoded: DecodedRequest,
        result: BatchResult,
        total_ns: int,
        decode_ns: int,
        encode_ns: int,
    ) -> None:
        """An answered request's statistics, metrics and sample offer (deferred by :meth:`_answer`)."""
        if self._offers is not None:
            self._offers.answered(request_id, loaded, decoded, result.outputs)
        loaded.stats.record_request(total_ns, result.queue_ns, decode_ns, result.compute_ns, encode_ns)
        if hot.requests_ok is not None:
            hot.queue_duration.observe(result.queue_ns / 1e9)
            hot.request_duration.observe(total_ns / 1e9)
            hot.requests_ok.inc()

    def _count_shed(self, loaded: LoadedVersion, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.shed.labels(loaded.model, str(loaded.version), reason).inc()

    def _count_failure(self, loaded: LoadedVersion | None, exc: BaseException, started: int) -> None:
        if self.metrics is None:
            return
        labels = (loaded.model, str(loaded.version)) if loaded is not None else ("", "")
        self.metrics.requests.labels(*labels, status_name(exc)).inc()
        self.metrics.request_duration.labels(*labels).observe((time.perf_counter_ns() - started) / 1e9)

    def _access(
        self,
        access: AccessLog,
        request: pb.ModelInferRequest,
        loaded: LoadedVersion | None,
        exc: BaseException | None,
        started: int,
        result: tuple[int, int, int] | None,
        peer: Callable[[], str] | None,
    ) -> None:
        """Builds and logs the access record (only called once ``access`` decided to record it)."""
        record = access_record(
            request.id,
            request.model_name,
            peer() if peer is not None else "",
            str(loaded.version) if loaded is not None else None,
            result,
            OK if exc is None else status_name(exc),
            time.perf_counter_ns() - started,
        )
        access.write(record, error=exc is not None)
