"""The shared skeleton of every section: a fresh registry, servers on loopback, measured load runs.

Contracts:

* :func:`require_loopback` is where the benchmark suite refuses to send load anywhere but this machine
  (127.0.0.0/8, ::1, ``localhost``): :func:`measure` checks its target before anything connects. The load
  generator itself (``infergate-load``) accepts any target; only the suite is bound to loopback.
* :func:`ratio` is pure: None when either side is missing or the divisor is zero. (:func:`fmt` and
  :func:`verdict` are re-exported from :mod:`bench.markdown` and :mod:`bench.sections`.)
* :func:`fresh_registry` empties the section's work folder and publishes the bench models into it;
  :func:`start_gateway` runs ``python -m gateway`` on it (loopback, free ports, stopped with the
  ``ExitStack``); :func:`measure` runs one :func:`loadtests.run.run_load`, writes its JSON report and
  records the load average just before it, so every figure carries the machine's state.
* :class:`Measured` round-trips through JSON (:meth:`Measured.to_json`, :func:`measured`), so sections
  keep runs in their results and render from saved results.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import sys
import time
import urllib.parse
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.markdown import fmt
from bench.scenarios import command_line
from bench.sections import verdict
from bench.servers import GATEWAY_READY, ServerProcess, gateway_command
from loadtests.config import LoadConfig
from loadtests.promscrape import scrape
from loadtests.report import write_json
from loadtests.run import run_load

__all__ = [
    "Gateway",
    "Measured",
    "add_model",
    "counter",
    "fmt",
    "fresh_registry",
    "load_average",
    "measure",
    "measured",
    "proc_cpu_s",
    "ratio",
    "require_loopback",
    "round_label",
    "round_runs",
    "start_gateway",
    "verdict",
]


def require_loopback(target: str) -> str:
    """``target`` (``HOST:PORT`` or a URL) if its host is loopback; ValueError naming it otherwise."""
    host = urllib.parse.urlsplit(target).hostname if "://" in target else target.rpartition(":")[0]
    host = (host or "").strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"the benchmark suite refuses to send load to {host or target!r}: it measures servers it "
            "started on this machine, so only loopback targets (127.0.0.0/8, ::1, localhost) are allowed; "
            "use infergate-load to load a remote server"
        )
    return target


def round_label(base: str, index: int) -> str:
    """The run label of round ``index`` (0-based) of a step measured in rounds: the first keeps ``base``."""
    return base if index == 0 else f"{base}-round{index + 1}"


def round_runs(runs: dict[str, Measured], base: str) -> list[Measured]:
    """The runs of ``base`` in round order (as many as were measured)."""
    found, index = [], 0
    while (run := runs.get(round_label(base, index))) is not None:
        found.append(run)
        index += 1
    return found


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def proc_cpu_s(pid: int) -> float:
    """utime + stime of process ``pid`` (its threads included) in seconds, from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def counter(url: str, family: str, **labels: str) -> float:
    """Sum of ``family`` samples whose labels include ``labels`` on the /metrics page at ``url``."""
    total = 0.0
    for sample_labels, value in scrape(require_loopback(url)).get(family, []):
        d = dict(sample_labels)
        if all(d.get(k) == v for k, v in labels.items()):
            total += value
    return total


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

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: the whole report, timelines included."""
        return asdict(self)


def measured(data: dict[str, Any]) -> Measured:
    """The :class:`Measured` of :meth:`Measured.to_json`'s output."""
    load = data["load_avg"]
    return Measured(data["label"], data["report"], data["command"], (load[0], load[1], load[2]))


def measure(
    label: str, results: Path, progress: Any = None, port_var: str = "GATEWAY_PORT", **config: Any
) -> Measured:
    """One load run (``config`` = :class:`LoadConfig` fields); JSON to ``results/<label>.json``.
    ValueError, before anything connects, when the target or metrics URL is not loopback."""
    require_loopback(config["target"])
    if config.get("metrics_url"):
        require_loopback(config["metrics_url"])
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
