"""The model table: which versions are loaded, which one is the default, and the safe swap.

Contracts:
- :meth:`ModelTable.lease` resolves (model, version) and counts the request in flight until it exits,
  so a retired version is closed only after every request that reached it has finished.
- :meth:`ModelTable.load_model` follows the fixed order load -> check -> warm up -> publish -> drain old
  -> close old. A version that fails any step never replaces a serving one; the failure is logged,
  counted and shown by :meth:`ModelTable.index`.
- Loading runs in worker threads; the event loop never blocks on onnxruntime.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.batcher import Batcher
from gateway.codec import NUMPY_DTYPES
from gateway.errors import GatewayError, ModelLoadError, NotFoundError, UnavailableError
from gateway.metrics import GatewayMetrics
from gateway.profile import LatencyProfile
from gateway.runner import Runner, RunnerOptions
from gateway.stats import VersionStats
from gateway.validate import is_batchable
from registry.config import ModelConfig
from registry.errors import RegistryError
from registry.layout import ModelInfo, default_version, scan_registry, select_versions, version_info
from registry.manifest import load_manifest
from registry.signature import Signature, read_signature

log = logging.getLogger(__name__)


@dataclass(eq=False)
class LoadedVersion:
    """A version ready to serve: its signature, config, runner, batcher and statistics."""

    model: str
    version: int
    signature: Signature
    config: ModelConfig
    runner: Runner
    batcher: Batcher
    stats: VersionStats
    inflight: int = 0
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._idle.set()

    @property
    def max_batch_size(self) -> int:
        """Rows one request may carry; 0 when the model has no dynamic leading dim to batch on."""
        return batching_limit(self.signature, self.config)

    async def drain(self) -> None:
        """Waits until no request is in flight on this version (queued or computing)."""
        await self._idle.wait()


class VersionObserver:
    """Feeds a version's batcher events into its statistics and Prometheus metrics."""

    def __init__(self, stats: VersionStats, metrics: GatewayMetrics | None, model: str, version: int) -> None:
        self._stats = stats
        self._metrics = metrics
        self._labels = (model, str(version))

    def on_batch(self, rows: int, compute_ns: int) -> None:
        self._stats.record_batch(rows, compute_ns)
        if self._metrics is not None:
            self._metrics.batch_size.labels(*self._labels).observe(rows)

    def on_shed(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.shed.labels(*self._labels, reason).inc()

    def on_queue_depth(self, rows: int) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth.labels(*self._labels).set(rows)


def batching_limit(signature: Signature, config: ModelConfig) -> int:
    """``max_batch_size`` for batchable signatures, else 0."""
    return config.batching.max_batch_size if is_batchable(signature) else 0


@dataclass
class ModelState:
    """Everything known about one model name."""

    name: str
    info: ModelInfo | None = None
    versions: dict[int, LoadedVersion] = field(default_factory=dict)
    default: int | None = None
    failures: dict[int, str] = field(default_factory=dict)
    config_error: str | None = None
    unloaded: bool = False
    loading: set[int] = field(default_factory=set)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True)
class IndexEntry:
    """One row of RepositoryIndex: a (model, version) and its state."""

    name: str
    version: str
    state: str
    reason: str


