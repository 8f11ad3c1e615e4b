"""The measuring loop of the peers benchmark: one server at a time, started, health-checked, measured with
the same ``infergate-load`` scenarios, stopped.

Contracts:

* :func:`measure_server` starts one :class:`~bench.peers.launch.ServerSpec` (fresh ports on every try, at
  most ``attempts`` tries, each bounded by ``start_timeout_s``), runs every closed-loop cell of
  :func:`cells` and then the overload scenario, and always stops the server's whole process group. A
  server that never starts gives a result with ``error`` set and no cells; the run goes on.
* A cell is one closed-loop :func:`loadtests.run.run_load` step at one concurrency, with the rows of the
  registry's ``reference.npz``. The server's metrics are scraped just before and after it for the mean
  batch (:func:`bench.peers.metrics.mean_batch`). Its JSON report goes to ``results/<server>/<cell>.json``.
* :func:`run_all` raises when no server gave a single cell (nothing is written then); a server that failed
  is a row with its error, and the others still run and are written.
* Overload: with two or more usable cores, the server's process group is pinned to the first core and the
  load client to the others (``taskset``; restored afterwards). A closed-loop probe at
  ``probe_concurrency`` measures the server's capacity there; then Poisson arrivals at ``factor`` x that
  capacity run with the gRPC deadline and the ``timeout`` parameter both equal to ``budget_ms``. Goodput is
  OK responses within the budget per second, also given as a fraction of the capacity.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.kit import add_model
from bench.peers.launch import (
    CONFIGS,
    LABELS,
    MODELS,
    REFERENCE,
    SERVERS,
    TUNED_TOML,
    ServerSpec,
    server_spec,
    write_files,
)
from bench.peers.metrics import mean_batch, scrape
from bench.peers.process import ServerGroup, StartError, free_ports, pin_group, wait_ready
from bench.peers.rounds import cell_key, measure_rounds
from loadtests.config import LoadConfig
from loadtests.report import write_json
from loadtests.run import run_load

__all__ = ["Plan", "cell_key", "cells", "measure_server", "run_all"]


@dataclass(frozen=True)
class Plan:
    """What to measure on every server, and for how long."""

    registry: Path  # rows come from its reference.npz
    results: Path
    duration_s: float = 3.0
    warmup_s: float = 1.0
    concurrency: tuple[int, ...] = (1, 16, 64)
    batch_rows: int = 32
    batch_concurrency: tuple[int, ...] = (1, 16)
    processes: int = 1
    overload_model: str = "mlp"
    probe_concurrency: int = 64
    factor: float = 2.0
    budget_ms: float = 50.0
    overload_s: float = 5.0
    start_timeout_s: float = 180.0
    attempts: int = 3
    rounds: int = 0  # head-to-head rounds of goal (c)'s cells, every server up (bench/peers/rounds.py)


def cells(plan: Plan) -> list[tuple[str, int, int]]:
    """``(model, rows, concurrency)`` of every closed-loop cell, in the order they run."""
    out = [(model, 1, c) for model in MODELS for c in plan.concurrency]
    return out + [("mlp", plan.batch_rows, c) for c in plan.batch_concurrency]


def _log(message: str) -> None:
    print(f"[bench-peers] {message}", file=sys.stderr, flush=True)


def _load(plan: Plan, spec: ServerSpec, label: str, **config: Any) -> dict[str, Any]:
    cfg = LoadConfig(
        target=spec.target,
        input_source="reference",
        registry=plan.registry,
        warmup_s=plan.warmup_s,
        processes=plan.processes,
        progress=False,
        label=label,
        **config,
    )
    load = os.getloadavg()
    report = run_load(cfg)
    report["load_average_before"] = list(load)
    return report


def _figures(report: dict[str, Any], batch: float | None, label: str) -> dict[str, Any]:
    step = report["steps"][0]
    return {
        "cell": label,
        "rps": step["throughput_rps"],
        "rows_per_s": step["rows_per_s"],
        "goodput_rps": step["goodput_rps"],
        "p50_ms": step["latency_ms"]["p50"],
        "p99_ms": step["latency_ms"]["p99"],
        "max_ms": step["latency_ms"]["max"],
        "error_p50_ms": (step.get("error_latency_ms") or {}).get("p50"),
        "error_max_ms": (step.get("error_latency_ms") or {}).get("max"),
        "ok": step["ok"],
        "requests": step["requests"],
        "errors": step["errors"],
        "mean_batch": batch,
        "send_lag_p99_ms": (step.get("send_lag_ms") or {}).get("p99"),
        "client_cores": step["client"]["cpu_cores"],
        "machine_cpu_busy": step["client"]["machine_cpu_busy"],
        "load_average": report["load_average_before"][0],
        "warnings": step["warnings"],
    }


def _cell(
    plan: Plan, spec: ServerSpec, model: str, rows: int, concurrency: int, results: Path | None = None
) -> dict[str, Any]:
    """One closed-loop cell; its report goes to ``results`` (default: the server's results folder)."""
    label = cell_key(model, rows, concurrency)
    before = scrape(spec.metrics_url)
    report = _load(
        plan, spec, label, model=model, levels=(float(concurrency),), rows=rows, duration_s=plan.duration_s
    )
    batch = mean_batch(spec.kind, before, scrape(spec.metrics_url), model, rows)
    write_json(report, (results or plan.results / spec.key) / f"{label}.json")
    figures = {"model": model, "rows": rows, "concurrency": concurrency, **_figures(report, batch, label)}
    _log(
        f"{spec.key} {label}: {figures['rps']:,.0f} req/s, p50 {figures['p50_ms']} ms, "
        f"p99 {figures['p99_ms']} ms, batch {batch if batch is None else round(batch, 2)}, "
        f"errors {figures['errors'] or 0}"
    )
    return figures


def _overload(plan: Plan, spec: ServerSpec, server: ServerGroup) -> dict[str, Any]:
    usable = sorted(os.sched_getaffinity(0))
    pinned = len(usable) >= 2 and server.proc is not None
    server_cpus, client_cpus = ({usable[0]}, set(usable[1:])) if pinned else (set(usable), set(usable))
    if pinned:
        assert server.proc is not None
        pin_group(server.proc.pid, server_cpus)
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, client_cpus)
    try:
        model = plan.overload_model
        probe = _load(
            plan, spec, "overload-probe", model=model, levels=(float(plan.probe_concurrency),),
            duration_s=plan.duration_s,
        )  # fmt: skip
        write_json(probe, plan.results / spec.key / "overload-probe.json")
        capacity = probe["steps"][0]["throughput_rps"]
        if not capacity:
            return {"model": model, "capacity_rps": capacity, "error": "no OK response in the probe"}
        budget_us = int(plan.budget_ms * 1000)
        before = scrape(spec.metrics_url)
        report = _load(
            plan, spec, "overload", model=model, mode="open", poisson=True,
            levels=(round(plan.factor * capacity, 1),), duration_s=plan.overload_s, timeout_us=budget_us,
            deadline_s=plan.budget_ms / 1000, budget_ms=plan.budget_ms, drain_s=1.0,
        )  # fmt: skip
        batch = mean_batch(spec.kind, before, scrape(spec.metrics_url), model)
        write_json(report, plan.results / spec.key / "overload.json")
    finally:
        os.sched_setaffinity(0, mine)
    figures = _figures(report, batch, "overload")
    figures.update(
        model=model,
        capacity_rps=capacity,
        factor=plan.factor,
        offered_rps=report["steps"][0]["offered"],
        budget_ms=plan.budget_ms,
        goodput_fraction=figures["goodput_rps"] / capacity,
        server_cpus=sorted(server_cpus),
        client_cpus=sorted(client_cpus),
        pinned=pinned,
    )
    _log(
        f"{spec.key} overload: capacity {capacity:,.0f} req/s, offered {figures['offered_rps']:,.0f}, "
        f"goodput {figures['goodput_rps']:,.0f}/s ({figures['goodput_fraction']:.2f} of capacity), "
        f"errors {figures['errors'] or 0}"
    )
    return figures


