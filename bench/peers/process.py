"""One server of the peers benchmark as a process group: start, wait until it serves, pin, stop.

Contracts:

* :class:`ServerGroup` starts its command in a new session (``start_new_session``), so the server and
  every process it spawns (tritonserver, its Python backend stubs, MLServer's inference-pool workers)
  share one process group. :meth:`ServerGroup.stop` sends SIGTERM to the whole group, waits ``grace_s``,
  then SIGKILLs the group; it is idempotent, and the object is a context manager, so a failure or Ctrl-C
  never leaves a process behind.
* :func:`wait_ready` polls the KServe V2 gRPC ``ServerReady`` and ``ModelReady`` of every model until all
  say ready, at most ``timeout_s`` (every call has a short deadline); it raises :class:`StartError` at once
  when the process exits, or at the timeout, naming the log file.
* :func:`pin_group` moves every thread of every process of the group onto ``cpus`` with ``taskset``.
* Ports are found free on 127.0.0.1 by :func:`free_ports`; a race with another program shows up as a
  failed start, which the caller retries.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO, Any

import grpc

from protos import inference_pb2 as pb

__all__ = ["ServerGroup", "StartError", "free_ports", "group_pids", "pin_group", "wait_ready"]

_SERVICE = "/inference.GRPCInferenceService"


class StartError(RuntimeError):
    """A server did not become ready."""


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that were free on 127.0.0.1 a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class ServerGroup:
    """A server command run as its own process group (see the module contract)."""

    def __init__(
        self,
        name: str,
        command: list[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name, self.command, self.log_path, self.env, self.cwd = name, command, log_path, env, cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        self._log.write(f"\n=== {' '.join(self.command)}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            self.command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM to the group, wait, then SIGKILL to the group (idempotent)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            pgid = proc.pid
            _signal_group(pgid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and group_pids(pgid):
                if proc.poll() is None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(0.2)
                else:
                    time.sleep(0.2)
            if group_pids(pgid):
                _signal_group(pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ServerGroup:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def group_pids(pgid: int) -> list[int]:
    """Live (not zombie) processes whose process group is ``pgid``, from ``/proc``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def pin_group(pgid: int, cpus: set[int]) -> int:
    """Pins every thread of every process in group ``pgid`` to ``cpus`` (``taskset -a -p``); returns how
    many processes were pinned."""
    cpu_list = ",".join(str(c) for c in sorted(cpus))
    pinned = 0
    for pid in group_pids(pgid):
        done = subprocess.run(
            ["taskset", "-a", "-p", "-c", cpu_list, str(pid)], capture_output=True, timeout=10, check=False
        )
        pinned += done.returncode == 0
    return pinned


def wait_ready(server: ServerGroup, target: str, models: list[str], timeout_s: float) -> float:
    """Waits until the server and every model are ready (see the module contract); returns the seconds
    it took."""
    started = time.monotonic()
    deadline = started + timeout_s
    last = "no answer yet"
    with grpc.insecure_channel(target) as channel:
        server_ready = channel.unary_unary(
            f"{_SERVICE}/ServerReady",
            request_serializer=pb.ServerReadyRequest.SerializeToString,
            response_deserializer=pb.ServerReadyResponse.FromString,
        )
        model_ready = channel.unary_unary(
            f"{_SERVICE}/ModelReady",
            request_serializer=pb.ModelReadyRequest.SerializeToString,
            response_deserializer=pb.ModelReadyResponse.FromString,
        )
        while time.monotonic() < deadline:
            if not server.running:
                raise StartError(f"{server.name} exited before it was ready (see {server.log_path})")
            try:
                if server_ready(pb.ServerReadyRequest(), timeout=2.0).ready and all(
                    model_ready(pb.ModelReadyRequest(name=m), timeout=2.0).ready for m in models
                ):
                    return time.monotonic() - started
                last = "not ready"
            except grpc.RpcError as exc:
                last = f"{exc.code().name}: {exc.details()}"
            time.sleep(0.5)
    raise StartError(f"{server.name} was not ready within {timeout_s:.0f} s ({last}); see {server.log_path}")
