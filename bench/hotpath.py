"""Section ``hotpath`` (``make bench-hotpath``): issue 13's benchmark goals (a), (b), (d), (e) and (f),
measured side by side in one run; (g) is the ``sampling`` section's, (c) the ``peers`` section's.

Contracts:

* Fresh registries under ``--work``, one per gateway configuration, each holding ``tiny`` and ``mlp``
  (:mod:`bench.models`): ``defaults`` (no model.toml), ``peers`` (max batch 128, 0.5 ms queue delay, one
  onnxruntime thread, sampling off), ``threads2`` and ``delay2`` (the peers' settings with two
  onnxruntime threads, or a 2 ms queue delay). Every gateway runs with ``--no-sampling``; the echo server
  (``infergate-load echo-server``) is the Python gRPC ceiling. Servers are subprocesses on loopback, each
  stopped by an ``ExitStack`` (SIGTERM, then SIGKILL), also on failure; the other configurations run one
  at a time.
* (a)/(b): tiny, one row, closed loop, echo and the defaults gateway interleaved (who goes first
  alternates): ``--hotpath-rounds`` rounds at C=64 (a), each with, on two or more usable cores, C=1 with
  both servers pinned to the first core and the client to the others (labels ``...-tiny-c1-pinned``;
  reported beside (b), whose goal stays unpinned); then ``--hotpath-c1-rounds`` rounds at C=1 (b). Both
  servers' C=1 p50 moves by a fifth between minutes on the shared host (echo 0.60-0.84 ms across runs),
  so three rounds let one slow minute decide the median; seven do not.
  (d): ``--hotpath-rounds`` rounds, each mlp with ``--hotpath-rows`` rows per request at C=16 on the
  defaults gateway (its mean batch in rows is the ``infergate_batch_size`` sum/count delta of that step),
  then in-process onnxruntime (:func:`loadtests.ortceiling.measure`) right after it at that batch size
  with the gateway's own ``intra_op_threads`` (:func:`gateway.runner.default_intra_op_threads`, written
  into a model.toml of a ceiling registry): each ratio pairs two measurements seconds apart, so a change
  in the shared host's speed between them cannot decide the figure. The gateway step's client is (e)'s
  (``--hotpath-native-client`` when there is one: the ceiling runs no client at all, and a Python client
  takes about 0.3 of the 2 cores from the gateway); with it, the same step with the Python client
  follows each ceiling (labels ``...-c16-python``), reported beside the goal against that round's ceiling.
  (f): ``--hotpath-f-rounds`` rounds of tiny C=64 and mlp C=64 on every configuration, all up at once,
  in the order of :data:`~bench.hotpath_md.CONFIGS` in even rounds and reversed in odd ones (labels
  ``f-{config}-{model}-c64``, round-numbered as (a)'s), each configuration on a gateway of its own
  started for (f), the defaults too (``defaults-f``): the one (a), (b) and (d) ran had served minutes
  of load the others had not (at d284d15 it trailed the fresh gateway with its 2 ms queue delay,
  ``delay2``, in every tiny round: 0.85-0.95). Five rounds, not three: one configuration's C=64 req/s
  moved by 15-20 % between rounds minutes apart, so with three one round decided a 10 % goal.
* (e): with two or more usable cores the server's every thread is pinned to the first one (``taskset -a
  -p``) and this process, hence the load client it spawns, to the others; otherwise nothing is pinned and
  the results say why. Per scenario of :data:`bench.hotpath_overload.SCENARIOS` and server:
  :data:`~bench.hotpath_overload.PROBES` closed-loop probes (labels round-numbered as (a)'s), then
  :data:`~bench.hotpath_overload.ROUNDS` rounds (echo: one) of Poisson arrivals at 2x and 4x the
  req/s of the probe just before the round (kept as the round's ``rate_rps``) with ``timeout`` = gRPC
  deadline = goodput budget = 50 ms, each round followed by one more probe
  (``{prober}-{scenario}-after``, round-numbered): a round's steps are judged against the probes just
  before and after them (:mod:`bench.hotpath_overload`), because the host's speed moves by a third
  within minutes. Servers: echo (reference, its own capacity; ``tiny`` only) and the defaults
  gateway (its own prober). A server's RSS (``VmRSS`` of ``/proc/PID/status``) is read before the first
  step and after each. Then :func:`bench.hotpath_refusals.measure`: what one refusal costs the pinned
  core, at the defaults gateway's ``tiny`` rates. Then the tuned gateway: a fresh gateway with the
  defaults (``again``, no state left by an overload step) is probed
  :data:`~bench.hotpath_overload.PROBES` times per scenario (labels ``again-{scenario}-probe``,
  round-numbered), and a fresh gateway with :func:`~bench.hotpath_overload.tuned_flags` of the highest of
  them (tuned; its own probe would count the refusals its push-back causes at a closed loop's
  concurrency) gets the rounds, ``again`` probing after each (the tuned gateway idles meanwhile). Each
  entry keeps ``probes`` and ``rounds``, the tuned one also ``flags``.
* Results: every load run as :meth:`bench.kit.Measured.to_json` under ``runs``, plus ``ceiling``,
  ``overload``, ``refusals``, ``configs`` and ``commands``; :mod:`bench.hotpath_md` renders them and
  states the goals.
"""

