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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from gateway.errors import (
    GatewayError,
    InvalidArgumentError,
    ModelLoadError,
    NotFoundError,
    UnavailableError,
)
from gateway.loader import Stamp, load_version, version_stamp
from gateway.metrics import GatewayMetrics
from gateway.version import LoadedVersion
from registry.layout import ModelInfo, default_version, scan_registry, select_versions, version_info
from registry.rollout import describe_version

log = logging.getLogger(__name__)


@dataclass
class ModelState:
    """Everything known about one model name."""

    name: str
    info: ModelInfo | None = None
    versions: dict[int, LoadedVersion] = field(default_factory=dict)
    default: int | None = None
    failures: dict[int, tuple[str, Stamp]] = field(default_factory=dict)
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

    def __init__(
        self,
        registry: Path,
        metrics: GatewayMetrics | None = None,
        *,
        default_intra_op_threads: int = 0,
        device: str | None = None,
        require_gpu: bool = False,
        trusted_keys: Path | None = None,
    ) -> None:
        self.registry = registry
        self.trusted_keys = trusted_keys  # signed versions only (registry/signing.py)
        self.metrics = metrics
        self.default_intra_op_threads = default_intra_op_threads
        self.device = device
        self.require_gpu = require_gpu
        self._models: dict[str, ModelState] = {}

    async def load_all(self) -> None:
        """Loads the policy's versions of every model in the registry (failures are recorded, not raised)."""
        infos = await asyncio.to_thread(scan_registry, self.registry)
        results = await asyncio.gather(
            *(self.load_model(name, infos[name]) for name in sorted(infos)), return_exceptions=True
        )
        for result in results:
            # A model whose config or every version failed was logged and counted by load_model and shows
            # in RepositoryIndex; it must not keep the other models from serving. Anything else is a bug.
            if isinstance(result, BaseException) and not isinstance(result, GatewayError):
                raise result

    async def load_model(self, name: str, info: ModelInfo | None = None, *, force: bool = False) -> None:
        """(Re)loads one model per its version policy, pin and config; the serving versions keep serving.

        Versions already loaded with the same config are kept; new or reconfigured ones go through the load
        sequence and are published in one assignment; versions no longer wanted are drained and closed.
        A version that failed is not retried until its files change, unless ``force`` (an explicit
        RepositoryModelLoad). Raises NotFoundError if the model is not in the registry.
        """
        if info is None:
            infos = await asyncio.to_thread(scan_registry, self.registry)
            if name not in infos:
                raise NotFoundError(f"model '{name}' is not in the registry")
            info = infos[name]
        state = self._models.setdefault(name, ModelState(name))
        async with state.lock:
            if force:
                state.unloaded = False
            state.info = info
            state.config_error = info.config_error
            if info.config_error is not None:
                self._count(name, "failed")
                log.error("model %s: not (re)loaded: %s", name, info.config_error)
                if not state.versions:
                    raise ModelLoadError(f"model '{name}': {info.config_error}")
                return
            wanted = select_versions(info)
            serving = state.versions.get(state.default) if state.default is not None else None
            fresh: dict[int, LoadedVersion] = {}
            pending = [
                v for v in wanted if v not in state.versions or state.versions[v].config != info.config
            ]
            state.loading.update(pending)  # visible as LOADING in RepositoryIndex from now on
            for version in pending:
                loaded = await self._load_one(state, info, version, serving, force)
                if loaded is not None:
                    fresh[version] = loaded
            if not fresh and not state.versions and pending and info.config.versions.policy == "latest":
                # Nothing serves and every wanted version failed: start from the highest intact version
                # below them, as a gateway that was already running keeps doing (registry.serving calls
                # this the "fallback" default, and rollback starts from it).
                fallback = await self._load_fallback(state, info, min(wanted))
                if fallback is not None:
                    fresh[fallback.version] = fallback
            kept = {v: lv for v, lv in state.versions.items() if v in wanted and v not in fresh}
            # A wanted version that is not loaded (it failed) never takes a serving version down with it:
            # the newest serving versions the policy dropped stay, one for each wanted version missing.
            missing = [v for v in wanted if v not in kept and v not in fresh]
            dropped = sorted((v for v in state.versions if v not in wanted), reverse=True)
            kept.update({v: state.versions[v] for v in dropped[: len(missing)]})
            retired = [lv for v, lv in state.versions.items() if v not in kept]
            for lv in fresh.values():
                lv.batcher.start()
            # Publish atomically: one assignment swaps what new requests can reach.
            state.versions = {**kept, **fresh}
            state.default = default_version(info, state.versions)
            for lv in fresh.values():
                self._set_ready(lv, 1)
                self._export_profile(lv)
        await self._retire(retired)

    async def _load_fallback(self, state: ModelState, info: ModelInfo, below: int) -> LoadedVersion | None:
        """Loads the highest READY version under ``below`` that loads (failed ones are recorded as usual)."""
        for version in sorted((v for v in info.versions if v < below), reverse=True):
            state.loading.add(version)
            loaded = await self._load_one(state, info, version, None, False)
            if loaded is not None:
                log.warning(
                    "model %s: no version the policy selects loaded; serving version %d, the highest "
                    "below them that did",
                    info.name,
                    version,
                )
                return loaded
        return None

    async def _load_one(
        self, state: ModelState, info: ModelInfo, version: int, serving: LoadedVersion | None, force: bool
    ) -> LoadedVersion | None:
        where = version_info(self.registry, info.name, version)
        stamp = await asyncio.to_thread(version_stamp, where)
        failed = state.failures.get(version)
        if failed is not None and failed[1] == stamp and not force:
            state.loading.discard(version)
            return None  # failed before and its files have not changed since
        try:
            loaded = await asyncio.to_thread(
                load_version,
                self.registry,
                info,
                version,
                serving=serving.signature if serving is not None else None,
                metrics=self.metrics,
                default_intra_op_threads=self.default_intra_op_threads,
                device=self.device,
                require_gpu=self.require_gpu,
                trusted_keys=self.trusted_keys,
            )
        except GatewayError as exc:
            state.failures[version] = (str(exc), stamp)
            self._count(info.name, "failed")
            still = "no version of this model is serving"
            if serving is not None:
                still = f"version {serving.version} keeps serving"
            log.error("model %s version %d failed to load (%s): %s", info.name, version, still, exc)
            return None
        finally:
            state.loading.discard(version)
        state.failures.pop(version, None)
        self._count(info.name, "success")
        return loaded

    async def remove_model(self, name: str) -> None:
        """Forgets a model that left the registry, after draining and closing its versions."""
        if name in self._models:
            await self.unload_model(name)
            self._models.pop(name, None)

    def watched_models(self) -> set[str]:
        """Models the registry watcher may reload: known ones not explicitly unloaded."""
        return {name for name, state in self._models.items() if not state.unloaded}

    def is_unloaded(self, name: str) -> bool:
        """True after an explicit RepositoryModelUnload, until the next explicit load."""
        state = self._models.get(name)
        return state is not None and state.unloaded

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
        """The loaded version that serves ``name``/``version`` ('' = the default).

        InvalidArgumentError for a version that is not a positive integer without leading zeros (as
        Triton answers an unparseable one); NotFoundError for an unknown model or a well-formed version
        that is not loaded; UnavailableError while it loads or after an unload.
        """
        if version and not (version.isascii() and version.isdigit() and not version.startswith("0")):
            raise InvalidArgumentError(
                f"model '{name}': version '{version}' is not a positive integer without leading zeros"
            )
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
        loaded = self.acquire(name, version)
        try:
            yield loaded
        finally:
            release(loaded)

    def acquire(self, name: str, version: str = "") -> LoadedVersion:
        """Resolves a version and holds it in flight until :func:`release`: :meth:`lease` without the
        context manager's generator, for the per-request path."""
        loaded = self.resolve(name, version)
        loaded.inflight += 1
        if loaded.inflight == 1:
            loaded._idle.clear()
        return loaded

    def loaded_versions(self, name: str) -> list[LoadedVersion]:
        """Loaded versions of ``name``, ascending; raises NotFoundError for an unknown model."""
        state = self._models.get(name)
        if state is None:
            raise NotFoundError(f"model '{name}' is not found")
        return [state.versions[v] for v in sorted(state.versions)]

    def model_info(self, name: str) -> ModelInfo | None:
        """The registry scan the model was last (re)loaded from; None for an unknown or unloaded model."""
        state = self._models.get(name)
        return None if state is None or state.unloaded else state.info

    def serving(self, name: str) -> tuple[int | None, frozenset[int]]:
        """(default version, loaded versions) of ``name``; (None, empty) for an unknown model."""
        state = self._models.get(name)
        if state is None:
            return None, frozenset()
        return state.default, frozenset(state.versions)

    def model_names(self) -> list[str]:
        """Every known model name, sorted."""
        return sorted(self._models)

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


def _state_of(state: ModelState, version: int) -> tuple[str, str]:
    info = state.info
    rollout = ""
    if info is not None:
        config = info.config.rollout
        rollout = describe_version(info.rollout, info.rollout_plan, version, config.mode, config.steps)
    if version in state.versions:
        fallback = state.versions[version].runner.fallback_reason
        notes = [
            f"serving on {state.versions[version].runner.provider}: {fallback}" if fallback else "",
            rollout,
        ]
        return "READY", "; ".join(note for note in notes if note)
    if version in state.loading:
        return "LOADING", ""
    if version in state.failures:
        return "UNAVAILABLE", state.failures[version][0]
    if state.unloaded:
        return "UNAVAILABLE", "unloaded"
    if state.config_error:  # the policy could not even be read
        return "UNAVAILABLE", state.config_error
    return "UNAVAILABLE", rollout or "not selected by the version policy"


def release(loaded: LoadedVersion) -> None:
    """Ends a hold taken by :meth:`ModelTable.acquire`; the last one out lets an unload proceed."""
    loaded.inflight -= 1
    if loaded.inflight == 0:
        loaded._idle.set()
