"""Server lifecycle: load the registry, bind gRPC (V2 service, health, reflection) and /metrics, and drain
gracefully.

Contract of :meth:`GatewayServer.stop`: readiness and health turn NOT_SERVING first, new inference
requests are refused with UNAVAILABLE, requests already accepted run to completion (up to the grace
period), then sessions are closed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from typing import Any

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2
from prometheus_client import CollectorRegistry

from gateway import control, security, tls
from gateway.acceptors import Acceptors
from gateway.background import cancel_and_wait
from gateway.concurrency import ConcurrencyLimit, LimitConfig
from gateway.config import GatewayConfig
from gateway.cores import PROCESS_CORES
from gateway.dataplane import DataPlane
from gateway.errors import GatewayError
from gateway.logs import AccessLog
from gateway.metrics import GatewayMetrics, MetricsHTTPServer
from gateway.models import ModelTable
from gateway.poller import apply_choice
from gateway.rollout import RolloutController
from gateway.rollout_drift import MonitorDrift
from gateway.rollout_events import RolloutNotifier
from gateway.runner import available_providers
from gateway.sampler import Sampler
from gateway.servicer import InferenceServicer
from gateway.shipper import Shipper
from gateway.watcher import RegistryWatcher
from gateway.wire import passthrough
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc as pb_grpc
from protos._pool import POOL, add_files
from registry.layout import scan_registry, select_versions

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
#: The method the extra call acceptors take calls for (:mod:`gateway.acceptors`).
MODEL_INFER = "ModelInfer"
#: Methods whose handlers return encoded bytes (gateway.wire).
ENCODED_METHODS = frozenset({MODEL_INFER, "ModelStreamInfer"})


class GatewayServer:
    """One gateway process: model table, gRPC server and metrics endpoint."""

    def __init__(self, config: GatewayConfig, *, metrics_registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.metrics = GatewayMetrics(
            metrics_registry if metrics_registry is not None else CollectorRegistry()
        )
        self.table = ModelTable(
            config.registry,
            self.metrics,
            default_intra_op_threads=config.default_intra_op_threads,
            device=config.device,
            require_gpu=config.require_gpu,
            trusted_keys=config.trusted_keys,
        )
        self.sampler: Sampler | None = None
        self.shipper: Shipper | None = None
        if config.sampling:
            self.sampler = Sampler(rate_override=config.sample_rate, metrics=self.metrics)
            self.shipper = Shipper(
                self.sampler,
                config.monitor_url,
                token_file=config.monitor_token_file,
                tls_ca=config.monitor_tls_ca,
            )
        self.limit = concurrency_limit(config)
        polling = config.poll_interval > 0 and control.watcher_enabled(config.model_control)
        self.rollout_notifier = RolloutNotifier(
            config.rollout_webhook, secret_file=config.rollout_webhook_secret_file
        )
        drift = (
            MonitorDrift(config.monitor_url, token_file=config.monitor_read_token_file)
            if config.sampling
            else None
        )
        self.rollouts = RolloutController(
            self.table,
            self.metrics.rollout,
            tick_s=config.rollout_tick_s,
            notifier=self.rollout_notifier,
            drift=drift,
            announce_observed=config.worker_index in (None, 0),
            reload=polling,
        )
        self.plane = DataPlane(
            self.table,
            self.metrics,
            self.sampler,
            AccessLog(config.access_log_rate, shed_rate=config.access_log_shed_rate),
            self.limit,
            self.rollouts,
        )
        self.servicer = InferenceServicer(self.table, self.plane)
        self.health = health_aio.HealthServicer()
        self.watcher = RegistryWatcher(self.table, config.poll_interval) if polling else None
        self._server: grpc.aio.Server | None = None
        self._core_watch: asyncio.Task[None] | None = None
        self.acceptors = Acceptors()
        self._metrics_http: MetricsHTTPServer | None = None
        self.port = 0
        self.metrics_port = 0

    async def start(self) -> None:
        """Loads every model, then binds and starts serving. Raises OSError if a port is taken."""
        await self.table.load_all()
        interceptors = security.interceptors(self.config, self.metrics.registry)
        server = grpc.aio.server(options=server_options(self.config), interceptors=interceptors)
        servicer = control.guarded(self.servicer, self.config.model_control)
        generic = _GenericHandlersOnly(server, registered=(MODEL_INFER,) if self.config.accept_ahead else ())
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, generic)  # type: ignore[no-untyped-call]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, generic)
        add_files(health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
            pool=POOL,
        )
        self.port = tls.bind(server, self.config.address, security.certificate_files(self.config))
        await server.start()
        self._core_watch = apply_choice(self.config.poller_scheduling, PROCESS_CORES)
        for path, handler in generic.registered.items():  # ModelInfer when accept_ahead > 0
            self.acceptors.start(server, path, handler, interceptors, self.config.accept_ahead)
        self._server = server
        if self.config.metrics_port is not None:
            self._metrics_http = MetricsHTTPServer(
                self.metrics.registry, self.config.host, self.config.metrics_port
            )
            self.metrics_port = self._metrics_http.port
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.servicer.ready = True
        if self.watcher is not None:
            self.watcher.start()
        if self.shipper is not None:
            self.shipper.start()
        self.rollout_notifier.start()
        await self.rollouts.tick()  # resume a rollout left in the registry before the first request
        self.rollouts.start()
        log.info("serving %s on %s:%d", self.config.registry, self.config.host, self.port)

    async def stop(self, grace: float | None = None) -> None:
        """Drains and stops; idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        self.servicer.draining = True
        if self.watcher is not None:
            await self.watcher.stop()
        await self.rollouts.stop()
        await self.rollout_notifier.stop()
        await cancel_and_wait(self._core_watch)
        self._core_watch = None
        await self.health.enter_graceful_shutdown()
        await server.stop(self.config.grace_seconds if grace is None else grace)
        await self.acceptors.wait_closed()
        await self.table.close()
        if self.shipper is not None:
            await self.shipper.stop()
        if self._metrics_http is not None:
            self._metrics_http.close()
            self._metrics_http = None
        log.info("stopped")