from __future__ import annotations

import argparse
import shutil
import signal
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.hotpath_md import CONFIGS, TITLE, goals, render
from bench.hotpath_overload import BUDGET_MS, FACTORS, PROBES, ROUNDS, SCENARIOS, tuned_flags
from bench.hotpath_refusals import measure as measure_refusals
from bench.kit import Gateway, Measured, add_model, measure, round_label, start_gateway
from bench.pinning import client_pinned, cpu_plan, pin, rss_kib, servers_pinned
from bench.sections import Results, Section

#: Where ``make native-client`` builds infergate-load's native engine (:mod:`loadtests.native`), relative to
#: the repository root that ``make bench`` runs in (commands in BENCHMARKS.md show it so).
NATIVE_CLIENT = Path("build/infergate-load-native")

__all__ = ["SECTION"]


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hotpath-processes", type=int, default=1, help="hotpath: load client processes (1)")
    p.add_argument("--hotpath-rows", type=int, default=32, help="hotpath: rows per request of goal (d)")
    p.add_argument(
        "--hotpath-ceiling-seconds", type=float, default=1.0, help="hotpath: in-process onnxruntime seconds"
    )
    p.add_argument(
        "--hotpath-rounds", type=int, default=3, help="hotpath: echo/gateway rounds of (a) and (d)"
    )
    p.add_argument("--hotpath-f-rounds", type=int, default=5, help="hotpath: rounds of (f)")
    p.add_argument("--hotpath-c1-rounds", type=int, default=7, help="hotpath: echo/gateway rounds of (b)")
    p.add_argument(
        "--hotpath-overload-duration", type=float, default=None, help="hotpath: overload step s (--duration)"
    )
    p.add_argument(
        "--hotpath-native-client",
        type=Path,
        default=NATIVE_CLIENT if NATIVE_CLIENT.exists() else None,
        help="hotpath: load client of (d) and (e) (default: make native-client's build when there is one)",
    )


@dataclass(frozen=True)
class _Server:
    key: str
    target: str
    metrics_url: str | None
    pid: int


