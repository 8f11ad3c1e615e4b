"""A ``--workers N`` gateway as a real subprocess for tests: its output lines on a queue, its readiness
lines parsed, and a context manager that always takes the whole process group down (workers that outlive a
failed test would hold the output pipe open and hang the reader)."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

READY = re.compile(r"worker (\d+) pid (\d+) listening on 127\.0\.0\.1:(\d+) \(metrics :(\d+)\)")


@dataclass
class Workers:
    """The supervisor process and the queue of everything it (and its workers) printed."""

    process: subprocess.Popen[str]
    lines: queue.Queue[str]
    ready: list[tuple[int, int, int, int]] = field(default_factory=list)

    def next_ready(self, timeout: float = 60.0) -> tuple[int, int, int, int]:
        """(worker index, pid, port, metrics port) of the next worker that says it listens."""
        if self.ready:  # a line that held more than one worker's
            return self.ready.pop(0)
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.ready.extend((int(m[1]), int(m[2]), int(m[3]), int(m[4])) for m in READY.finditer(line))
            if self.ready:
                return self.ready.pop(0)
            seen.append(line)
        raise AssertionError(
            "no worker became ready; the gateway printed:\n" + "".join(seen[-40:]) + self._stacks()
        )

    def _stacks(self) -> str:
        """Every thread's stack of every process in the group (``kill -USR1``: gateway/logs.py), so a
        worker stuck at start-up shows where."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGUSR1)
        time.sleep(2.0)  # let the dumps reach the pipe; only on the way to a failure
        lines: list[str] = []
        with contextlib.suppress(queue.Empty):
            while True:
                lines.append(self.lines.get_nowait())
        return "\nstacks after SIGUSR1:\n" + "".join(lines[-400:])


def _pump(process: subprocess.Popen[str], sink: queue.Queue[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        sink.put(line)


@contextlib.contextmanager
def gateway_workers(registry: Path, workers: int, *options: str) -> Iterator[Workers]:
    """``python -m gateway --registry REGISTRY --workers N OPTIONS --log-format text`` in its own process
    group; on exit the group is killed (if still alive) and the pipe closed."""
    command = [sys.executable, "-m", "gateway", "--registry", str(registry), "--workers", str(workers)]
    process = subprocess.Popen(
        [*command, *options, "--log-format", "text"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    sink: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_pump, args=(process, sink), daemon=True)
    reader.start()
    try:
        yield Workers(process, sink)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        reader.join(10)
        assert process.stdout is not None
        process.stdout.close()