class _GenericHandlersOnly:
    """What the generated ``add_*_to_server`` functions see of the server: their generic handlers are
    added, their registered-method handlers only for the method names in ``registered`` (ModelInfer, for
    the extra call acceptors of :mod:`gateway.acceptors`), kept in :attr:`registered` by full path.
    grpc.aio's server loop keeps one pending "next call" request per registered method and waits on all
    of them for every call it takes; registering all of ours (14 methods) cost a tiny request at C=1
    about 10 µs of p50 (0.67 against 0.66 ms, 4 alternating rounds). Other calls reach the same
    handlers through the generic lookup.

    The methods in :data:`ENCODED_METHODS` answer with bytes the data plane already encoded
    (:mod:`gateway.wire`): their handlers get :func:`gateway.wire.passthrough` as response serializer. The
    generated code adds a service's generic handler and then passes its handlers by name to
    ``add_registered_method_handlers``; for the service of those methods the generic handler is built
    there, from the handlers with that serializer, and the generated one is not added."""

    def __init__(self, server: grpc.aio.Server, registered: tuple[str, ...] = ()) -> None:
        self._server = server
        self._wanted = registered
        self.registered: dict[str, Any] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        kept = tuple(
            handler
            for handler in handlers
            if getattr(handler, "service_name", lambda: None)() != SERVICE_NAME
        )
        if kept:
            self._server.add_generic_rpc_handlers(kept)

    def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
        """Registers the wanted methods of ``service`` (see the class docstring); ignores the rest."""
        if service == SERVICE_NAME:
            handlers = {
                name: handler._replace(response_serializer=passthrough)
                if name in ENCODED_METHODS
                else handler
                for name, handler in handlers.items()
            }
            self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
        wanted = {name: handler for name, handler in handlers.items() if name in self._wanted}
        if wanted:
            self._server.add_registered_method_handlers(service, wanted)  # type: ignore[attr-defined]
            self.registered.update({f"/{service}/{name}": handler for name, handler in wanted.items()})