def _start(
    spec_for: Callable[[], ServerSpec], plan: Plan, logs: Path
) -> tuple[ServerSpec, ServerGroup, float]:
    """Starts the server, retrying with fresh ports; returns the spec, the running group and start seconds."""
    error: Exception | None = None
    for attempt in range(1, plan.attempts + 1):
        spec: ServerSpec = spec_for()
        write_files(spec)
        server = ServerGroup(spec.key, spec.command, logs / f"{spec.key}.log", spec.env, spec.cwd)
        server.start()
        try:
            seconds = wait_ready(server, spec.target, list(MODELS), plan.start_timeout_s)
            return spec, server, seconds
        except (StartError, OSError) as exc:
            error = exc
            server.stop()
            _log(f"{spec.key}: start attempt {attempt} of {plan.attempts} failed: {exc}")
    raise StartError(str(error))


def measure_server(key: str, spec_for: Callable[[], ServerSpec], plan: Plan, logs: Path) -> dict[str, Any]:
    """Every cell and the overload scenario on one server (see the module contract)."""
    started = time.monotonic()
    result: dict[str, Any] = {
        "key": key, "label": LABELS.get(key, key), "config": CONFIGS.get(key, ""), "cells": [],
        "overload": None, "error": None,
    }  # fmt: skip
    try:
        spec, server, ready_s = _start(spec_for, plan, logs)
    except StartError as exc:
        result["error"] = f"did not start: {exc}"
        _log(f"{key}: {result['error']}")
        return result
    result.update(ready_s=round(ready_s, 2), command=spec.command)
    _log(f"{key}: ready in {ready_s:.1f} s at {spec.target}")
    with server:
        try:
            for model, rows, concurrency in cells(plan):
                result["cells"].append(_cell(plan, spec, model, rows, concurrency))
            result["overload"] = _overload(plan, spec, server)
        except Exception as exc:  # a failed server is a result; the others still run
            if not server.running:
                exc = StartError(f"{key} exited during the run (see {server.log_path}): {exc}")
            result["error"] = f"{type(exc).__name__}: {exc}"
            _log(f"{key}: {result['error']}")
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    return result


