"""One client process: runs steps it receives over a pipe and sends back a mergeable result per step.

Contracts:

* :func:`worker_main` is the entry point of a ``spawn``-ed process. It reads :class:`WorkerTask` objects
  from its pipe until it gets ``None``, runs each with :func:`run_task` and sends a :class:`WorkerResult`
  (never raises: a failure comes back as ``error``).
* :func:`run_task` opens a fresh gRPC channel per step and connects it before ``start_ns``, so the
  connection handshake is not measured. A monitor thread folds the raw records every
  :data:`FOLD_INTERVAL_S` and publishes the completed count into the shared ``progress`` array.
* CPU use is this process's (all threads, gRPC's included) over the step, from ``time.process_time``.
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc

from loadtests.native import run_native
from loadtests.recorder import Recorder, Summary
from loadtests.secure import open_channel
from loadtests.spec import WorkerTask
from loadtests.stream import run_stream
from loadtests.unary import run_unary

__all__ = ["FOLD_INTERVAL_S", "WorkerResult", "channel_options", "run_task", "worker_main"]

FOLD_INTERVAL_S = 0.2
_MESSAGE_LIMIT = 256 * 1024 * 1024
_CONNECT_TIMEOUT_S = 10.0


def channel_options() -> list[tuple[str, Any]]:
    """gRPC channel options for load: large messages, and a channel of its own (no subchannel sharing)."""
    return [
        ("grpc.max_send_message_length", _MESSAGE_LIMIT),
        ("grpc.max_receive_message_length", _MESSAGE_LIMIT),
        ("grpc.use_local_subchannel_pool", 1),
    ]


@dataclass
class WorkerResult:
    """What one process measured in one step (``error`` set when it could not run it)."""

    process: int
    summary: Summary = field(default_factory=Summary)
    cpu_s: float = 0.0
    wall_s: float = 0.0
    error: str | None = None


def run_task(task: WorkerTask, progress: Any = None) -> WorkerResult:
    """Runs one process's share of a step in this process; ``progress[task.process]`` gets live counts."""
    spec = task.spec
    recorder = Recorder(
        measure_ns=task.measure_ns, window_ns=max(spec.window_ns, 1), budget_ns=spec.budget_ns
    )
    wall0 = time.perf_counter_ns()
    if spec.native_client is not None:
        cpu_s: float | None = run_native(Path(spec.native_client), task, recorder)
    else:
        cpu_s = _run_python(task, recorder, progress)
    if cpu_s is None:
        return WorkerResult(
            task.process, error=f"could not connect to {spec.target} in {_CONNECT_TIMEOUT_S} s"
        )
    wall_s = (time.perf_counter_ns() - max(wall0, task.start_ns)) / 1e9
    recorder.fold()
    if progress is not None:
        progress[task.process] = recorder.completed
    return WorkerResult(task.process, recorder.summary, cpu_s=cpu_s, wall_s=max(wall_s, 1e-9))


def _run_python(task: WorkerTask, recorder: Recorder, progress: Any) -> float | None:
    """Runs the step with Python gRPC, folding as it goes; its CPU seconds, or None if it cannot connect."""
    spec = task.spec
    channel = open_channel(spec.target, channel_options(), spec.security)
    try:
        grpc.channel_ready_future(channel).result(timeout=_CONNECT_TIMEOUT_S)
    except grpc.FutureTimeoutError:
        channel.close()
        return None
    stop = threading.Event()
    monitor = threading.Thread(target=_monitor, args=(recorder, stop, progress, task.process), daemon=True)
    monitor.start()
    cpu0 = time.process_time()
    try:
        (run_stream if spec.stream else run_unary)(channel, task, recorder)
    finally:
        stop.set()
        monitor.join(5.0)
        channel.close()
    return time.process_time() - cpu0


def _monitor(recorder: Recorder, stop: threading.Event, progress: Any, index: int) -> None:
    while not stop.wait(FOLD_INTERVAL_S):
        recorder.fold()
        if progress is not None:
            progress[index] = recorder.completed


def worker_main(conn: Connection, progress: Any) -> None:
    """Process entry point: run tasks from ``conn`` until ``None``."""
    try:
        while True:
            task = conn.recv()
            if task is None:
                return
            try:
                result = run_task(task, progress)
            except Exception:
                result = WorkerResult(task.process, error=traceback.format_exc())
            conn.send(result)
    except (EOFError, KeyboardInterrupt):
        return
    finally:
        conn.close()
