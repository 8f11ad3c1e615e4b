"""Shared pieces of the issue benchmarks (``make bench-batching|bench-swap|bench-sampling|bench-workers``).

Contracts:

* :func:`replace_section` / :func:`write_section` own one marked block of BENCHMARKS.md,
  ``<!-- NAME:start -->`` ... ``<!-- NAME:end -->``; everything outside it is kept byte for byte, and a
  missing block is appended at the end (a missing file starts with the title of :mod:`bench.load_md`).
* :func:`ratio` and :func:`verdict` are pure: a ratio is None when either side is missing or the divisor is
  zero, and a verdict is "met", "missed" or "-" (nothing measured).
* :func:`start_gateway` runs ``python -m gateway`` exactly as :mod:`bench.load` does (loopback, free
  ports), plus extra flags; :func:`measure` runs one :func:`loadtests.run.run_load` and records the load
  average just before it, so every figure carries the machine's state.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.load_md import _TITLE
from bench.scenarios import command_line
from bench.servers import GATEWAY_READY, ServerProcess, gateway_command
from loadtests.config import LoadConfig
from loadtests.environment import environment
from loadtests.report import write_json
from loadtests.run import run_load

__all__ = [
    "Gateway",
    "Measured",
    "add_model",
    "details",
    "goals",
    "fmt",
    "header",
    "load_average",
    "markers",
    "measure",
    "proc_cpu_s",
    "ratio",
    "replace_section",
    "start_gateway",
    "verdict",
    "write_section",
]


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with the ``name`` block replaced by ``body`` (markers added), or appended when missing."""
    start, end = markers(name)
    block = f"{start}\n{body.strip(chr(10))}\n{end}"
    if start in text and end in text.split(start, 1)[1]:
        head, rest = text.split(start, 1)
        return head + block + rest.split(end, 1)[1]
    return text.rstrip("\n") + "\n\n" + block + "\n"


def write_section(out: Path, name: str, body: str) -> None:
    text = out.read_text() if out.exists() else _TITLE
    out.write_text(replace_section(text, name, body))


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def verdict(value: float | None, goal: float, at_least: bool) -> str:
    """ "met" / "missed" for ``value`` against ``goal`` (``>=`` when ``at_least``, else ``<=``)."""
    if value is None:
        return "-"
    return "met" if (value >= goal if at_least else value <= goal) else "missed"


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def proc_cpu_s(pid: int) -> float:
    """utime + stime of process ``pid`` (its threads included) in seconds, from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def base_parser(name: str, doc: str | None, *, duration: float = 5.0) -> argparse.ArgumentParser:
    """The options every ``loadtests.bench_<name>`` script shares: work dir, results dir, BENCHMARKS.md to
    update, measured seconds per step and warm-up seconds."""
    p = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=doc)
    p.add_argument("--work", type=Path, default=Path(f"bench-out/{name}"))
    p.add_argument("--results", type=Path, default=Path(f"bench-out/results/{name}"))
    p.add_argument("--out", type=Path, default=None, help="BENCHMARKS.md to update (default: none)")
    p.add_argument("--duration", type=float, default=duration, help="measured seconds per step")
    p.add_argument("--warmup", type=float, default=1.0)
    return p


def fresh_registry(work: Path, results: Path, models: list[tuple[str, str, str]]) -> Path:
    """Empties ``work``, publishes each ``(name, kind, toml)`` bench model into ``work/registry`` and
    creates ``results``; returns the registry."""
    shutil.rmtree(work, ignore_errors=True)
    registry = work / "registry"
    for name, kind, toml in models:
        add_model(registry, name, kind, toml)
    results.mkdir(parents=True, exist_ok=True)
    return registry


def add_model(root: Path, name: str, kind: str, toml: str, seed: int = 0) -> Path:
    """Publishes a bench model (``kind`` "tiny" or "mlp", weights from ``seed``) as ``name`` with ``toml``
    as its model.toml, the way :func:`bench.models.build_bench_registry` does; returns the ONNX."""
    import numpy as np
    import onnx

    from bench.models import REFERENCE_ROWS, mlp_model, tiny_model
    from registry.publish import publish

    build, width = (tiny_model, 16) if kind == "tiny" else (mlp_model, 256)
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "model.toml").write_text(toml)
    staging = root.parent / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    onnx_path = staging / f"{name}-{seed}.onnx"
    onnx.save(build(seed), onnx_path)
    reference = staging / f"{name}-reference.npz"
    rows = np.random.default_rng(1).normal(size=(REFERENCE_ROWS, width)).astype(np.float32)
    np.savez(reference, allow_pickle=False, **{"input:input": rows})
    publish(root, name, onnx_path, reference=reference, notes="infergate benchmark model")
    return onnx_path


@dataclass
class Gateway:
    target: str
    metrics_url: str
    process: ServerProcess
    log_path: Path
    command: str


def start_gateway(stack: ExitStack, registry: Path, log_path: Path, *extra: str) -> Gateway:
    """A gateway subprocess on ``registry`` with ``extra`` flags, stopped when ``stack`` closes."""
    command = [*gateway_command(registry), *extra]
    process = stack.enter_context(ServerProcess(command, GATEWAY_READY, log_path, "gateway"))
    port, metrics_port = process.start()
    shown = " ".join(["python", *command[1:]]).replace(str(registry.resolve()), str(registry))
    return Gateway(f"127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics", process, log_path, shown)


@dataclass
class Measured:
    label: str
    report: dict[str, Any]
    command: str
    load_avg: tuple[float, float, float]

    @property
    def step(self) -> dict[str, Any]:
        return dict(self.report["steps"][0])

    def lat(self, key: str, step: int = 0) -> float | None:
        value = self.report["steps"][step]["latency_ms"][key]
        return None if value is None else float(value)


def measure(
    label: str, results: Path, progress: Any = None, port_var: str = "GATEWAY_PORT", **config: Any
) -> Measured:
    """One load run (``config`` = :class:`LoadConfig` fields); JSON to ``results/<label>.json``."""
    config.setdefault("progress", False)
    config.setdefault("input_source", "reference")
    cfg = LoadConfig(**config)
    load = load_average()
    started = time.monotonic()
    report = run_load(cfg, progress)
    report["load_average_before"] = list(load)
    write_json(report, results / f"{label}.json")
    step = report["steps"][0]
    print(
        f"== {label}: {report['throughput_rps']:,.0f} req/s, {report['rows_per_s']:,.0f} rows/s, "
        f"p50 {step['latency_ms']['p50']} ms, p99 {step['latency_ms']['p99']} ms, errors {report['errors']}, "
        f"load {load[0]:.2f} ({time.monotonic() - started:.0f} s)",
        file=sys.stderr,
        flush=True,
    )
    return Measured(label, report, command_line(cfg, port_var), load)


def header(title: str, command: str, elapsed_s: float, extra: list[str] | None = None) -> list[str]:
    """The section's opening lines: how it was made, on what machine, in what state."""
    env = environment()
    load = ", ".join(f"{x:.2f}" for x in env.get("load_average") or [])
    dirty = " plus uncommitted changes" if env.get("git_dirty") else ""
    versions = env.get("versions", {})
    return [
        f"## {title}",
        "",
        f"Measured by `{command}` on {env['started_at']} UTC (whole run {elapsed_s:.0f} s); git "
        f"{env.get('git_commit')}{dirty}; Python {env.get('python')}, grpcio {versions.get('grpcio')}, "
        f"onnxruntime {versions.get('onnxruntime')}.",
        "",
        f"- Machine: {env.get('cpu_model')}, {env.get('cpu_count')} cores, shared and noisy: the load client "
        f"(separate processes), the servers and other jobs share the cores. Load average at the end: {load}; "
        "each row gives the 1-minute load average just before it ran.",
        *(extra or []),
        "",
    ]


