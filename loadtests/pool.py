"""The client processes of a run, and running one step on all of them with exact merging.

Contracts:

* :class:`ClientPool` starts ``processes`` ``spawn``-ed workers (never ``fork``: gRPC's threads do not
  survive it) once per run and reuses them for every step of a sweep; ``close`` stops them (terminating
  any that do not exit within a few seconds).
* :meth:`ClientPool.run_step` gives every worker the same ``start_ns`` (``START_LEAD_S`` in the future, so
  all have connected), waits for all results within a hard bound derived from the step's limits, and
  merges the per-process summaries exactly. ``on_progress`` is called about every 0.2 s with
  (seconds since start, requests completed so far) for a progress bar.
* A worker that reports an error, dies or misses the bound raises :class:`LoadError`.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from loadtests.recorder import Summary
from loadtests.spec import StepSpec, WorkerTask
from loadtests.worker import WorkerResult, worker_main

__all__ = ["START_LEAD_S", "ClientPool", "LoadError", "StepOutcome"]

START_LEAD_S = 0.5
_POLL_S = 0.2
_SLACK_S = 30.0


class LoadError(RuntimeError):
    """A client process could not run its share of a step."""


@dataclass
class StepOutcome:
    """A step's merged summary plus each process's CPU seconds and wall seconds."""

    spec: StepSpec
    summary: Summary
    cpu_s: list[float]
    wall_s: list[float]
    start_ns: int


class ClientPool:
    """``processes`` client processes, alive for a whole run."""

    def __init__(self, processes: int) -> None:
        if processes < 1:
            raise ValueError("processes must be >= 1")
        ctx = mp.get_context("spawn")
        self.processes = processes
        self.progress: Any = ctx.Array("q", processes, lock=False)
        self._conns: list[Connection] = []
        self._procs: list[BaseProcess] = []
        for index in range(processes):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(child, self.progress), name=f"load-client-{index}")
            proc.daemon = True
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)

    def __enter__(self) -> ClientPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run_step(
        self, spec: StepSpec, on_progress: Callable[[float, int], None] | None = None
    ) -> StepOutcome:
        """Runs ``spec`` on every process and returns the merged outcome."""
        for index in range(self.processes):
            self.progress[index] = 0
        start_ns = time.perf_counter_ns() + int(START_LEAD_S * 1e9)
        for index, conn in enumerate(self._conns):
            conn.send(WorkerTask(spec, index, self.processes, start_ns))
        bound_s = START_LEAD_S + spec.warmup_s + spec.duration_s + spec.deadline_s + spec.drain_s + _SLACK_S
        deadline = time.monotonic() + bound_s
        results: dict[int, WorkerResult] = {}
        while len(results) < self.processes:
            if time.monotonic() > deadline:
                raise LoadError(f"client processes did not finish within {bound_s:.0f} s")
            for index, conn in enumerate(self._conns):
                if index in results:
                    continue
                if conn.poll(_POLL_S / self.processes):
                    results[index] = conn.recv()
                elif not self._procs[index].is_alive():
                    raise LoadError(f"client process {index} died (exit code {self._procs[index].exitcode})")
            if on_progress is not None:
                elapsed = (time.perf_counter_ns() - start_ns) / 1e9
                on_progress(max(elapsed, 0.0), int(sum(self.progress[:])))
        errors = [f"process {r.process}: {r.error}" for r in results.values() if r.error]
        if errors:
            raise LoadError("\n".join(errors))
        summary = Summary()
        for index in range(self.processes):
            summary.merge(results[index].summary)
        return StepOutcome(
            spec=spec,
            summary=summary,
            cpu_s=[results[i].cpu_s for i in range(self.processes)],
            wall_s=[results[i].wall_s for i in range(self.processes)],
            start_ns=start_ns,
        )

    def close(self) -> None:
        """Stops every worker; idempotent."""
        for conn in self._conns:
            with contextlib.suppress(OSError, ValueError):
                conn.send(None)
        for proc in self._procs:
            proc.join(5.0)
            if proc.is_alive():
                proc.terminate()
                proc.join(2.0)
        for conn in self._conns:
            conn.close()
        self._conns, self._procs = [], []