class _Bench:
    """One run's state: where things go, and the load runs measured so far."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.runs: dict[str, Any] = {}
        self.commands: dict[str, str] = {}
        self.registries: dict[str, Path] = {}

    def registry(self, key: str, toml: str | None) -> Path:
        root: Path = self.args.work / f"registry-{key}"
        for name in ("tiny", "mlp"):
            add_model(root, name, name, toml or "")
            if toml is None:
                (root / name / "model.toml").unlink()
        self.registries[key] = root
        return root

    def gateway(self, stack: ExitStack, key: str, registry: Path, *flags: str) -> tuple[_Server, Gateway]:
        gw = start_gateway(stack, registry, self.args.work / f"gateway-{key}.log", "--no-sampling", *flags)
        self.commands[f"gateway {key}"] = gw.command
        assert gw.process.proc is not None
        return _Server(key, gw.target, gw.metrics_url, gw.process.proc.pid), gw

    def load(self, label: str, server: _Server, model: str, **config: Any) -> Measured:
        config.setdefault("duration_s", self.args.duration)
        config.setdefault("processes", self.args.hotpath_processes)
        run = measure(
            label, self.args.results, port_var="ECHO_PORT" if server.key == "echo" else "GATEWAY_PORT",
            target=server.target, metrics_url=server.metrics_url, model=model,
            registry=self.registries["defaults"], warmup_s=self.args.warmup, **config,
        )  # fmt: skip
        self.runs[label] = run.to_json()
        return run

    def closed(
        self,
        server: _Server,
        model: str,
        concurrency: int,
        rows: int = 1,
        label: str = "",
        native_client: Path | None = None,
    ) -> Measured:
        label = label or f"{server.key}-{model}{f'-r{rows}' if rows > 1 else ''}-c{concurrency}"
        config = {"levels": (float(concurrency),), "rows": rows, "native_client": native_client}
        return self.load(label, server, model, **config)

    def probe(self, server: _Server, scenario: str, plan: dict[str, Any], name: str, count: int) -> list[str]:
        """``count`` closed-loop capacity probes of ``scenario`` on ``server`` (pinned as in the module
        contract), labelled ``name`` round-numbered; returns their labels."""
        _, model, rows, probe_c = SCENARIOS[scenario]
        if plan["pinned"]:
            pin(server.pid, plan["server_cpus"])
        config = {"levels": (float(probe_c),), "rows": rows, "native_client": self.args.hotpath_native_client}
        labels = [round_label(name, index) for index in range(count)]
        with client_pinned(plan):
            for label in labels:
                self.load(label, server, model, **config)
        return labels

    def rps(self, label: str) -> float:
        """Req/s of the run ``label``."""
        return float(self.runs[label]["report"]["throughput_rps"])

    def best_probe(self, labels: list[str]) -> tuple[str, float]:
        """The probe run with the highest req/s among ``labels``, and that req/s."""
        best = max(labels, key=self.rps)
        return best, self.rps(best)

    def overload(
        self,
        server: _Server,
        scenario: str,
        plan: dict[str, Any],
        probes: list[str] | None = None,
        prober: _Server | None = None,
        rounds: int = ROUNDS,
    ) -> dict[str, Any]:
        """Capacity probes of its own (or ``probes``, run labels of ``prober``'s), then ``rounds`` rounds
        of 2x and 4x that capacity, each followed by one probe of ``prober`` (``server`` itself by default;
        see the module contract)."""
        _, model, rows, _ = SCENARIOS[scenario]
        prober = prober or server
        if probes is None:
            probes = self.probe(server, scenario, plan, f"{server.key}-{scenario}-probe", PROBES)
        native = self.args.hotpath_native_client
        best, capacity = self.best_probe(probes)
        out: dict[str, Any] = {"capacity_rps": capacity, "capacity_from": best, "probes": probes}
        out["client"] = "native" if native is not None else "python"
        out["rounds"] = []
        duration = self.args.hotpath_overload_duration or self.args.duration
        if plan["pinned"]:
            pin(server.pid, plan["server_cpus"])
        out["rss_kib"] = [rss_kib(server.pid)]
        before = probes[-1]
        for index in range(rounds if capacity > 0 else 0):
            steps: dict[str, str] = {}
            base = self.rps(before)  # the latest measure of the capacity the round is divided by
            with client_pinned(plan):
                for factor in FACTORS:
                    label = round_label(f"{server.key}-{scenario}-{factor}x", index)
                    self.load(
                        label, server, model, mode="open", poisson=True,
                        levels=(round(factor * base, 1),), rows=rows, duration_s=duration,
                        timeout_us=int(BUDGET_MS * 1000), deadline_s=BUDGET_MS / 1000, budget_ms=BUDGET_MS,
                        drain_s=1.0, native_client=native,
                    )  # fmt: skip
                    steps[str(factor)] = label
                    out["rss_kib"].append(rss_kib(server.pid))
            name = round_label(f"{prober.key}-{scenario}-after", index)
            (after,) = self.probe(prober, scenario, plan, name, 1)
            out["rounds"].append({"steps": steps, "before": before, "after": after, "rate_rps": base})
            before = after
        return out


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> Results:
    """Every step of the section (see the module contract); SIGTERM stops the servers too."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _run(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> Results:
    from bench.servers import ECHO_READY, ServerProcess, echo_command
    from gateway.runner import default_intra_op_threads
    from loadtests.ortceiling import measure as ceiling

    shutil.rmtree(args.work, ignore_errors=True)
    args.results.mkdir(parents=True, exist_ok=True)
    b = _Bench(args)
    for key, (_, toml) in CONFIGS.items():
        b.registry(key, toml)
    threads = default_intra_op_threads()
    ceiling_registry = args.work / "registry-ceiling"
    add_model(ceiling_registry, "mlp", "mlp", f"[runtime]\nintra_op_threads = {threads}\n")
    plan = cpu_plan()
    overload: dict[str, dict[str, Any]] = {}
    rows = args.hotpath_rows
    with ExitStack() as stack:
        registry = b.registries["defaults"]
        echo_proc = stack.enter_context(
            ServerProcess(echo_command(registry), ECHO_READY, args.work / "echo.log", "echo")
        )
        port = echo_proc.start()[0]
        assert echo_proc.proc is not None
        echo = _Server("echo", f"127.0.0.1:{port}", None, echo_proc.proc.pid)
        b.commands["echo"] = f"infergate-load echo-server --registry {registry} --port 0"
        gw, gw_process = b.gateway(stack, "defaults", registry)
        pair = [(echo, "echo"), (gw, "defaults")]
        for index in range(max(1, args.hotpath_rounds)):  # (a): echo and gateway interleaved
            turns = pair if index % 2 == 0 else pair[::-1]  # alternate who goes first
            for server, key in turns:
                b.closed(server, "tiny", 64, label=round_label(f"{key}-tiny-c64", index))
            if plan["pinned"]:  # (b) reported pinned too: each server on its core, the client on the others
                with servers_pinned(plan, [echo.pid, gw.pid]):
                    for server, key in turns:
                        b.closed(server, "tiny", 1, label=round_label(f"{key}-tiny-c1-pinned", index))
        for index in range(max(1, args.hotpath_c1_rounds)):  # (b): its own rounds, more of them (module doc)
            for server, key in pair if index % 2 == 0 else pair[::-1]:
                b.closed(server, "tiny", 1, label=round_label(f"{key}-tiny-c1", index))
        d_rounds: list[dict[str, Any]] = []
        native = args.hotpath_native_client
        for index in range(max(1, args.hotpath_rounds)):  # (d): each gateway step, its ceiling, Python's
            label = round_label(f"defaults-mlp-r{rows}-c16", index)
            run_d = b.closed(gw, "mlp", 16, rows=rows, label=label, native_client=native)
            mean = ((run_d.step.get("server") or {}).get("batch_size") or {}).get("mean")
            batch = max(1, round(mean)) if mean else rows
            print(f"== ceiling: onnxruntime in-process, mlp, batch {batch}, {threads} thread(s)", flush=True)
            result = ceiling(
                ceiling_registry, "mlp", batch_sizes=(batch,), seconds=args.hotpath_ceiling_seconds
            )
            d_rounds.append({"label": label, "gateway_mean_batch": mean, "batches": result["batches"]})
            if native is not None:  # reported beside (d): the Python client takes a share of the 2 cores
                python_label = round_label(f"defaults-mlp-r{rows}-c16-python", index)
                b.closed(gw, "mlp", 16, rows=rows, label=python_label)
        with ExitStack() as inner:  # (f): every configuration up at once, measured in alternating rounds
            # Every configuration fresh, the defaults too: not the process (a), (b) and (d) just loaded.
            servers = {
                k: b.gateway(inner, f"{k}-f" if k == "defaults" else k, b.registries[k])[0] for k in CONFIGS
            }
            order = list(CONFIGS)
            for index in range(max(1, args.hotpath_f_rounds)):
                for key in order if index % 2 == 0 else order[::-1]:
                    for model in ("tiny", "mlp"):
                        b.closed(servers[key], model, 64, label=round_label(f"f-{key}-{model}-c64", index))
        overload = {scenario: {} for scenario in SCENARIOS}
        overload["tiny"]["echo"] = b.overload(echo, "tiny", plan, rounds=1)  # a reference: one round
        echo_proc.stop()
        for scenario in SCENARIOS:
            overload[scenario]["defaults"] = b.overload(gw, scenario, plan)
        gw_process.process.stop()

        with client_pinned(plan):  # (e)'s floor: what a refusal costs the pinned core
            capacity = overload["tiny"]["defaults"]["capacity_rps"]
            pin_to = plan["server_cpus"] if plan["pinned"] else None
            refusals = measure_refusals(b, registry, capacity, pin_to, args.work, native) if capacity else {}
        b.commands["stalled echo"] = f"infergate-load echo-server --registry {registry} --port 0 --stall"
        # per scenario: capacity probed again, a tuned gateway sized by it, a probe after each round
        with ExitStack() as again:
            fresh, _ = b.gateway(again, "again", registry)
            for scenario in SCENARIOS:
                probes = b.probe(fresh, scenario, plan, f"again-{scenario}-probe", PROBES)
                flags = tuned_flags(b.best_probe(probes)[1], BUDGET_MS)
                with ExitStack() as one:
                    tuned, _ = b.gateway(one, "tuned", registry, *flags)
                    b.commands[f"gateway tuned, {scenario}"] = b.commands.pop("gateway tuned")
                    entry = b.overload(tuned, scenario, plan, probes=probes, prober=fresh)
                overload[scenario]["tuned"] = {**entry, "flags": list(flags)}
    return {
        "runs": b.runs,
        "ceiling": {
            **{k: v for k, v in result.items() if k != "batches"},
            "rows_per_request": rows,
            "rounds": d_rounds,
            "client": "python" if native is None else "native",
        },
        "overload": overload,
        "refusals": refusals,
        "pinning": plan,
        "budget_ms": BUDGET_MS,
        "configs": {k: {"label": label, "toml": toml} for k, (label, toml) in CONFIGS.items()},
        "commands": b.commands,
    }


SECTION = Section("hotpath", TITLE, run, render, goals, _add_arguments, duration_s=4.0)
