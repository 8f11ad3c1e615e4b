"""A whole ``infergate-load`` run: payloads, client processes, every step of the sweep, and the report.

Contracts:

* :func:`run_load` builds the payloads once (ModelMetadata from the target, rows from the chosen source),
  starts the client processes once, runs one step per level and returns the report dict (the JSON
  schema is in docs/loadtests.md). It never writes files; :mod:`loadtests.report` does.
* Top-level figures are those of all steps together: counts add up, ``duration_s`` is the sum of the
  step durations, latency percentiles come from the exactly merged histograms. Each step's own figures,
  server deltas, client CPU and timeline are under ``steps``.
* With ``metrics_url``, the server is scraped before and after each step; a failed scrape becomes a
  warning and ``server: null``, never a failed run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loadtests.config import LoadConfig
from loadtests.environment import busy_fraction, cpu_times, environment
from loadtests.figures import summary_figures, timeline
from loadtests.payload import Payloads, build_payloads, fetch_metadata, load_rows
from loadtests.pool import ClientPool, StepOutcome
from loadtests.promscrape import Metrics, scrape, server_deltas
from loadtests.recorder import Summary
from loadtests.secure import open_channel
from loadtests.worker import channel_options

__all__ = ["SATURATION_CORES", "make_payloads", "run_load"]

#: A client process using this many cores (its Python thread holds the GIL) is reported as saturated.
SATURATION_CORES = 0.85
#: Open loop: a send-lag p99 above this (ms) means the client could not keep to its schedule.
LAG_WARNING_MS = 2.0

ProgressFactory = Callable[[int, LoadConfig, float], Callable[[float, int], None] | None]


def make_payloads(config: LoadConfig) -> Payloads:
    """ModelMetadata from the target, then ``config.payloads`` serialized requests."""
    with open_channel(config.target, channel_options(), config.security) as channel:
        inputs = fetch_metadata(channel, config.model, config.version)
    arrays = load_rows(
        inputs,
        config.input_source,
        registry=config.registry,
        npz=config.npz,
        model=config.model,
        version=config.version,
        rows=config.rows * config.payloads,
        seed=config.seed,
    )
    return build_payloads(
        config.model,
        config.version,
        inputs,
        arrays,
        rows=config.rows,
        count=config.payloads,
        timeout_us=config.timeout_us,
        priority=config.priority,
        source=config.input_source,
    )


def _scrape(url: str | None, warnings: list[str]) -> Metrics | None:
    if url is None:
        return None
    try:
        return scrape(url)
    except (OSError, ValueError) as exc:
        warnings.append(f"could not scrape {url}: {exc}")
        return None


def _client(
    outcome: StepOutcome, figures: dict[str, Any], busy: float | None, warnings: list[str]
) -> dict[str, Any]:
    cores = [cpu / wall for cpu, wall in zip(outcome.cpu_s, outcome.wall_s, strict=True)]
    saturated = [i for i, c in enumerate(cores) if c >= SATURATION_CORES]
    for i in saturated:
        warnings.append(
            f"client process {i} used {cores[i]:.2f} cores: the client may be the bottleneck "
            "(add --processes, or run the client on other cores)"
        )
    lag = figures["send_lag_ms"]["p99"]
    if outcome.spec.mode == "open" and lag is not None and lag > LAG_WARNING_MS:
        warnings.append(
            f"the client sent late (send lag p99 {lag:.2f} ms): offered load was not fully applied"
        )
    dropped = figures["errors"].get("CLIENT_DROPPED", 0)
    if dropped:
        warnings.append(
            f"{dropped} requests were not sent: {outcome.spec.max_inflight} per process were in flight"
        )
    if busy is not None and busy >= 0.95:
        warnings.append(f"the machine's CPUs were {busy:.0%} busy: client and server competed for them")
    return {
        "processes": len(cores),
        "cpu_s": [round(c, 4) for c in outcome.cpu_s],
        "cpu_cores": [round(c, 4) for c in cores],
        "saturated": bool(saturated),
        "machine_cpu_busy": busy,
    }


def run_load(config: LoadConfig, progress: ProgressFactory | None = None) -> dict[str, Any]:
    """Runs every step of ``config`` and returns the report (see the module contract)."""
    env = environment()
    payloads = make_payloads(config)
    warnings: list[str] = []
    steps: list[dict[str, Any]] = []
    total = Summary()
    first_scrape: Metrics | None = None
    last_scrape: Metrics | None = None
    run_start: int | None = None
    with ClientPool(config.processes) as pool:
        for index, level in enumerate(config.levels):
            spec = config.step(level, payloads.requests, payloads.rows)
            before = _scrape(config.metrics_url, warnings)
            first_scrape = before if index == 0 else first_scrape
            cpu_before = cpu_times()
            on_progress = progress(index, config, level) if progress is not None else None
            outcome = pool.run_step(spec, on_progress)
            busy = busy_fraction(cpu_before, cpu_times())
            last_scrape = _scrape(config.metrics_url, warnings)
            measure_ns = outcome.start_ns + int(spec.warmup_s * 1e9)
            run_start = measure_ns if run_start is None else run_start
            figures = summary_figures(
                outcome.summary, measure_ns=measure_ns, rows=spec.rows, budget_ms=_budget_ms(config)
            )
            step_warnings: list[str] = []
            figures["client"] = _client(outcome, figures, busy, step_warnings)
            figures["server"] = (
                server_deltas(before, last_scrape, config.model, config.version)
                if before is not None and last_scrape is not None
                else None
            )
            figures["offered"] = level
            figures["start_s"] = round((measure_ns - run_start) / 1e9, 6)
            figures["timeline"] = timeline(outcome.summary, spec.window_ns)
            figures["warnings"] = step_warnings
            warnings.extend(f"step {index} ({level:g}): {w}" for w in step_warnings)
            steps.append(figures)
            total.merge(outcome.summary)
    report = summary_figures(total, measure_ns=0, rows=payloads.rows, budget_ms=_budget_ms(config))
    duration = sum(step["duration_s"] for step in steps)
    per_s = 1.0 / duration if duration > 0 else 0.0
    report.update(
        duration_s=round(duration, 6),
        throughput_rps=report["ok"] * per_s,
        rows_per_s=report["ok"] * payloads.rows * per_s,
        goodput_rps=total.good * per_s,
    )
    report = {
        "schema": "infergate-load/1",
        **report,
        "mode": config.mode,
        "stream": config.stream,
        "poisson": config.poisson,
        "offered": list(config.levels),
        "rows_per_request": payloads.rows,
        "input_source": payloads.source,
        "server": (
            server_deltas(first_scrape, last_scrape, config.model, config.version)
            if first_scrape is not None and last_scrape is not None
            else None
        ),
        "warnings": warnings,
        "steps": steps,
        "parameters": config.parameters(),
        "environment": env,
    }
    return report


def _budget_ms(config: LoadConfig) -> float | None:
    budget = config.budget_ns
    return None if budget is None else budget / 1e6
