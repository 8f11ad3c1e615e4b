"""Runner: the one home of onnxruntime. It owns a session and the executor threads that run it, so
``session.run`` never executes on the event loop.

Contracts:
- :meth:`Runner.load` is blocking (it builds the session); call it from a worker thread.
- :meth:`Runner.run` is awaitable from the event loop and runs the session in the runner's own executor.
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

from gateway.errors import ModelLoadError, UnavailableError

log = logging.getLogger(__name__)

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
    """One onnxruntime session plus ``instances`` executor threads calling it concurrently."""

    def __init__(self, session: ort.InferenceSession, options: RunnerOptions) -> None:
        self._session: ort.InferenceSession | None = session
        self._options = options
        self._executor = ThreadPoolExecutor(
            max_workers=options.instances, thread_name_prefix=f"ort-{options.name}"
        )
        self.provider = _short_provider(session.get_providers()[0])
        self.input_names: tuple[str, ...] = tuple(i.name for i in session.get_inputs())
        self.output_names: tuple[str, ...] = tuple(o.name for o in session.get_outputs())

    @classmethod
    def load(cls, onnx_path: Path, options: RunnerOptions) -> Runner:
        """Builds the session (blocking). Unavailable providers fall back in order, with a warning."""
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
            session = ort.InferenceSession(str(onnx_path), sess_options=session_options, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own untyped errors for corrupt models
            raise ModelLoadError(
                f"{options.name}: onnxruntime could not load {onnx_path.name}: {exc}"
            ) from exc
        return cls(session, options)

    def run_sync(
        self, feeds: Mapping[str, npt.NDArray[Any]], output_names: Sequence[str]
    ) -> list[npt.NDArray[Any]]:
        """Runs the session on the calling thread (used for warm-up, off the event loop)."""
        session = self._session
        if session is None:
            raise UnavailableError(f"{self._options.name}: session is closed")
        outputs: list[npt.NDArray[Any]] = session.run(list(output_names), dict(feeds))
        return outputs

    async def run(
        self, feeds: Mapping[str, npt.NDArray[Any]], output_names: Sequence[str]
    ) -> list[npt.NDArray[Any]]:
        """Runs the session in the runner's executor and returns outputs in ``output_names`` order."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.run_sync, feeds, output_names)

    def close(self) -> None:
        """Waits for running calls, then drops the session. Idempotent."""
        self._executor.shutdown(wait=True)
        self._session = None


def _short_provider(name: str) -> str:
    for short, full in PROVIDERS.items():
        if full == name:
            return short
    return name