def _registries(work: Path) -> dict[str, Path]:
    """``tiny`` and ``mlp`` (seed 0) published twice: with the peers' settings and with no model.toml."""
    shutil.rmtree(work, ignore_errors=True)
    out = {"tuned": work / "registry-tuned", "defaults": work / "registry-defaults"}
    for name in MODELS:
        add_model(out["tuned"], name, name, TUNED_TOML)
        add_model(out["defaults"], name, name, "")
        (out["defaults"] / name / "model.toml").unlink()
    return out


def _missing_venv(key: str, venvs: Path) -> str | None:
    venv = {"pytriton": "venv-pytriton", "mlserver": "venv-mlserver", "mlserver-pw0": "venv-mlserver"}.get(
        key
    )
    if venv is None or (venvs / venv / "bin" / "python").exists():
        return None
    return f"did not start: {venvs / venv} is missing (make bench-peers builds it from bench/peers/*.lock)"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """The section's ``run``: every chosen server in turn, then the plots; returns the results dict."""
    keys = [k.strip() for k in args.peers_servers.split(",") if k.strip()]
    unknown = sorted(set(keys) - set(SERVERS))
    if unknown:
        raise SystemExit(f"--peers-servers: unknown {unknown}; known: {', '.join(SERVERS)}")
    registries = _registries(args.work)
    plan = Plan(
        registry=registries["tuned"], results=args.results, duration_s=args.duration, warmup_s=args.warmup,
        concurrency=args.peers_concurrency, batch_rows=args.peers_batch_rows,
        batch_concurrency=args.peers_batch_concurrency, processes=args.peers_processes,
        overload_model=args.peers_overload_model, probe_concurrency=args.peers_probe_concurrency,
        factor=args.peers_overload_factor, budget_ms=args.peers_budget_ms,
        overload_s=args.peers_overload_duration, start_timeout_s=args.peers_start_timeout,
        attempts=args.peers_start_attempts, rounds=args.peers_rounds,
    )  # fmt: skip
    previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops the running server's group too
    servers: list[dict[str, Any]] = []
    spec_fors: dict[str, Callable[[], ServerSpec]] = {}
    rounds: dict[str, Any] | None = None
    try:
        for key in keys:
            missing = _missing_venv(key, args.peers_venvs)
            if missing is not None:
                _log(f"{key}: {missing}")
                servers.append(
                    {"key": key, "label": LABELS[key], "config": CONFIGS[key], "cells": [], "overload": None,
                     "error": missing}
                )  # fmt: skip
                continue

            def spec_for(key: str = key) -> ServerSpec:
                return server_spec(
                    key, free_ports(3), registries=registries, venvs=args.peers_venvs, work=args.work
                )

            servers.append(measure_server(key, spec_for, plan, args.work / "logs"))
            if servers[-1]["cells"]:
                spec_fors[key] = spec_for
        if plan.rounds > 0 and len(spec_fors) >= 2:

            def echo_spec() -> ServerSpec:
                return server_spec(
                    REFERENCE, free_ports(3), registries=registries, venvs=args.peers_venvs, work=args.work
                )

            spec_fors[REFERENCE] = echo_spec
            _log(f"rounds: {plan.rounds} head-to-head rounds on {', '.join(spec_fors)}")
            rounds = measure_rounds(spec_fors, plan, args.work / "logs", start=_start, cell=_cell, log=_log)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not any(s["cells"] for s in servers):
        # Nothing to show: fail the command rather than write a section of errors.
        raise RuntimeError(
            "no server was measured: "
            + "; ".join(f"{s['key']}: {s['error']}" for s in servers)
            + f" (logs in {args.work / 'logs'})"
        )
    results: dict[str, Any] = {
        "plan": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(plan).items()},
        "results": str(args.results),
        "servers": servers,
        "rounds": rounds,
        "load_average_end": os.getloadavg()[0],
        "plots": [],
    }
    try:
        from bench.peers.plots import plot_all

        drawn = plot_all(results, args.results)
        results["plots"] = [path.name for _, path in drawn]
        results["plot_titles"] = {path.name: title for title, path in drawn}
    except ImportError as exc:
        _log(f"no plots ({exc}): install the 'load' extra")
    failed = [s["key"] for s in servers if s.get("error")]
    if failed:
        _log(f"failed: {', '.join(failed)} (logs in {args.work / 'logs'})")
    return results
