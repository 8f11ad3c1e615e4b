"""Section ``load`` (``make bench SECTIONS=load``): onnxruntime ceilings, then the standard scenarios against
a freshly started gateway and echo server, with plots.

Contracts:

* Builds a fresh registry under the section's work folder (``bench-out/load/``): the demo models
  (:func:`registry.demo.build_demo`) plus ``tiny`` and ``mlp`` (:mod:`bench.models`).
* Measures the onnxruntime ceilings first, with no server running, then starts the servers the chosen
  scenarios need (subprocesses, loopback, free ports) and stops them at the end, also on failure.
* Writes ``<results>/<scenario>.json`` and the scenario's PNGs; the results name the PNGs in ``plots``, so
  the runner copies them next to BENCHMARKS.md (``docs/bench/load/``) when it rewrites the section.
* Open-loop scenarios offer fractions of a closed-loop peak; a scenario run alone measures that peak with
  a short closed-loop probe first.
* ``--gateway-rev`` benchmarks another git revision's gateway instead of the working tree's;
  ``--baseline-rev`` adds a second gateway of that revision and the ``baseline-*`` scenarios (before and
  after figures from one run, on one machine state).
"""

from __future__ import annotations

import argparse
import shutil
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.kit import require_loopback
from bench.load_md import goals, render
from bench.models import build_bench_registry
from bench.scenarios import PEAK_SOURCES, SCENARIOS, Scenario, command_line
from bench.sections import Results, Section
from bench.servers import (
    ECHO_READY,
    GATEWAY_READY,
    ServerProcess,
    echo_command,
    export_revision,
    gateway_command,
)
from loadtests.ortceiling import measure
from loadtests.plots import write_plots
from loadtests.report import table, write_json
from loadtests.run import run_load
from registry.demo import build_demo

__all__ = ["SECTION"]

CEILING_MODELS = ("tiny", "mlp", "classifier", "regressor")


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scenario", action="append", default=[], help="load: run only this scenario (repeatable)"
    )
    p.add_argument("--list-scenarios", action="store_true", help="load: list the scenarios and exit")
    p.add_argument("--ceiling-seconds", type=float, default=0.3, help="load: onnxruntime s per batch size")
    p.add_argument("--gateway-rev", default=None, help="load: benchmark this git revision's gateway")
    p.add_argument("--baseline-rev", default=None, help="load: also run baseline-* on this revision")


def _registry(work: Path) -> Path:
    root = work / "registry"
    shutil.rmtree(root, ignore_errors=True)
    build_demo(root)
    build_bench_registry(root)
    return root


def _peak(report: dict[str, Any]) -> float:
    return float(max(step["throughput_rps"] for step in report["steps"]))


def _run(
    scenario: Scenario, target: str, metrics: str | None, args: argparse.Namespace, **kw: Any
) -> dict[str, Any]:
    require_loopback(target)
    config = scenario.config(
        target=target,
        metrics_url=metrics,
        duration_s=args.duration,
        warmup_s=args.warmup,
        results=args.results,
        **kw,
    )
    started = time.monotonic()
    report = run_load(config)
    write_json(report, config.json_path or args.results / f"{scenario.name}.json")
    write_plots(report, args.results, config.label)
    print(
        f"== {scenario.name}: {scenario.title} ({time.monotonic() - started:.0f} s)\n{table(report)}\n",
        flush=True,
    )
    port_var = f"{scenario.server.upper()}_PORT"
    return {
        "name": scenario.name,
        "title": scenario.title,
        "server": scenario.server,
        "command": command_line(config, port_var),
        "report": report,
    }


def run(args: argparse.Namespace) -> Results:
    if args.list_scenarios:
        for scenario in SCENARIOS:
            print(f"{scenario.name:28} {scenario.title}")
        raise SystemExit(0)
    known = {s.name for s in SCENARIOS} | {"ceilings"}
    unknown = [name for name in args.scenario if name not in known]
    if unknown:
        raise SystemExit(f"python -m bench load: unknown scenario(s) {unknown}; see --list-scenarios")
    full = not args.scenario
    chosen = [
        s
        for s in SCENARIOS
        if (full or s.name in args.scenario) and (s.server != "baseline" or args.baseline_rev is not None)
    ]
    args.results.mkdir(parents=True, exist_ok=True)
    registry = _registry(args.work)
    ceilings = []
    if full or "ceilings" in args.scenario:
        for model in CEILING_MODELS:
            print(f"== ceiling: onnxruntime in-process, {model}", flush=True)
            ceilings.append(measure(registry, model, seconds=args.ceiling_seconds))
    results: list[dict[str, Any]] = []
    peaks: dict[str, float] = {}
    revisions: dict[str, str] = {"gateway": "working tree"}
    with ExitStack() as stack:
        targets: dict[str, tuple[str, str | None]] = {}
        if any(s.server == "echo" for s in chosen):
            echo = stack.enter_context(
                ServerProcess(echo_command(registry), ECHO_READY, args.work / "echo.log", "echo")
            )
            targets["echo"] = (f"127.0.0.1:{echo.start()[0]}", None)
        for server, rev in (("gateway", args.gateway_rev), ("baseline", args.baseline_rev)):
            if not any(s.server == server for s in chosen):
                continue
            source = None
            if rev is not None:
                source = args.work / f"src-{server}"
                revisions[server] = export_revision(rev, source)
            process = stack.enter_context(
                ServerProcess(
                    gateway_command(registry), GATEWAY_READY, args.work / f"{server}.log", server, source
                )
            )
            port, metrics_port = process.start()
            targets[server] = (f"127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics")
        by_name = {s.name: s for s in SCENARIOS}
        for scenario in chosen:
            if scenario.rate_of and scenario.rate_of not in peaks:
                probe = by_name[PEAK_SOURCES[scenario.rate_of]]
                print(f"== probing the {scenario.rate_of} peak with {probe.name}", flush=True)
                probed = _run(probe, *targets[probe.server], args, registry=registry, peaks=peaks)
                peaks[scenario.rate_of] = _peak(probed["report"])
            result = _run(scenario, *targets[scenario.server], args, registry=registry, peaks=peaks)
            results.append(result)
            for peak, source in PEAK_SOURCES.items():
                if source == scenario.name:
                    peaks[peak] = _peak(result["report"])
    gateway = f"python -m gateway --registry {registry} --host 127.0.0.1 --port 0 --metrics-port 0"
    gateway += " --grace-seconds 5"
    servers = {"echo": f"infergate-load echo-server --registry {registry} --port 0`"}
    for server, sha in revisions.items():
        where = f"` in the files of git {sha} (`git archive {sha} gateway registry protos`)"
        servers[server] = gateway + ("`" if sha == "working tree" else where)
    kinds = ("latency_cdf", "throughput_vs_load", "latency_over_time")
    return {
        "servers": servers,
        "ceilings": ceilings,
        "peaks": peaks,
        "revisions": revisions,
        "scenarios": results,
        "plots": [f"{r['name']}-{kind}.png" for r in results for kind in kinds],
    }


SECTION = Section(
    "load", "Load harness: ceilings and the gateway's figures", run, render, goals, _add_arguments
)
