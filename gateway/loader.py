"""The safe load sequence of one version, run in a worker thread while the serving version keeps serving.

Order (DESIGN.md §7): verify the files against the manifest (sha256, signature) -> refuse a breaking
signature change against the serving version unless ``[versions].allow_breaking_signature`` -> build the
sessions on the chosen provider -> warm up every instance at every profiled batch size on the data that
``[warmup]`` picks (this seeds the latency profile; :mod:`gateway.warmup`) -> run the golden check when
the version ships ``golden.npz`` -> hand back a :class:`LoadedVersion` whose batcher the table starts
when it publishes it. Any failure raises :class:`ModelLoadError` with the reason and leaves nothing
running (a warm-up run that fails on synthetic data is only a warning).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

from gateway.batcher import Batcher
from gateway.cores import PROCESS_CORES
from gateway.errors import ModelLoadError
from gateway.metrics import GatewayMetrics
from gateway.profile import LatencyProfile
from gateway.runner import Runner, RunnerOptions
from gateway.stats import VersionStats
from gateway.version import LoadedVersion, VersionObserver, batching_limit
from gateway.warmup import onnx_feed, seed_profiles, warmup_data
from registry.errors import RegistryError
from registry.golden import golden_mismatches, load_golden
from registry.layout import ModelInfo, VersionInfo, version_info
from registry.manifest import load_manifest
from registry.signature import Signature, breaking_changes
from registry.signing import load_trusted_keys
from registry.verify import verify_version

log = logging.getLogger(__name__)

Stamp = tuple[tuple[str, int, int], ...]


def version_stamp(where: VersionInfo) -> Stamp:
    """(name, mtime_ns, size) of every file in the version directory (the model, manifest, golden and
    reference data, a ``[warmup]`` file, READY) and of the model's ``model.toml``: a failed version is
    retried when one of them changes (a new config, such as ``[warmup]``, may let it load). Stat only."""
    paths = [where.path.parent / "model.toml"]
    try:
        with os.scandir(where.path) as entries:
            paths += sorted(Path(entry.path) for entry in entries)
    except OSError:
        pass
    stamp = []
    for path in paths:
        try:
            info = path.stat()
        except OSError:
            stamp.append((path.name, -1, -1))
        else:
            stamp.append((path.name, info.st_mtime_ns, info.st_size))
    return tuple(stamp)


def load_version(
    registry: Path,
    info: ModelInfo,
    version: int,
    *,
    serving: Signature | None,
    metrics: GatewayMetrics | None,
    default_intra_op_threads: int = 0,
    device: str | None = None,
    require_gpu: bool = False,
    trusted_keys: Path | None = None,
) -> LoadedVersion:
    """Blocking: the whole load sequence for ``info.name`` version ``version``; ModelLoadError on failure."""
    where = version_info(registry, info.name, version)
    label = f"{info.name}:{version}"
    try:
        trusted = load_trusted_keys(trusted_keys) if trusted_keys is not None else None
    except RegistryError as exc:
        raise ModelLoadError(f"{label}: {exc}") from exc
    problems = verify_version(where, trusted=trusted)
    if problems:
        raise ModelLoadError(f"{label}: " + "; ".join(problems))
    try:
        manifest = load_manifest(where.manifest_path)
    except RegistryError as exc:
        raise ModelLoadError(f"{label}: {exc}") from exc
    signature = manifest.signature
    if serving is not None and not info.config.versions.allow_breaking_signature:
        changes = breaking_changes(serving, signature)
        if changes:
            raise ModelLoadError(
                f"{label}: breaking signature change against the serving version ({'; '.join(changes)}); "
                "set [versions].allow_breaking_signature = true to allow it"
            )
    options = runner_options(registry, info, version, device=device, require_gpu=require_gpu)
    if default_intra_op_threads and not options.intra_op_threads:
        options = dataclasses.replace(options, intra_op_threads=default_intra_op_threads)
    started = time.perf_counter()
    runner = Runner.load(where.onnx_path, options)
    try:
        limit = batching_limit(signature, info.config)
        profiles = [LatencyProfile(max(limit, 1)) for _ in range(runner.instances)]
        data = warmup_data(where, info.config.warmup, signature)
        if data is not None:
            seed_profiles(runner, profiles, signature, limit, data, label=label)
        if where.golden_path.exists():
            check_golden(runner, where, signature)
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
        observer=VersionObserver(stats, metrics, info.name, version, runner.provider),
        name=label,
        buckets=batch_buckets(info.config.runtime.buckets, runner.provider, limit),
        cores=PROCESS_CORES,
    )
    log.info("loaded %s on %s in %.2f s", label, runner.provider, time.perf_counter() - started)
    return LoadedVersion(info.name, version, signature, info.config, manifest, runner, batcher, stats)


def runner_options(
    registry: Path, info: ModelInfo, version: int, *, device: str | None, require_gpu: bool
) -> RunnerOptions:
    """The model's ``[runtime]`` as runner options, with the command line's ``--device``/``--require-gpu``
    applied on top. ``cuda:N`` means CUDA on device N, then CPU as the fallback."""
    runtime = info.config.runtime
    providers = tuple(runtime.providers)
    options: dict[str, dict[str, Any]] = {"cuda": dict(runtime.cuda), "tensorrt": dict(runtime.tensorrt)}
    if device == "cpu":
        providers = ("cpu",)
    elif device is not None and device.startswith("cuda:"):
        providers = ("cuda", "cpu")
        options["cuda"]["device_id"] = int(device.split(":", 1)[1])
    if "tensorrt" in providers and "engine_cache_path" not in options["tensorrt"]:
        # Beside the version, never inside its READY tree (hidden names are invisible to the scan).
        options["tensorrt"]["engine_cache_path"] = str(registry / info.name / ".trt-cache" / str(version))
    return RunnerOptions(
        providers=providers,
        instances=runtime.instances,
        intra_op_threads=runtime.intra_op_threads,
        name=f"{info.name}:{version}",
        provider_options=options,
        require_gpu=require_gpu or runtime.require_gpu,
    )


def batch_buckets(configured: tuple[int, ...], provider: str, max_batch_size: int) -> tuple[int, ...]:
    """Batch sizes to pad to: the configured ones; by default powers of two up to ``max_batch_size`` on a
    GPU provider (so CUDA graphs and TensorRT profiles are reused) and none on the CPU."""
    if max_batch_size <= 0:
        return ()
    if configured:
        return configured
    if provider in ("cuda", "tensorrt"):
        sizes = [1 << k for k in range(max_batch_size.bit_length()) if 1 << k < max_batch_size]
        return (*sizes, max_batch_size)
    return ()


def check_golden(runner: Runner, where: VersionInfo, signature: Signature) -> None:
    """Runs the shipped golden inputs; every output must match within the registry's tolerance."""
    try:
        inputs, expected = load_golden(where.golden_path, signature)
    except RegistryError as exc:
        raise ModelLoadError(f"{where.model}:{where.version}: {exc}") from exc
    names = [spec.name for spec in signature.outputs]
    feeds = {name: onnx_feed(array) for name, array in inputs.items()}
    actual = dict(zip(names, runner.run_sync(0, feeds, names), strict=True))
    mismatches = golden_mismatches(expected, actual)
    if mismatches:
        raise ModelLoadError(f"{where.model}:{where.version}: golden check failed: " + "; ".join(mismatches))
