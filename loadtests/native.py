"""The native engine: a step's unary calls sent by a compiled one-thread HTTP/2 gRPC client
(``loadtests/native/``) instead of Python, for offered rates one Python client core cannot sustain (a
1-row model at 4x a gateway's capacity is over 16,000 calls/s).

Contracts:

* :func:`run_native` runs one client process's share of a unary step with the binary and feeds every
  call's record into the process's :class:`Recorder`, so reports, goodput and warm-up are exactly those of
  the Python engine. The open-loop schedule is the Python engine's (:func:`loadtests.schedule.arrivals`,
  same seed, rate share and quota), written to a file the binary walks; closed loop runs ``concurrency``
  chains until the step ends. Payloads are sent in turn, as by the Python engine.
* Not supported (ValueError before anything runs, :func:`check_supported`): ModelStreamInfer, TLS or a
  token, and a request quota in closed loop.
* The records carry perf_counter_ns times (CLOCK_MONOTONIC, Linux) and the codes of
  :mod:`loadtests.status`; the binary's CPU time is the worker's (``RUSAGE_CHILDREN``).
* Like a gRPC client, the binary keeps at most the server's SETTINGS_MAX_CONCURRENT_STREAMS calls
  started; the rest wait in its queue, in order, until a stream frees or their deadline passes
  (DEADLINE_EXCEEDED). A stream the server refuses (RST_STREAM REFUSED_STREAM) finishes UNAVAILABLE at
  once: the binary does not retry.
* :func:`build` compiles the binary with ``g++`` alone (no gRPC library); ``make native-client`` does the
  same.
"""

from __future__ import annotations

import resource
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Protocol

import numpy as np

from loadtests.recorder import Recorder
from loadtests.schedule import arrivals
from loadtests.secure import ClientSecurity
from loadtests.spec import StepSpec, WorkerTask
from loadtests.unary import MODEL_INFER

__all__ = [
    "SOURCES",
    "build",
    "check_supported",
    "read_records",
    "run_native",
    "unsupported",
    "write_payloads",
]

#: The C++ sources of the engine: the step's calls (load.cc), the HTTP/2 connection (h2.cc), HPACK (hpack.cc).
SOURCES = tuple(Path(__file__).with_name("native") / name for name in ("load.cc", "h2.cc", "hpack.cc"))


class _Step(Protocol):
    """What :func:`unsupported` reads; :class:`StepSpec` and :class:`loadtests.config.LoadConfig` have it."""

    @property
    def stream(self) -> bool: ...
    @property
    def security(self) -> ClientSecurity | None: ...
    @property
    def mode(self) -> str: ...
    @property
    def requests(self) -> int | None: ...


def unsupported(step: _Step) -> str | None:
    """Why the native engine cannot run ``step`` (module contract), or None: the one home of the rule that
    LoadConfig checks up front and :func:`run_native` again."""
    if step.stream or step.security is not None:
        return "--native-client sends plaintext unary calls only (no --stream, TLS or token)"
    if step.mode == "closed" and step.requests is not None:
        return "--native-client runs a closed loop for --duration, not a --requests quota"
    return None


def check_supported(spec: StepSpec) -> None:
    """Raises ValueError when :func:`unsupported` has a reason for ``spec``."""
    reason = unsupported(spec)
    if reason is not None:
        raise ValueError(reason)


def write_payloads(path: Path, payloads: tuple[bytes, ...]) -> None:
    """Each payload as a little-endian uint32 length, then its bytes (the binary's PAYLOADS file)."""
    with path.open("wb") as out:
        for payload in payloads:
            out.write(struct.pack("<I", len(payload)))
            out.write(payload)


def read_records(path: Path) -> np.ndarray:
    """The binary's records: an (n, 4) int64 array of intended, sent, done, code."""
    return np.fromfile(path, dtype="<i8").reshape(-1, 4)


def run_native(binary: Path, task: WorkerTask, recorder: Recorder) -> float:
    """Runs this process's share of ``task`` with ``binary``; returns the binary's CPU seconds."""
    spec = task.spec
    check_supported(spec)
    concurrency, quota = spec.share(task.process, task.processes)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory(prefix="infergate-load-native-") as tmp:
        folder = Path(tmp)
        write_payloads(folder / "payloads", spec.payloads[task.process :: task.processes] or spec.payloads)
        command = [
            str(binary), spec.target, MODEL_INFER, str(folder / "payloads"), str(int(spec.deadline_s * 1e9)),
            str(task.end_ns), str(int(spec.drain_s * 1e9)), str(spec.max_inflight), str(folder / "records"),
        ]  # fmt: skip
        if spec.mode == "open":
            times = arrivals(
                rate=spec.rate, start_ns=task.start_ns, end_ns=task.end_ns, measure_ns=task.measure_ns,
                quota=quota, poisson=spec.poisson, process=task.process, processes=task.processes,
                seed=spec.seed,
            )  # fmt: skip
            with (folder / "schedule").open("wb") as out:
                for chunk in times:
                    out.write(chunk.astype("<i8").tobytes())
            command += ["open", str(folder / "schedule")]
        else:
            command += ["closed", str(concurrency), str(task.start_ns)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"native client exited {done.returncode}: {done.stderr.strip()[-500:]}")
        recorder.add_records(read_records(folder / "records"))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def build(output: Path, sources: tuple[Path, ...] = SOURCES) -> Path:
    """Compiles the engine to ``output`` (g++, C++17, no libraries beyond libc); returns ``output``."""
    output.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["g++", "-O2", "-std=c++17", *map(str, sources), "-o", str(output)], check=True)
    return output
