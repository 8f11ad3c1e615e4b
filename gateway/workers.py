"""Multi-worker gateway: a supervising parent and N worker processes sharing one gRPC port.

Contracts:
- Every worker is a full gateway (its own model table, batchers and sessions) bound to the same host:port
  with SO_REUSEPORT, so the kernel spreads incoming connections over them. With ``port`` 0 the parent
  picks a free port first and holds it (bound, not listening) until it exits.
- Worker ``i`` serves ``/metrics`` on ``metrics_port + i`` (or a free port when ``metrics_port`` is 0):
  scrape every worker; each exports its own series (documented in docs/production.md).
- When a model leaves ``intra_op_threads`` at 0, each worker uses ``max(1, cores // workers - 1)``
  threads (a core per worker stays with its event loop, as a single gateway does;
  :func:`gateway.runner.default_intra_op_threads`), ``cores`` being the CPUs this process may use (its
  affinity, which follows cpusets, capped by a cgroup CPU quota).
- The parent restarts a worker that dies (at most ``MAX_RESTARTS`` in ``RESTART_WINDOW_S`` seconds, then it
  gives up and stops everything, exit 1). SIGTERM or SIGINT is forwarded as SIGTERM to every worker, which
  drains as a single gateway does; the parent exits 0 once all exited 0.
- A worker whose parent dies (SIGKILL, crash) gets SIGTERM from the kernel (Linux ``PR_SET_PDEATHSIG``)
  and drains and exits: no orphaned worker keeps serving the port.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from multiprocessing.process import BaseProcess
from types import FrameType

from gateway.config import GatewayConfig
from gateway.runner import default_intra_op_threads

log = logging.getLogger(__name__)

MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
POLL_S = 0.1
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def worker_config(config: GatewayConfig, index: int, workers: int, port: int) -> GatewayConfig:
    """The config of worker ``index``: the shared port, its own metrics port and a fair thread share."""
    metrics = config.metrics_port
    if metrics:
        metrics += index
    return dataclasses.replace(
        config,
        port=port,
        metrics_port=metrics,
        reuse_port=True,
        default_intra_op_threads=config.default_intra_op_threads or default_intra_op_threads(workers),
        worker_index=index,
    )


def _die_with_parent(parent_pid: int) -> None:
    """Asks Linux to send this worker SIGTERM (a normal drain) when the parent dies, so a supervisor that
    is SIGKILLed or crashes never leaves orphaned workers serving the port. Elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning(
            "prctl(PR_SET_PDEATHSIG) failed (errno %d); workers may outlive the parent", ctypes.get_errno()
        )
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _worker_main(config: GatewayConfig, log_level: str, log_format: str, parent_pid: int) -> None:
    import asyncio

    from gateway.logs import configure_logging
    from gateway.server import serve

    configure_logging(log_level, log_format)
    _die_with_parent(parent_pid)
    sys.exit(asyncio.run(serve(config)))


def _reserve_port(host: str, port: int) -> socket.socket:
    """Binds (without listening) with SO_REUSEPORT so workers can join the port and nobody else takes it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((host, port))
    return holder


def run_workers(
    config: GatewayConfig, workers: int, *, log_level: str = "INFO", log_format: str = "json"
) -> int:
    """Runs ``workers`` gateway processes until SIGTERM/SIGINT; returns the exit code."""
    holder = _reserve_port(config.host, config.port)
    port = int(holder.getsockname()[1])
    context = multiprocessing.get_context("spawn")
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def start(index: int) -> BaseProcess:
        process = context.Process(
            target=_worker_main,
            args=(worker_config(config, index, workers, port), log_level, log_format, os.getpid()),
            name=f"infergate-worker-{index}",
        )
        process.start()
        log.info("worker %d started (pid %s) on %s:%d", index, process.pid, config.host, port)
        return process

    processes = {index: start(index) for index in range(workers)}
    restarts: collections.deque[float] = collections.deque()
    failed = False
    try:
        while not stopping:
            time.sleep(POLL_S)
            for index, process in list(processes.items()):
                if process.is_alive() or stopping:
                    continue
                log.error(
                    "worker %d (pid %s) exited with %s; restarting it", index, process.pid, process.exitcode
                )
                now = time.monotonic()
                restarts.append(now)
                while restarts and now - restarts[0] > RESTART_WINDOW_S:
                    restarts.popleft()
                if len(restarts) > MAX_RESTARTS:
                    log.error("more than %d restarts in %.0f s; stopping", MAX_RESTARTS, RESTART_WINDOW_S)
                    failed = stopping = True
                    break
                processes[index] = start(index)
    finally:
        for process in processes.values():
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + config.grace_seconds + 10
        for process in processes.values():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("worker %s did not drain in time; killing it", process.name)
                process.kill()
                process.join(5)
        holder.close()
    codes = [process.exitcode for process in processes.values()]
    log.info("workers exited with %s", codes)
    return 1 if failed or any(code != 0 for code in codes) else 0