class ModelTable:
    """Loaded model versions of one registry directory."""

    def __init__(self, registry: Path, metrics: GatewayMetrics | None = None) -> None:
        self.registry = registry
        self.metrics = metrics
        self._models: dict[str, ModelState] = {}

    async def load_all(self) -> None:
        """Loads the policy's versions of every model in the registry (failures are recorded, not raised)."""
        infos = await asyncio.to_thread(scan_registry, self.registry)
        await asyncio.gather(*(self.load_model(name, infos[name]) for name in sorted(infos)))

    async def load_model(self, name: str, info: ModelInfo | None = None) -> None:
        """(Re)loads one model per its version policy and pin.

        Raises NotFoundError if the model is not in the registry.
        """
        if info is None:
            infos = await asyncio.to_thread(scan_registry, self.registry)
            if name not in infos:
                raise NotFoundError(f"model '{name}' is not in the registry")
            info = infos[name]
        state = self._models.setdefault(name, ModelState(name))
        async with state.lock:
            state.unloaded = False
            state.info = info
            state.config_error = info.config_error
            if info.config_error is not None:
                self._count(name, "failure")
                log.error("model %s: not (re)loaded: %s", name, info.config_error)
                if not state.versions:
                    raise ModelLoadError(f"model '{name}': {info.config_error}")
                return
            wanted = select_versions(info)
            fresh: dict[int, LoadedVersion] = {}
            for version in wanted:
                if version in state.versions:
                    continue
                state.loading.add(version)
                try:
                    fresh[version] = await asyncio.to_thread(self._load_version, info, version)
                    state.failures.pop(version, None)
                    self._count(name, "success")
                except GatewayError as exc:
                    state.failures[version] = str(exc)
                    self._count(name, "failure")
                    log.error("model %s version %d failed to load: %s", name, version, exc)
                finally:
                    state.loading.discard(version)
            kept = {v: lv for v, lv in state.versions.items() if v in wanted}
            retired = [lv for v, lv in state.versions.items() if v not in wanted]
            # Publish atomically: one assignment swaps what new requests can reach.
            state.versions = {**kept, **fresh}
            state.default = default_version(info, state.versions)
            for lv in fresh.values():
                lv.batcher.start()
                self._set_ready(lv, 1)
                self._export_profile(lv)
        await self._retire(retired)

    async def unload_model(self, name: str) -> None:
        """Stops routing to every version of ``name``, drains them and closes their sessions."""
        state = self._models.get(name)
        if state is None:
            raise NotFoundError(f"model '{name}' is not loaded")
        async with state.lock:
            retired = list(state.versions.values())
            state.versions = {}
            state.default = None
            state.unloaded = True
        await self._retire(retired)

    async def close(self) -> None:
        """Unloads everything (after draining)."""
        for name in list(self._models):
            await self.unload_model(name)

    def resolve(self, name: str, version: str = "") -> LoadedVersion:
        """The loaded version that serves ``name``/``version`` ('' = the default)."""
        state = self._models.get(name)
        if state is None:
            raise NotFoundError(f"model '{name}' is not found")
        if state.unloaded:
            raise UnavailableError(f"model '{name}' is unloaded")
        if not version:
            if state.default is None:
                if state.loading:
                    raise UnavailableError(f"model '{name}' is loading")
                raise UnavailableError(f"model '{name}' has no loaded version")
            return state.versions[state.default]
        if not version.isdigit() or version.startswith("0"):
            raise NotFoundError(f"model '{name}' has no version '{version}'; versions are positive integers")
        number = int(version)
        loaded = state.versions.get(number)
        if loaded is not None:
            return loaded
        if number in state.loading:
            raise UnavailableError(f"model '{name}' version {number} is loading")
        raise NotFoundError(f"model '{name}' version {number} is not loaded")

    @contextmanager
    def lease(self, name: str, version: str = "") -> Iterator[LoadedVersion]:
        """Resolves a version and holds it in flight for the duration of the ``with`` block."""
        loaded = self.resolve(name, version)
        loaded.inflight += 1
        loaded._idle.clear()
        try:
            yield loaded
        finally:
            loaded.inflight -= 1
            if loaded.inflight == 0:
                loaded._idle.set()

    def loaded_versions(self, name: str) -> list[LoadedVersion]:
        """Loaded versions of ``name``, ascending; raises NotFoundError for an unknown model."""
        state = self._models.get(name)
        if state is None:
            raise NotFoundError(f"model '{name}' is not found")
        return [state.versions[v] for v in sorted(state.versions)]

    def all_loaded(self) -> list[LoadedVersion]:
        """Every loaded version of every model, by name then version."""
        return [lv for name in sorted(self._models) for lv in self.loaded_versions(name)]

    def index(self) -> list[IndexEntry]:
        """Every READY version in the registry of a known model, with its serving state and reason."""
        entries: list[IndexEntry] = []
        for name in sorted(self._models):
            state = self._models[name]
            versions = (
                set(state.info.versions if state.info else ()) | set(state.versions) | set(state.failures)
            )
            if not versions and state.config_error:
                entries.append(IndexEntry(name, "", "UNAVAILABLE", state.config_error))
            for version in sorted(versions):
                entries.append(IndexEntry(name, str(version), *_state_of(state, version)))
        return entries

    def _load_version(self, info: ModelInfo, version: int) -> LoadedVersion:
        """Blocking: load, check the signature, warm up. Runs in a worker thread."""
        where = version_info(self.registry, info.name, version)
        label = f"{info.name}:{version}"
        try:
            manifest = load_manifest(where.manifest_path)
            signature = read_signature(where.onnx_path)
        except RegistryError as exc:
            raise ModelLoadError(f"{label}: {exc}") from exc
        if signature != manifest.signature:
            raise ModelLoadError(f"{label}: model.onnx signature differs from manifest.json")
        runtime = info.config.runtime
        options = RunnerOptions(
            providers=tuple(runtime.providers),
            instances=runtime.instances,
            intra_op_threads=runtime.intra_op_threads,
            name=label,
        )
        runner = Runner.load(where.onnx_path, options)
        try:
            limit = batching_limit(signature, info.config)
            profiles = [LatencyProfile(max(limit, 1)) for _ in range(runner.instances)]
            seed_profiles(runner, profiles, signature, limit)
        except Exception as exc:
            runner.close()
            if isinstance(exc, ModelLoadError):
                raise
            raise ModelLoadError(f"{label}: warm-up failed: {exc}") from exc
        stats = VersionStats()
        batching = info.config.batching
        batcher = Batcher(
            runner,
            profiles,
            output_names=[spec.name for spec in signature.outputs],
            max_batch_size=limit,
            max_queue_delay_ms=batching.max_queue_delay_ms,
            max_queue_size=batching.max_queue_size,
            scheduler=batching.scheduler,
            observer=VersionObserver(stats, self.metrics, info.name, version),
            name=label,
        )
        log.info("loaded %s on %s", label, runner.provider)
        return LoadedVersion(info.name, version, signature, info.config, runner, batcher, stats)

    def _count(self, name: str, result: str) -> None:
        if self.metrics is not None:
            self.metrics.model_loads.labels(name, result).inc()

    def _set_ready(self, loaded: LoadedVersion, value: int) -> None:
        if self.metrics is not None:
            labels = (loaded.model, str(loaded.version), loaded.runner.provider)
            if value:
                self.metrics.model_ready.labels(*labels).set(value)
            else:
                self.metrics.model_ready.remove(*labels)

    def _export_profile(self, loaded: LoadedVersion) -> None:
        """Publishes the version's latency profile as gauges (best instance per batch size)."""
        if self.metrics is None:
            return
        for size in loaded.batcher.profiles[0].sizes:
            predicted = loaded.batcher.predict(size)
            self.metrics.predicted_latency.labels(loaded.model, str(loaded.version), str(size)).set(predicted)

    async def _retire(self, retired: list[LoadedVersion]) -> None:
        """Drains each retired version (already unreachable for new requests), then closes its session."""
        for loaded in retired:
            self._set_ready(loaded, 0)
            await loaded.drain()
            await loaded.batcher.close()
            await asyncio.to_thread(loaded.runner.close)
            log.info("closed %s:%d", loaded.model, loaded.version)


