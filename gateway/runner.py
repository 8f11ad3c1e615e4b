"""Runner: the one home of onnxruntime. It owns a session and the executor threads that run it, so
``session.run`` never executes on the event loop.

Contracts:
- :meth:`Runner.load` is blocking (it builds the session); call it from a worker thread.
- :meth:`Runner.run` is awaitable from the event loop and runs instance ``i``'s session on that instance's
  own executor thread. Instances are independent sessions of the same model, so ``instances`` batches can
  run at once.
- :meth:`Runner.call` runs any function on instance ``i``'s executor thread, in turn with its batches
  (rollout mirror groups do all their work there: :mod:`gateway.rollout_copies`).
- :meth:`Runner.close` waits for running calls, then releases the session; later ``run`` calls fail.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from gateway.cores import usable_cores
from gateway.errors import InvalidArgumentError, ModelLoadError, UnavailableError

log = logging.getLogger(__name__)

_OrtInvalidArgument = ort.capi.onnxruntime_pybind11_state.InvalidArgument

#: DESIGN.md provider names -> onnxruntime execution providers.
PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


#: Our option names -> onnxruntime's TensorRT provider option names (others pass through unchanged).
_TENSORRT_OPTION_NAMES = {
    "fp16": "trt_fp16_enable",
    "int8": "trt_int8_enable",
    "max_workspace_size": "trt_max_workspace_size",
    "engine_cache_path": "trt_engine_cache_path",
}


@dataclass(frozen=True)
class RunnerOptions:
    """How to build sessions: ordered provider preference with per-provider options, parallel instances,
    threads per call, whether a GPU is required, and the batch-size buckets to pad to."""

    providers: tuple[str, ...] = ("cpu",)
    instances: int = 1
    intra_op_threads: int = 0
    name: str = "model"
    provider_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    require_gpu: bool = False

    def __post_init__(self) -> None:
        if self.instances < 1:
            raise ValueError("instances must be at least 1")
        if self.intra_op_threads < 0:
            raise ValueError("intra_op_threads must be >= 0")
        unknown = [p for p in self.providers if p not in PROVIDERS]
        if unknown or not self.providers:
            raise ValueError(f"unknown providers {unknown}; expected some of {sorted(PROVIDERS)}")


def default_intra_op_threads(workers: int = 1) -> int:
    """onnxruntime threads per session when a model leaves ``intra_op_threads`` at 0: the cores left
    after each worker's event loop (which runs gRPC, validation and batching), at least one. Cores are
    :func:`gateway.cores.usable_cores`: affinity capped by the cgroup CPU quota."""
    return max(1, usable_cores() // max(1, workers) - 1)


def available_providers() -> list[str]:
    """What the installed onnxruntime build offers, in our short names where we have one."""
    return [_short_provider(name) for name in ort.get_available_providers()]


def onnxruntime_providers(options: RunnerOptions) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """(provider, options) pairs onnxruntime can try, in order, and why each requested one was skipped."""
    available = set(ort.get_available_providers())
    chosen: list[tuple[str, dict[str, Any]]] = []
    skipped: list[str] = []
    for short in options.providers:
        full = PROVIDERS[short]
        if full not in available:
            skipped.append(f"{short}: not in this onnxruntime build ({ort.__version__}, {ort.get_device()})")
            continue
        chosen.append((full, _provider_options(short, options.provider_options.get(short, {}))))
    return chosen, skipped


def _provider_options(short: str, given: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in given.items():
        name = _TENSORRT_OPTION_NAMES.get(key, key) if short == "tensorrt" else key
        out[name] = ("1" if value else "0") if isinstance(value, bool) else value
    if short == "tensorrt":
        out["trt_int8_enable"] = "0"  # int8 needs calibration data we do not have: always off
        if "trt_engine_cache_path" in out:
            out["trt_engine_cache_enable"] = "1"
    return out


class Runner:
    """``instances`` onnxruntime sessions of one model, each with its own executor thread."""

    def __init__(self, sessions: list[ort.InferenceSession], options: RunnerOptions) -> None:
        self._sessions: list[ort.InferenceSession] | None = sessions
        self._options = options
        self._executors = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ort-{options.name}-{i}")
            for i in range(len(sessions))
        ]
        self.instances = len(sessions)
        #: Duration of each instance's last executor run, measured on its thread (see :meth:`run`).
        self.last_compute_ns = [0] * len(sessions)
        #: The sessions' intra-op threads (what ``load`` set), to scale per-thread CPU time in ``run``.
        self.intra_op_threads = max(1, sessions[0].get_session_options().intra_op_num_threads)
        self.provider = _short_provider(sessions[0].get_providers()[0])
        self.fallback_reason = ""
        self._device_id = int(options.provider_options.get(self.provider, {}).get("device_id", 0))
        #: On the CPU provider, each session's binding-level run (:func:`_direct_runs`: why), or None.
        self._direct: list[Callable[..., list[npt.NDArray[Any]]]] | None = (
            _direct_runs(sessions) if self.provider == "cpu" else None
        )

    @classmethod
    def load(cls, onnx_path: Path, options: RunnerOptions) -> Runner:
        """Builds the sessions (blocking). Unavailable providers fall back in order, with a warning that
        says why; with ``require_gpu`` a CPU-only result fails the load instead."""
        chosen, skipped = onnxruntime_providers(options)
        if not chosen:
            raise ModelLoadError(
                f"{options.name}: none of the providers {list(options.providers)} is available"
            )
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = options.intra_op_threads or default_intra_op_threads()
        session_options.inter_op_num_threads = 1
        # Spinning threads would take the cores the event loop and gRPC need between batches.
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session_options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            sessions = [
                ort.InferenceSession(
                    str(onnx_path),
                    sess_options=session_options,
                    providers=[name for name, _ in chosen],
                    provider_options=[opts for _, opts in chosen],
                )
                for _ in range(options.instances)
            ]
        except Exception as exc:  # onnxruntime raises its own untyped errors for corrupt models
            raise ModelLoadError(
                f"{options.name}: onnxruntime could not load {onnx_path.name}: {exc}"
            ) from exc
        runner = cls(sessions, options)
        if runner.provider != options.providers[0]:
            requested = options.providers[0]
            if PROVIDERS[requested] in {name for name, _ in chosen}:
                skipped.append(f"{requested}: onnxruntime could not start it (driver or libraries missing?)")
            runner.fallback_reason = "; ".join(skipped)
            log.warning(
                "%s: serving on %s instead of %s: %s",
                options.name,
                runner.provider,
                requested,
                runner.fallback_reason,
            )
        if options.require_gpu and runner.provider == "cpu":
            runner.close()
            raise ModelLoadError(
                f"{options.name}: a GPU is required but the session runs on cpu ({'; '.join(skipped)})"
            )
        return runner

    def run_sync(
        self, instance: int, feeds: Mapping[str, npt.NDArray[Any]], output_names: Sequence[str]
    ) -> list[npt.NDArray[Any]]:
        """Runs instance ``instance`` on the calling thread (warm-up uses this, off the event loop).

        onnxruntime's own argument errors (a value the graph rejects at run time) become
        InvalidArgumentError; any other failure propagates and is answered INTERNAL.
        """
        sessions = self._sessions
        if sessions is None:
            raise UnavailableError(f"{self._options.name}: session is closed")
        try:
            direct = self._direct
            if direct is not None:
                return direct[instance](output_names, feeds, None)
            if self.provider in ("cuda", "tensorrt") and not any(a.dtype.kind == "O" for a in feeds.values()):
                return self._run_bound(sessions[instance], feeds, output_names)
            outputs: list[npt.NDArray[Any]] = sessions[instance].run(list(output_names), dict(feeds))
        except _OrtInvalidArgument as exc:
            raise InvalidArgumentError(f"{self._options.name}: the model rejected the input: {exc}") from exc
        return outputs

    def _run_bound(
        self,
        session: ort.InferenceSession,
        feeds: Mapping[str, npt.NDArray[Any]],
        output_names: Sequence[str],
    ) -> list[npt.NDArray[Any]]:
        """GPU path with IO binding: inputs bound from the collated host arrays (one host-to-device copy),
        outputs bound on the device and copied back once."""
        binding = session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for name in output_names:
            binding.bind_output(name, "cuda", self._device_id)
        session.run_with_iobinding(binding)
        outputs: list[npt.NDArray[Any]] = binding.copy_outputs_to_cpu()
        return outputs

    async def run(
        self, instance: int, feeds: Mapping[str, npt.NDArray[Any]], output_names: Sequence[str]
    ) -> list[npt.NDArray[Any]]:
        """Runs instance ``instance`` on its executor thread; outputs come in ``output_names`` order.

        The executor thread times the run itself: :attr:`last_compute_ns` ``[instance]`` then holds the
        session's own cost, without the thread hop, the wait for the GIL or the event loop's delay in
        resuming the caller (one batch runs per instance at a time, so the slot is the caller's until its
        next run)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executors[instance], self.run_timed, instance, feeds, output_names
        )

    async def call(self, instance: int, function: Callable[..., Any], *args: Any) -> Any:
        """``function(*args)`` on instance ``instance``'s executor thread, after the work queued there.
        UnavailableError once the runner is closed."""
        try:
            done = asyncio.get_running_loop().run_in_executor(self._executors[instance], function, *args)
        except RuntimeError as exc:  # the executor was shut down
            raise UnavailableError(f"{self._options.name}: session is closed") from exc
        return await done

    def run_timed(
        self, instance: int, feeds: Mapping[str, npt.NDArray[Any]], output_names: Sequence[str]
    ) -> list[npt.NDArray[Any]]:
        """:meth:`run_sync` on instance ``instance``'s executor thread (the caller's), leaving the session's
        own cost in :attr:`last_compute_ns` ``[instance]``, also when it raises."""
        begin = time.perf_counter_ns()
        cpu_begin = time.thread_time_ns()
        try:
            return self.run_sync(instance, feeds, output_names)
        finally:
            # The session's own cost: this thread's CPU time (waiting for the GIL to return, which the wall
            # clock would count, is not compute), scaled by the intra-op threads that shared the work, and
            # never more than the wall time.
            cpu = (time.thread_time_ns() - cpu_begin) * self.intra_op_threads
            self.last_compute_ns[instance] = min(cpu, time.perf_counter_ns() - begin)

    def close(self) -> None:
        """Waits for running calls, then drops the sessions. Idempotent."""
        for executor in self._executors:
            executor.shutdown(wait=True)
        self._direct = None
        self._sessions = None


def _direct_runs(sessions: list[ort.InferenceSession]) -> list[Callable[..., list[npt.NDArray[Any]]]] | None:
    """Each session's binding-level ``run`` (``InferenceSession._sess.run``), or None where this onnxruntime
    has none. The public ``run`` re-checks the feed names (which validation already did), asks whether a
    WebGPU graph capture is on, and wraps a provider-fallback retry that only GPU providers use: 8 of its
    32 µs for the tiny model's one row when each run follows a 0.3 ms pause (caches gone cold, as between
    a lone client's calls), measured on the 2-core development machine; 3 of 9 µs back to back."""
    runs = [getattr(getattr(session, "_sess", None), "run", None) for session in sessions]
    return runs if all(callable(run) for run in runs) else None  # type: ignore[return-value]


def _short_provider(name: str) -> str:
    for short, full in PROVIDERS.items():
        if full == name:
            return short
    return name
