"""Goal (e)'s floor: what one refused call costs the server's core, and the goodput bound that cost sets.

Under overload a server must refuse most calls, and a refusal is not free: gRPC core reads the call off
the connection, parses its headers, creates it and answers it before Python ever sees it. On one core,
every refusal takes time from the calls being served. This step measures that cost, so the (e) figures
can be read against what the transport alone allows.

Contracts:

* :func:`measure` (run by :mod:`bench.hotpath` after the defaults gateway's ``tiny`` overload steps): for
  each refusal kind of :data:`KINDS`, an echo server whose event loop stalls on its first call
  (``infergate-load echo-server --stall``, :mod:`loadtests.echo`) is started with that limit at
  :data:`HELD` and pinned like the gateway; the same load client offers it ``tiny`` calls at each factor
  of :data:`~bench.hotpath_overload.FACTORS` times the gateway's capacity, Poisson, with the 50 ms
  deadline. All calls but the held ones are refused by gRPC core. The server's CPU over the step
  (``/proc/<pid>/stat``) ÷ the calls the client sent (warm-up included: the CPU window holds them) is the
  cost of one refusal, ``us_per_call``.
* ``results["refusals"][kind][factor]`` = ``{"label", "rate", "calls", "cpu_s", "us_per_call"}``;
  ``results["refusals"]["capacity_rps"]`` is the capacity the rates were derived from.
* :func:`goodput_bound`: a core that serves ``s`` calls/s at its closed-loop cost (``1/c`` core-seconds
  each, ``c`` = capacity) and refuses the rest of ``F·c`` at ``R`` each spends ``s/c + (F·c - s)·R <= 1``
  core-second per second, so ``s/c <= (1 - F·r) / (1 - r)`` with ``r = R·c``. It is an estimate, not a
  proof: it takes a served call to cost what the closed-loop probe says (``1/c``); a step that serves
  calls more cheaply than its probe did (a probe slowed by the shared host, larger batches: the gateway's
  call acceptors batch calls under overload) can exceed it.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bench.hotpath_overload import BUDGET_MS, FACTORS, goodput_ratio
from bench.kit import Measured, proc_cpu_s
from bench.markdown import fmt
from bench.pinning import pin
from bench.sections import Results
from bench.servers import ECHO_READY, ServerProcess, echo_command

__all__ = ["HELD", "KINDS", "goodput_bound", "measure", "refusal_text"]

#: Calls gRPC core holds for the stalled loop (the gateway's default ``--max-pending-calls``).
HELD = 64
#: Refusal kinds: key -> (label, echo-server flag that sets the limit).
KINDS: dict[str, tuple[str, str]] = {
    "pending": ("gRPC core's pending-call limit (CANCELLED)", "--max-pending-calls"),
    "streams": ("the HTTP/2 stream limit (REFUSED_STREAM, seen as UNAVAILABLE)", "--max-concurrent-streams"),
}


@dataclass(frozen=True)
class _Stalled:
    """A stalled echo server, as ``bench.load`` takes a server (``key`` "echo": its port is $ECHO_PORT)."""

    key: str
    target: str
    metrics_url: str | None
    pid: int


def _stalled_echo(stack: ExitStack, registry: Path, flags: list[str], log: Path) -> _Stalled:
    command = [*echo_command(registry), "--stall", *flags]
    proc = stack.enter_context(ServerProcess(command, ECHO_READY, log, "stalled echo"))
    port = proc.start()[0]
    assert proc.proc is not None
    return _Stalled("echo", f"127.0.0.1:{port}", None, proc.proc.pid)


class _Bench(Protocol):
    """What :func:`measure` needs of :class:`bench.hotpath._Bench`."""

    def load(self, label: str, server: Any, model: str, **config: Any) -> Measured: ...


def goodput_bound(factor: float, r: float | None) -> float | None:
    """Goodput ÷ capacity left at ``factor`` x capacity by refusals costing ``r`` = R x capacity each
    (module contract: an estimate, assuming a served call costs its closed-loop share)."""
    if r is None or r >= 1:
        return None
    return max(0.0, (1 - factor * r) / (1 - r))


def measure(
    bench: _Bench,
    registry: Path,
    capacity: float,
    pin_to: list[int] | None,
    log_dir: Path,
    native_client: Path | None,
) -> dict[str, Any]:
    """Runs the refusal steps (module contract) from the calling process, pinned as the caller is.
    ``registry``: what the echo server serves; ``pin_to``: CPUs for its threads; ``log_dir``: its logs;
    ``native_client``: the load engine (None: Python gRPC)."""
    out: dict[str, Any] = {"capacity_rps": capacity}
    for kind, (_, flag) in KINDS.items():
        out[kind] = {}
        for factor in FACTORS:  # a fresh server per step: each starts with an empty pending queue
            with ExitStack() as stack:
                log = log_dir / f"stalled-{kind}-{factor}x.log"
                server = _stalled_echo(stack, registry, [flag, str(HELD)], log)
                if pin_to:
                    pin(server.pid, pin_to)
                label = f"refusals-{kind}-{factor}x"
                rate = round(factor * capacity, 1)
                before = proc_cpu_s(server.pid)
                run = bench.load(
                    label, server, "tiny", mode="open", poisson=True, levels=(rate,), rows=1,
                    deadline_s=BUDGET_MS / 1000, budget_ms=BUDGET_MS, drain_s=0.5,
                    native_client=native_client,
                )  # fmt: skip
                cpu_s = proc_cpu_s(server.pid) - before
            calls = int(run.step["requests"]) + int(run.step.get("warmup_requests") or 0)
            out[kind][str(factor)] = {
                "label": label,
                "rate": rate,
                "calls": calls,
                "cpu_s": cpu_s,
                "us_per_call": cpu_s / calls * 1e6 if calls else None,
            }
    return out


def _measured_goodput(results: Results, runs: dict[str, Measured], server: str, factor: int) -> str:
    entry = ((results.get("overload") or {}).get("tiny") or {}).get(server) or {}
    return fmt(goodput_ratio(entry, runs, factor))


def refusal_text(results: Results, runs: dict[str, Measured]) -> list[str]:
    """The subsection: the cost table and the bound beside the gateways' measured goodput."""
    found = results.get("refusals")
    if not found:
        return []
    capacity = found["capacity_rps"]
    lines = [
        "### (e) What a refusal costs the server's core",
        "",
        "An echo server whose event loop stalls on its first call (`infergate-load echo-server --stall`), "
        f"pinned as the gateway was, holds {HELD} calls; gRPC core refuses the rest by itself. The same "
        "client offers it the `tiny` scenario's rates (the defaults gateway's capacity "
        f"c = {fmt(capacity, 0)} req/s times the factor F), and the server's CPU over the step ÷ the calls "
        "sent is the cost R of one refusal. A core that serves s calls/s at its closed-loop cost (1/c each) "
        "and refuses the rest spends s/c + (F·c - s)·R ≤ 1, so goodput ÷ capacity ≤ (1 - F·r) / (1 - r) "
        "with r = R·c: the ceiling the refusals leave any server on this transport and core, before Python "
        "does anything. It takes a served call to cost what it did in the closed-loop probe; a step that "
        "serves calls more cheaply than its probe did (a probe slowed by the shared host, calls batched "
        "under overload by the gateway's call acceptors) can pass it, so it is an estimate, not a proof.",
        "",
        "| refused at | factor | offered calls/s | calls | server CPU s | µs per refused call "
        "| share of the core at this rate | r = R·c | ceiling on goodput ÷ capacity | measured: defaults "
        "| measured: tuned |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, (label, _) in KINDS.items():
        for factor, m in (found.get(kind) or {}).items():
            us = m["us_per_call"]
            r = None if us is None else us * capacity / 1e6
            share = None if us is None else us * m["rate"] / 1e6
            lines.append(
                f"| {label} | {factor}x | {fmt(m['rate'], 0)} | {m['calls']} | {fmt(m['cpu_s'])} "
                f"| {fmt(us, 1)} | {fmt(share)} | {fmt(r, 3)} | {fmt(goodput_bound(float(factor), r))} "
                f"| {_measured_goodput(results, runs, 'defaults', int(factor))} "
                f"| {_measured_goodput(results, runs, 'tuned', int(factor))} |"
            )
    return [*lines, ""]
