"""Runner: the one home of onnxruntime. It owns a session and the executor threads that run it, so
``session.run`` never executes on the event loop.

Contracts:
- :meth:`Runner.load` is blocking (it builds the session); call it from a worker thread.
- :meth:`Runner.run` is awaitable from the event loop and runs instance ``i``'s session on that instance's
  own executor thread. Instances are independent sessions of the same model, so ``instances`` batches can
  run at once.
- :meth:`Runner.close` waits for running calls, then releases the session; later ``run`` calls fail.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy.typing as npt
import onnxruntime as ort

from gateway.errors import InvalidArgumentError, ModelLoadError, UnavailableError

log = logging.getLogger(__name__)

_OrtInvalidArgument = ort.capi.onnxruntime_pybind11_state.InvalidArgument

#: DESIGN.md provider names -> onnxruntime execution providers.
PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


@dataclass(frozen=True)
class RunnerOptions:
    """How to build a session: ordered provider preference, parallel calls, and threads per call."""

    providers: tuple[str, ...] = ("cpu",)
    instances: int = 1
    intra_op_threads: int = 0
    name: str = "model"

    def __post_init__(self) -> None:
        if self.instances < 1:
            raise ValueError("instances must be at least 1")
        if self.intra_op_threads < 0:
            raise ValueError("intra_op_threads must be >= 0")
        unknown = [p for p in self.providers if p not in PROVIDERS]
        if unknown or not self.providers:
            raise ValueError(f"unknown providers {unknown}; expected some of {sorted(PROVIDERS)}")


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
        self.provider = _short_provider(sessions[0].get_providers()[0])

    @classmethod
    def load(cls, onnx_path: Path, options: RunnerOptions) -> Runner:
        """Builds the sessions (blocking). Unavailable providers fall back in order, with a warning."""
        available = set(ort.get_available_providers())
        chosen = [PROVIDERS[p] for p in options.providers if PROVIDERS[p] in available]
        skipped = [p for p in options.providers if PROVIDERS[p] not in available]
        if skipped:
            log.warning("providers %s unavailable in this onnxruntime build for %s", skipped, options.name)
        if not chosen:
            raise ModelLoadError(
                f"{options.name}: none of the providers {list(options.providers)} is available"
            )
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = options.intra_op_threads
        session_options.inter_op_num_threads = 1
        session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            sessions = [
                ort.InferenceSession(str(onnx_path), sess_options=session_options, providers=chosen)
                for _ in range(options.instances)
            ]
        except Exception as exc:  # onnxruntime raises its own untyped errors for corrupt models
            raise ModelLoadError(
                f"{options.name}: onnxruntime could not load {onnx_path.name}: {exc}"
            ) from exc
        return cls(sessions, options)

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
            outputs: list[npt.NDArray[Any]] = sessions[instance].run(list(output_names), dict(feeds))
        except _OrtInvalidArgument as exc:
            raise InvalidArgumentError(f"{self._options.name}: the model rejected the input: {exc}") from exc
        return outputs

    async def run(
        self, instance: int, feeds: Mapping[str, npt.NDArray[Any]], output_names: Sequence[str]
    ) -> list[npt.NDArray[Any]]:
        """Runs instance ``instance`` on its executor thread; outputs come in ``output_names`` order."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executors[instance], self.run_sync, instance, feeds, output_names
        )

    def close(self) -> None:
        """Waits for running calls, then drops the sessions. Idempotent."""
        for executor in self._executors:
            executor.shutdown(wait=True)
        self._sessions = None


def _short_provider(name: str) -> str:
    for short, full in PROVIDERS.items():
        if full == name:
            return short
    return name
