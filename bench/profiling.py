"""``make profile``: the running gateway under a named load, sampled by py-spy, as a per-stage table.

``python -m bench.profiling --scenario NAME [--native] [--blocking] [--seconds S] [--rate HZ] [--defaults]
[--out BENCHMARKS.md --label before]``

Contracts:

* A fresh registry under ``bench-out/profile/<run>/`` holds the bench models ``tiny`` and ``mlp`` with the
  peers-like ``model.toml`` of issue 13 (:data:`PEERS_TOML`), or an empty one with ``--defaults`` (the
  gateway's defaults). One gateway (``python -m gateway``, loopback, free ports, ``--no-sampling
  --poll-interval 0``) serves it; the load is ``python -m loadtests`` (``infergate-load``) in separate
  processes, closed loop as :data:`SCENARIOS` names it.
* Once the load's first requests reach the gateway (its ``/metrics``) and its warm-up has passed, ``py-spy
  record --format raw --threads`` samples the gateway for ``--seconds`` (``--nonblocking`` unless
  ``--blocking`` or ``--native``, which py-spy cannot do without pausing the process). The load runs
  ``--seconds`` + 1 measured seconds, so the profile lies inside its measured window.
* The kernel's CPU time of each gateway thread (``/proc/<pid>/task/*/stat``) over the py-spy run is
  recorded beside the samples, by thread group (py-spy's thread ids name the threads), to check them.
* µs per request = samples x (1 / rate) / requests, with requests = the load JSON's ``throughput_rps`` x
  ``--seconds``; the gateway's own count over the window (``/metrics``) is recorded beside it.
* The gateway, the load and py-spy each run in their own process group; every group is stopped (SIGTERM,
  then SIGKILL) when the run ends, also when it fails. Raw stacks, the load JSON, the gateway log, the
  summary JSON and the markdown table go to ``bench-out/profile/<run>/``; the table is printed.
* ``--reclassify DIR`` runs nothing: it sorts the stacks saved in DIR again with the current rules and
  rewrites DIR's JSON and table (and ``--out``), keeping the run's own commands and figures.
* ``--out FILE --label L`` rewrites only the ``L`` table of this run in FILE's ``profile`` block
  (``<!-- profile:start -->`` ... ``<!-- profile:end -->``), keeping other labels' tables; tables are
  ordered by run, then label (``before`` before ``after``), so they stay side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import time
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.kit import add_model
from bench.profile_table import kernel_groups, render, summarize, write_block
from bench.servers import GATEWAY_READY, export_revision, gateway_command
from bench.stages import parse_collapsed
from loadtests.environment import environment
from loadtests.promscrape import scrape

__all__ = ["PEERS_TOML", "SCENARIOS", "Scenario", "main"]

PEERS_TOML = (
    "[batching]\nmax_batch_size = 128\nmax_queue_delay_ms = 0.5\n\n"
    "[runtime]\nintra_op_threads = 1\n\n[sampling]\nrate = 0.0\n"
)


@dataclass(frozen=True)
class Scenario:
    model: str
    concurrency: int
    rows: int = 1


SCENARIOS: dict[str, Scenario] = {
    "tiny-c1": Scenario("tiny", 1),
    "tiny-c16": Scenario("tiny", 16),
    "tiny-c64": Scenario("tiny", 64),
    "mlp-c1": Scenario("mlp", 1),
    "mlp-c16": Scenario("mlp", 16),
    "mlp-c64": Scenario("mlp", 64),
    "mlp-rows32": Scenario("mlp", 8, rows=32),
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.profiling", description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="mlp-c64")
    p.add_argument("--seconds", type=float, default=10.0, help="profiled seconds (default 10)")
    p.add_argument("--warmup", type=float, default=2.0, help="load seconds before profiling (default 2)")
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second (default 200)")
    p.add_argument("--native", action="store_true", help="py-spy --native: C/Cython frames too (blocking)")
    p.add_argument("--blocking", action="store_true", help="pause the gateway for each sample")
    p.add_argument("--defaults", action="store_true", help="no model.toml: the gateway's defaults")
    p.add_argument(
        "--rev", default=None, help="run the gateway of this git revision (default: the work tree)"
    )
    p.add_argument("--work", type=Path, default=Path("bench-out/profile"))
    p.add_argument("--out", type=Path, default=None, help="BENCHMARKS.md to update (with --label)")
    p.add_argument("--label", default=None, help="the table's label in --out, e.g. before or after")
    p.add_argument(
        "--reclassify",
        type=Path,
        default=None,
        help="no new run: re-sort DIR's saved stacks (after a rule change)",
    )
    args = p.parse_args(argv)
    if args.rate < 1 or args.seconds <= 0 or args.warmup < 0:
        p.error("--rate must be at least 1, --seconds above 0 and --warmup not negative")
    if (args.out is None) != (args.label is None):
        p.error("--out and --label go together")
    if args.label is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", args.label):
        p.error("--label: letters, digits, - and _ only")
    return args


class Group:
    """A subprocess in its own session (process group); :meth:`stop` ends the whole group."""

    def __init__(
        self, command: list[str], log: Path, stdout: int | None = None, cwd: Path | None = None
    ) -> None:
        self.command = command
        self._log = open(log, "wb")  # noqa: SIM115 (closed in stop)
        env = None if cwd is None else {**os.environ, "PYTHONPATH": str(cwd.resolve())}
        self.proc = subprocess.Popen(
            command,
            stdout=stdout or self._log,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=cwd,
            env=env,
        )

    def stop(self, grace_s: float = 10.0) -> None:
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(5)
        self._signal(signal.SIGKILL)  # children left behind in the group
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()

    def _signal(self, sig: int) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)


def _start_gateway(
    stack: ExitStack, registry: Path, out: Path, source: Path | None
) -> tuple[Group, str, str, list[str]]:
    command = [*gateway_command(registry), "--no-sampling", "--poll-interval", "0"]
    gateway = Group(command, out / "gateway.log", stdout=subprocess.PIPE, cwd=source)
    stack.callback(gateway.stop)
    assert gateway.proc.stdout is not None
    with selectors.DefaultSelector() as selector:  # the gateway prints only its ready line
        selector.register(gateway.proc.stdout, selectors.EVENT_READ)
        ready = selector.select(timeout=120.0)
    line = gateway.proc.stdout.readline().decode(errors="replace") if ready else ""
    match = re.search(GATEWAY_READY, line)
    if match is None:
        raise RuntimeError(f"gateway did not start (see {out / 'gateway.log'}); stdout: {line!r}")
    return gateway, f"127.0.0.1:{match[1]}", f"http://127.0.0.1:{match[2]}/metrics", command


def _thread_cpu(pid: int) -> dict[str, float]:
    """utime + stime in seconds of each thread of ``pid``, by OS thread id (``/proc/<pid>/task``)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended
            continue
        out[task.name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def _requests_total(url: str) -> float:
    return sum(value for _, value in scrape(url).get("infergate_requests_total", []))


def _wait_for_traffic(url: str, load: Group, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while _requests_total(url) == 0:
        if load.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the load generator sent no request (see its log)")
        time.sleep(0.1)


def _py_spy(args: argparse.Namespace, pid: int, raw: Path) -> list[str]:
    binary = Path(sys.executable).parent / "py-spy"
    command = [str(binary) if binary.exists() else shutil.which("py-spy") or "py-spy", "record"]
    command += ["--pid", str(pid), "--format", "raw", "--threads", "--rate", str(args.rate)]
    command += ["--duration", f"{args.seconds:g}", "--output", str(raw)]
    if args.native:
        command.append("--native")
    elif not args.blocking:
        command.append("--nonblocking")
    return command


def _shown(command: list[str], registry: Path) -> str:
    text = shlex.join(["python" if c == sys.executable else c for c in command])
    return text.replace(str(registry.resolve()), str(registry)).replace(
        str(Path(sys.executable).parent) + "/", ""
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    scenario = SCENARIOS[args.scenario]
    name = args.scenario + ("-defaults" if args.defaults else "") + ("-native" if args.native else "")
    out = args.work / name
    shutil.rmtree(out, ignore_errors=True)
    registry = out / "registry"
    for model in ("tiny", "mlp"):
        add_model(registry, model, model, "" if args.defaults else PEERS_TOML)
    env = environment()
    source, revision = None, None
    if args.rev is not None:  # that revision's gateway, registry and protos packages, run from their folder
        source = out / "source"
        revision = export_revision(args.rev, source)
    load_before = os.getloadavg()
    with ExitStack() as stack:
        gateway, target, metrics_url, gateway_cmd = _start_gateway(stack, registry, out, source)
        load_cmd = [
            sys.executable, "-m", "loadtests", "--target", target, "--model", scenario.model,
            "--mode", "closed", "--concurrency", str(scenario.concurrency), "--rows", str(scenario.rows),
            "--warmup", f"{args.warmup:g}", "--duration", f"{args.seconds + 1:g}",
            "--registry", str(registry), "--input", "reference", "--json", str(out / "load.json"),
            "--no-progress", "--quiet",
        ]  # fmt: skip
        load = Group(load_cmd, out / "load.log")
        stack.callback(load.stop)
        _wait_for_traffic(metrics_url, load)
        time.sleep(args.warmup)
        spy_cmd = _py_spy(args, gateway.proc.pid, out / "raw.txt")
        counted = _requests_total(metrics_url)
        cpu_before, began = _thread_cpu(gateway.proc.pid), time.monotonic()
        spy = Group(spy_cmd, out / "py-spy.log")
        stack.callback(spy.stop)
        if spy.proc.wait(args.seconds + 60) != 0:
            raise RuntimeError(f"py-spy failed: {(out / 'py-spy.log').read_text()[-2000:]}")
        cpu_after, elapsed = _thread_cpu(gateway.proc.pid), time.monotonic() - began
        counted = _requests_total(metrics_url) - counted
        if load.proc.wait(args.seconds + args.warmup + 120) != 0:
            raise RuntimeError(f"the load generator failed: {(out / 'load.log').read_text()[-2000:]}")
    report = json.loads((out / "load.json").read_text())
    requests = float(report["throughput_rps"]) * args.seconds
    stacks = parse_collapsed((out / "raw.txt").read_text().splitlines())
    cpu = {tid: cpu_after[tid] - cpu_before.get(tid, 0.0) for tid in cpu_after}
    summary = summarize(
        stacks,
        interval_s=1.0 / args.rate,
        seconds=args.seconds,
        requests=requests,
    )
    step = report["steps"][0]
    return {
        "run": name,
        "scenario": args.scenario,
        "model": scenario.model,
        "concurrency": scenario.concurrency,
        "rows": scenario.rows,
        "config": "gateway defaults (empty model.toml)" if args.defaults else "peers-like model.toml",
        "model_toml": "" if args.defaults else PEERS_TOML,
        "command": "python -m bench.profiling " + shlex.join(sys.argv[1:]),
        "gateway_command": _shown(gateway_cmd, registry),
        "load_command": _shown(load_cmd, registry).replace(target, "127.0.0.1:$GATEWAY_PORT"),
        "py_spy_command": _shown(spy_cmd, registry).replace(
            f"--pid {gateway.proc.pid}", "--pid $GATEWAY_PID"
        ),
        "py_spy_log": (out / "py-spy.log").read_text().strip().splitlines()[-3:],
        "environment": env,
        "gateway_revision": revision,
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "throughput_rps": report["throughput_rps"],
        "latency_ms": step["latency_ms"],
        "errors": report["errors"],
        "requests_in_window": requests,
        "gateway_requests_in_window": counted,
        "profile": summary.to_json(),
        "kernel_cpu": {"seconds": elapsed, "groups": kernel_groups(cpu, stacks)},
        "out": str(out),
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.reclassify is not None:  # the saved stacks of an earlier run, sorted by today's rules
        result = json.loads((args.reclassify / "profile.json").read_text())
        prof = result["profile"]
        stacks = parse_collapsed((args.reclassify / "raw.txt").read_text().splitlines())
        summary = summarize(
            stacks, interval_s=prof["interval_s"], seconds=prof["seconds"], requests=prof["requests"]
        )
        result["profile"] = summary.to_json()
    else:
        result = run(args)
    out = Path(result["out"])
    (out / "profile.json").write_text(json.dumps(result, indent=2) + "\n")
    table = render(result, args.label or "")
    (out / "table.md").write_text(table)
    print(table)
    if args.out is not None:
        write_block(args.out, result["run"], args.label, table)
        print(f"wrote the {args.label} table of {result['run']} into {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