def warmup_feeds(signature: Signature, rows: int = 1) -> dict[str, npt.NDArray[Any]]:
    """Zeros (empty strings for BYTES) per input: ``rows`` on a dynamic batch dim, other dynamic dims 1."""
    feeds: dict[str, npt.NDArray[Any]] = {}
    for spec in signature.inputs:
        shape = tuple((rows if axis == 0 else 1) if d < 0 else d for axis, d in enumerate(spec.shape))
        if spec.datatype == "BYTES":
            feeds[spec.name] = np.full(shape, "", dtype=object)
        else:
            feeds[spec.name] = np.zeros(shape, dtype=NUMPY_DTYPES[spec.datatype])
    return feeds


def seed_profiles(runner: Runner, profiles: list[LatencyProfile], signature: Signature, limit: int) -> None:
    """Warm-up: runs every instance at each profiled batch size (blocking; off the event loop).

    The first run of each size is discarded (allocation, kernel selection); the next two seed the profile.
    Fails with ModelLoadError when a run returns the wrong outputs.
    """
    names = [spec.name for spec in signature.outputs]
    for instance, profile in enumerate(profiles):
        for rows in profile.sizes if limit > 0 else (1,):
            feeds = warmup_feeds(signature, rows)
            for attempt in range(3):
                begin = time.perf_counter()
                outputs = runner.run_sync(instance, feeds, names)
                elapsed = time.perf_counter() - begin
                if len(outputs) != len(names):
                    raise ModelLoadError(f"warm-up returned {len(outputs)} outputs, expected {len(names)}")
                if limit > 0 and any(out.ndim == 0 or out.shape[0] != rows for out in outputs):
                    raise ModelLoadError(f"warm-up at {rows} rows returned outputs without {rows} rows")
                if attempt:
                    profile.observe(rows, elapsed)


def _state_of(state: ModelState, version: int) -> tuple[str, str]:
    if version in state.versions:
        return "READY", ""
    if version in state.loading:
        return "LOADING", ""
    if version in state.failures:
        return "UNAVAILABLE", state.failures[version]
    if state.unloaded:
        return "UNAVAILABLE", "unloaded"
    return "UNAVAILABLE", "not selected by the version policy"
