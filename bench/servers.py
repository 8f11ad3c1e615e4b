"""Servers under test as subprocesses: the gateway (``python -m gateway``) and the echo baseline.

Contracts:

* :class:`ServerProcess` starts a command whose stdout announces readiness with one line matching
  ``ready`` (the gateway prints ``infergate gateway listening on 127.0.0.1:PORT (metrics :MPORT)``);
  :meth:`ServerProcess.start` waits for it at most ``timeout_s`` and returns the regex groups. Its stderr
  (logs) goes to ``log_path``.
* :meth:`ServerProcess.stop` sends SIGTERM, waits ``grace_s``, then kills; idempotent. The object is a
  context manager, so a failed benchmark never leaves a server running.
* Servers bind 127.0.0.1 with port 0 (the OS picks free ports).
* :func:`export_revision` writes the ``gateway``, ``registry`` and ``protos`` packages of a git revision
  into a directory; a gateway started with ``source`` set to it runs that revision's code (its own cwd
  and ``PYTHONPATH``), so two revisions can be measured in one run.
"""

from __future__ import annotations

import io
import os
import re
import selectors
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import IO, Any

__all__ = [
    "ECHO_READY",
    "GATEWAY_READY",
    "ServerProcess",
    "echo_command",
    "export_revision",
    "gateway_command",
]

GATEWAY_READY = r"listening on 127\.0\.0\.1:(\d+) \(metrics :(\d+)\)"
ECHO_READY = r"infergate echo listening on 127\.0\.0\.1:(\d+)"
_REPO = Path(__file__).resolve().parent.parent


def gateway_command(registry: Path) -> list[str]:
    """The gateway on ``registry``, loopback, free ports, a short drain on SIGTERM."""
    return [
        sys.executable, "-m", "gateway", "--registry", str(registry.resolve()), "--host", "127.0.0.1",
        "--port", "0", "--metrics-port", "0", "--grace-seconds", "5",
    ]  # fmt: skip


def export_revision(rev: str, directory: Path, repo: Path = _REPO) -> str:
    """Exports the server packages of git revision ``rev`` into ``directory``; returns the full sha."""
    sha = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()  # fmt: skip
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", "--format=tar", sha, "gateway", "registry", "protos"],
        capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(directory, filter="data")
    return sha


def echo_command(registry: Path) -> list[str]:
    """The echo baseline server on ``registry``, loopback, a free port."""
    return [sys.executable, "-m", "loadtests", "echo-server", "--registry", str(registry), "--port", "0"]


class ServerProcess:
    """One server subprocess (see the module contract)."""

    def __init__(
        self, command: list[str], ready: str, log_path: Path, name: str = "server", source: Path | None = None
    ) -> None:
        self.command, self.ready, self.log_path, self.name = command, re.compile(ready), log_path, name
        self.source = source
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, timeout_s: float = 120.0) -> tuple[str, ...]:
        """Starts the process and returns the ready line's groups; RuntimeError if it never gets ready."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        env, cwd = None, None
        if self.source is not None:
            env = {**os.environ, "PYTHONPATH": str(self.source.resolve())}
            cwd = self.source
        self.proc = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL, env=env, cwd=cwd
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        seen = b""
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not selector.select(timeout=min(1.0, max(deadline - time.monotonic(), 0.01))):
                    if self.proc.poll() is not None:
                        break
                    continue
                line = self.proc.stdout.readline()
                if not line:
                    break
                seen += line
                match = self.ready.search(line.decode(errors="replace"))
                if match:
                    return match.groups()
        self.stop()
        raise RuntimeError(
            f"{self.name} did not start (see {self.log_path}); stdout: {seen.decode(errors='replace')!r}"
        )

    def stop(self, grace_s: float = 15.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; returns the exit code (None if never started)."""
        proc, self.proc = self.proc, None
        code = None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(grace_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            code = proc.returncode
            if proc.stdout is not None:
                proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
