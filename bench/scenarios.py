"""The standard benchmark scenarios of ``make bench``: what runs against which server, and how to write each
as the ``infergate-load`` command a person would type.

Contracts:

* A :class:`Scenario` turns (target, metrics URL, registry, measured peaks) into a :class:`LoadConfig`.
  Open-loop scenarios offer fractions of a closed-loop scenario's peak throughput (``rate_of``), so they
  adapt to the machine; :data:`PEAK_SOURCES` names which closed-loop scenario sets each peak.
* :func:`command_line` renders a config as an exact ``infergate-load`` command (flags that differ from
  the defaults, the target's port as ``$GATEWAY_PORT`` / ``$BASELINE_PORT`` / ``$ECHO_PORT``).
* ``baseline-*`` scenarios run against a second gateway built from another git revision (``bench
  --baseline-rev``), e.g. the foundation's unbatched gateway, for before/after figures in one run.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, fields
from pathlib import Path

from loadtests.config import LoadConfig

__all__ = ["PEAK_SOURCES", "SCENARIOS", "Scenario", "command_line"]


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    server: str  # "gateway" | "baseline" (the gateway of --baseline-rev) | "echo"
    model: str
    mode: str = "closed"
    levels: tuple[float, ...] = (1, 4, 16)
    rate_of: str = ""  # peak name: levels are fractions of that peak (open loop)
    rows: int = 1
    stream: bool = False
    poisson: bool = False
    reference: bool = False
    timeout_us: int | None = None

    def config(
        self,
        *,
        target: str,
        metrics_url: str | None,
        registry: Path,
        peaks: dict[str, float],
        duration_s: float,
        warmup_s: float,
        results: Path,
    ) -> LoadConfig:
        levels = self.levels
        if self.rate_of:
            peak = peaks[self.rate_of]
            levels = tuple(max(1.0, round(f * peak)) for f in self.levels)
        return LoadConfig(
            target=target,
            model=self.model,
            levels=levels,
            mode=self.mode,
            poisson=self.poisson,
            stream=self.stream,
            duration_s=duration_s,
            warmup_s=warmup_s,
            rows=self.rows,
            timeout_us=self.timeout_us,
            input_source="reference",
            registry=registry,
            metrics_url=metrics_url,
            json_path=results / f"{self.name}.json",
            plot_dir=results,
            progress=False,
            label=f"{self.name}-",
        )


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("echo-closed", "echo baseline, tiny, closed loop", "echo", "tiny"),
    Scenario("gateway-closed-tiny", "gateway, tiny, closed loop", "gateway", "tiny"),
    Scenario("gateway-closed-mlp", "gateway, mlp, closed loop, 1 row", "gateway", "mlp"),
    Scenario(
        "gateway-closed-mlp-rows32", "gateway, mlp, closed loop, 32 rows", "gateway", "mlp",
        levels=(1, 4), rows=32,
    ),
    Scenario(
        "gateway-stream-tiny", "gateway, tiny, ModelStreamInfer", "gateway", "tiny",
        levels=(1, 16), stream=True,
    ),
    Scenario(
        "echo-open", "echo baseline, tiny, Poisson sweep", "echo", "tiny", mode="open",
        levels=(0.25, 0.5, 0.75, 1.0), rate_of="echo", poisson=True,
    ),
    Scenario(
        "gateway-open-tiny", "gateway, tiny, Poisson sweep", "gateway", "tiny", mode="open",
        levels=(0.25, 0.5, 0.75, 1.0, 1.25), rate_of="gateway-tiny", poisson=True,
    ),
    Scenario(
        "demo-classifier", "gateway, demo classifier, Poisson, 50 ms timeout", "gateway", "classifier",
        mode="open", levels=(0.5,), rate_of="gateway-tiny", poisson=True, timeout_us=50_000,
    ),
    Scenario(
        "demo-regressor", "gateway, demo regressor, Poisson, 100 ms timeout", "gateway", "regressor",
        mode="open", levels=(0.5,), rate_of="gateway-tiny", poisson=True, timeout_us=100_000,
    ),
    Scenario("baseline-closed-tiny", "baseline gateway, tiny, closed loop", "baseline", "tiny"),
    Scenario("baseline-closed-mlp", "baseline gateway, mlp, closed loop, 1 row", "baseline", "mlp"),
    Scenario(
        "baseline-open-tiny", "baseline gateway, tiny, Poisson sweep", "baseline", "tiny", mode="open",
        levels=(0.25, 0.5, 0.75, 1.0, 1.25), rate_of="baseline-tiny", poisson=True,
    ),
)  # fmt: skip

#: Peak name -> the closed-loop scenario whose best throughput defines it.
PEAK_SOURCES = {
    "echo": "echo-closed",
    "gateway-tiny": "gateway-closed-tiny",
    "baseline-tiny": "baseline-closed-tiny",
}

_FLAGS = {
    "version": "--version",
    "poisson": "--poisson",
    "stream": "--stream",
    "native_client": "--native-client",
    "duration_s": "--duration",
    "requests": "--requests",
    "warmup_s": "--warmup",
    "rows": "--rows",
    "timeout_us": "--timeout-us",
    "priority": "--priority",
    "budget_ms": "--budget-ms",
    "processes": "--processes",
    "payloads": "--payloads",
    "input_source": "--input",
    "registry": "--registry",
    "npz": "--npz",
    "seed": "--seed",
    "deadline_s": "--deadline",
    "max_inflight": "--max-inflight",
    "drain_s": "--drain",
    "metrics_url": "--metrics-url",
    "json_path": "--json",
    "plot_dir": "--plot",
    "label": "--label",
}


def command_line(config: LoadConfig, port_variable: str) -> str:
    """The ``infergate-load`` command equivalent to ``config`` (see the module contract)."""
    host = config.target.rpartition(":")[0]
    levels = ",".join(f"{level:g}" for level in config.levels)
    parts = [
        "infergate-load",
        "--target",
        f"{host}:${port_variable}",
        "--model",
        config.model,
        "--mode",
        config.mode,
    ]
    parts += ["--concurrency" if config.mode == "closed" else "--rate", levels]
    defaults = {f.name: f.default for f in fields(LoadConfig)}
    for name, flag in _FLAGS.items():
        value = getattr(config, name)
        if value == defaults[name] or value is None:
            continue
        if isinstance(value, bool):
            parts.append(flag)
        elif name == "metrics_url":
            parts += [flag, "http://127.0.0.1:$METRICS_PORT/metrics"]
        else:
            parts += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    if not config.progress:
        parts.append("--no-progress")
    return " ".join(p if p.startswith("$") or "$" in p else shlex.quote(p) for p in parts)