def details(runs: list[Measured]) -> list[str]:
    """One row per measured run: the exact client command and every figure the ratios use."""
    lines = [
        "| run | req/s | rows/s | goodput/s | p50 ms | p99 ms | error p99 ms | errors | server batch mean "
        "| client cores | machine busy | load avg |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for run in runs:
        for i, step in enumerate(run.report["steps"]):
            errors = ", ".join(f"{k} {v}" for k, v in sorted(step["errors"].items())) or "0"
            batch = ((step.get("server") or {}).get("batch_size") or {}).get("mean")
            busy = step["client"]["machine_cpu_busy"]
            name = run.label if len(run.report["steps"]) == 1 else f"{run.label} step {i + 1}"
            lines.append(
                f"| {name} | {fmt(step['throughput_rps'], 0)} | {fmt(step['rows_per_s'], 0)} "
                f"| {fmt(step['goodput_rps'], 0)} | {fmt(step['latency_ms']['p50'])} "
                f"| {fmt(step['latency_ms']['p99'])} | {fmt(step.get('error_latency_ms', {}).get('p99'))} "
                f"| {errors} | {fmt(batch)} | {', '.join(f'{c:.2f}' for c in step['client']['cpu_cores'])} "
                f"| {'-' if busy is None else f'{busy:.0%}'} | {run.load_avg[0]:.2f} |"
            )
    lines += ["", "Commands (`$GATEWAY_PORT` / `$ECHO_PORT`: the server of that run):", ""]
    lines += [f"- {run.label}: `{run.command}`" for run in runs]
    return [*lines, ""]


def goals(rows: list[tuple[str, str, float | None, str, str]]) -> list[str]:
    """The headline table: (figure, measured as "a ÷ b", value, goal text, verdict)."""
    lines = ["| figure | measured | value | goal | verdict |", "|---|---:|---:|---|---|"]
    lines += [
        f"| {name} | {measured} | {fmt(value)} | {goal} | {v} |" for name, measured, value, goal, v in rows
    ]
    return [*lines, ""]