def server_options(config: GatewayConfig) -> list[tuple[str, int]]:
    """gRPC core channel arguments: message limits, SO_REUSEPORT, and the transport-level push-back."""
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.so_reuseport", 1 if config.reuse_port else 0),
    ]
    if config.max_concurrent_streams:
        options.append(("grpc.max_concurrent_streams", config.max_concurrent_streams))
    if config.max_pending_calls:
        options.append(("grpc.server.max_pending_requests", config.max_pending_calls))
        options.append(("grpc.server.max_pending_requests_hard_limit", config.max_pending_calls))
    return options


def concurrency_limit(config: GatewayConfig) -> ConcurrencyLimit | None:
    """The data plane's admission limit: adaptive up to ``max_concurrency``, fixed, or none."""
    ceiling = config.max_concurrency
    if not ceiling:
        return None
    if not config.adaptive_concurrency:
        return ConcurrencyLimit(LimitConfig(initial=ceiling, min_limit=ceiling, max_limit=ceiling))
    return ConcurrencyLimit(
        LimitConfig(initial=ceiling, min_limit=min(LimitConfig.min_limit, ceiling), max_limit=ceiling)
    )


async def check_providers(config: GatewayConfig) -> int:
    """``--check-providers``: loads every model as configured, prints the provider each version got (and
    why it fell back), then exits; 1 when a version the policy selects failed to load or a ``model.toml``
    is invalid (a version that is only not selected is listed, and is no failure)."""
    print("onnxruntime offers:", ", ".join(available_providers()))
    infos = await asyncio.to_thread(scan_registry, config.registry)
    selected = {(name, str(v)) for name, info in infos.items() for v in select_versions(info)}
    table = ModelTable(config.registry, device=config.device, require_gpu=config.require_gpu)
    results = await asyncio.gather(
        *(table.load_model(name, infos[name]) for name in sorted(infos)), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, GatewayError):
            raise result  # a bug, not a verdict on the models: let it show
    broken = {name: info.config_error for name, info in infos.items() if info.config_error}
    providers = {(lv.model, str(lv.version)): lv.runner.provider for lv in table.all_loaded()}
    failed = bool(broken)
    for entry in table.index():
        got = providers.get((entry.name, entry.version), "-")
        failed |= (entry.name, entry.version) in selected and entry.state != "READY"
        reason = broken.get(entry.name) or entry.reason
        print(f"{entry.name}:{entry.version}  {entry.state}  provider={got}  {reason}".rstrip())
    await table.close()
    return 1 if failed else 0


def freeze_startup_heap() -> int:
    """Collects once, then moves every object alive after start-up (modules, sessions, protobuf
    descriptors, metric families: ~60k objects) into the collector's permanent generation.

    Without it each full collection under load re-scans that heap: measured 40 ms per gen-2 pass with
    the demo models, a stall every few seconds that lands in p99 and in 50 ms budgets. Objects made
    later (requests, swapped-in versions) are collected as usual. Returns the number frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


async def serve(config: GatewayConfig) -> int:
    """Runs until SIGTERM or SIGINT, then drains. Returns the process exit code."""
    server = GatewayServer(config)
    await server.start()
    log.debug("froze %d start-up objects out of the cyclic collector", freeze_startup_heap())
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    who = (
        "gateway"
        if config.worker_index is None
        else f"gateway worker {config.worker_index} pid {os.getpid()}"
    )
    # One write() for the whole line: print() writes the text and its newline separately, and workers
    # sharing stdout could then join their lines (a reader looking for each worker's line missed one).
    sys.stdout.write(
        f"infergate {who} listening on {config.host}:{server.port} (metrics :{server.metrics_port})\n"
    )
    sys.stdout.flush()
    await stopping.wait()
    log.info("signal received: draining")
    await server.stop()
    return 0
