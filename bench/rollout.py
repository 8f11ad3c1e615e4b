"""Section ``rollout`` (``make bench-rollout``): issue 16's safe-rollout figures.

Contracts:

* One gateway (``--poll-interval 0.2``, sampling to a real monitor process for the drift gate) serves the
  registry of :func:`bench.rollout_parts.build_registry`.
* Shadow cost: a closed-loop probe of ``mlp-plain`` (1 row, concurrency 32) measures capacity; then
  open-loop Poisson at ``--rollout-load`` (0.3) of it on three copies of the model: ``mlp-plain`` (no
  rollout), ``mlp-10`` and ``mlp-100`` (the same weights published as version 2 under a shadow rollout
  held at 10 % or 100 % mirrored). ``--rollout-rounds`` (10) rounds of the three arms in a rotated order;
  each figure is the median over rounds. Goal: p99 shadowed ÷ no rollout ≤ 1.05. The offered rate leaves
  the machine room for the copies: mirroring 100 % doubles the model's work, so at half the capacity it
  would saturate the cores by construction, and the figure would measure the machine, not the shadow path.
* Detection: for each bad kind (slower, erroring, disagreeing, drifting), one closed-loop run on
  ``cls-<kind>`` (concurrency 8, 256 distinct payload rows of the N(0, 1) reference) during which the bad
  candidate is published ``--publish-at`` s in. Figures: seconds from the publish to the rollout start
  (load, warm-up, start), from the start to the rollback (time to detect), the gate that fired, and the
  client's errors over the whole run (goal: 0).
"""

from __future__ import annotations

import argparse
import statistics
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import onnx

from bench.kit import add_model, fresh_registry, measure, measured, ratio, start_gateway
from bench.markdown import details, fmt, goal_table, header, percent
from bench.rollout_parts import (
    KINDS,
    SHADOW_TOML,
    SHADOWED,
    Watcher,
    build_registry,
    candidate,
    reference_rows,
)
from bench.sections import Goal, Results, Section
from registry.publish import publish

__all__ = ["SECTION"]


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--publish-at", type=float, default=2.0, help="rollout: seconds into a run to publish")
    p.add_argument(
        "--rollout-load", type=float, default=0.3, help="rollout: fraction of the probed capacity offered"
    )
    p.add_argument("--rollout-rounds", type=int, default=10, help="rollout: rounds of the shadow arms (10)")


def _errors(run: dict[str, Any]) -> int:
    return sum(sum(step["errors"].values()) for step in run["report"]["steps"])


ARMS = (("plain", "mlp-plain", "no rollout"), ("10", "mlp-10", "shadow at 10 %"),
        ("100", "mlp-100", "shadow at 100 %"))  # fmt: skip


def _median(values: list[float | None]) -> float | None:
    present = sorted(v for v in values if v is not None)
    return statistics.median(present) if present else None


def _arm(results: Results, arm: str, key: str) -> float | None:
    """The median over rounds of one latency figure (``p50``, ``p99``) of one arm."""
    return _median([measured(run).lat(key) for run in results["arms"][arm]])


def goals(results: Results) -> list[Goal]:
    out: list[Goal] = []
    base = {key: _arm(results, "plain", key) for key in ("p50", "p99")}
    rounds = len(results["arms"]["plain"])
    for arm, _, title in ARMS[1:]:
        p99, p50 = _arm(results, arm, "p99"), _arm(results, arm, "p50")
        out += [
            Goal.at_most(f"{title}: stable path p99 ÷ no rollout (median of {rounds} rounds, ms)",
                         f"{fmt(p99)} ÷ {fmt(base['p99'])}", ratio(p99, base["p99"]), 1.05),
            Goal.report(f"{title}: p50 ÷ no rollout (median of {rounds} rounds, ms)",
                        f"{fmt(p50)} ÷ {fmt(base['p50'])}", ratio(p50, base["p50"])),
        ]  # fmt: skip
    shadow_errors = sum(_errors(run) for arm in ("10", "100") for run in results["arms"][arm])
    plain_errors = sum(_errors(run) for run in results["arms"]["plain"])
    measured_errors = f"{shadow_errors} (no rollout: {plain_errors})"
    out.append(Goal.at_most("client errors in the shadowed runs", measured_errors, float(shadow_errors), 0.0))
    for kind in KINDS:
        entry = results["detect"][kind]
        times = entry["times"]
        state = times.get("state") or {}
        gate = (state.get("figures") or {}).get("gate", "none")
        detect = None
        if "ended_s" in times and "started_s" in times:
            detect = times["ended_s"] - times["started_s"]
        out.append(Goal.report(f"{kind}: seconds from rollout start to rollback (gate {gate})",
                               f"publish -> start {fmt(times.get('started_s'))} s", detect))  # fmt: skip
        out.append(Goal.at_most(f"{kind}: client errors during the run", "errors over the whole run",
                                float(_errors(entry["run"])), 0.0))  # fmt: skip
    return out


def render(results: Results) -> str:
    meta, cmd = results["meta"], results["gateway"]
    probe = measured(results["probe"])
    runs = [measured(run) for arm, _, _ in ARMS for run in results["arms"][arm]]
    lines = header(
        meta,
        "Safe rollout (issue 16)",
        [
            f"- Gateway: `{cmd}` with a monitor process (`python -m monitor`, port 0) for the drift gate.",
            f"- Shadow cost on the bench MLP (1 row per request): capacity probe of `mlp-plain` (closed "
            f"loop, concurrency 32) {fmt(probe.report['throughput_rps'], 0)} req/s; every run open-loop "
            f"Poisson at {fmt(runs[0].step['offered'], 0)} req/s ({percent(results.get('load'))} of it: "
            "mirroring 100 % doubles the model's work, and the rate leaves the cores room for it). "
            "Three copies of the model: `mlp-plain` (no "
            "rollout), `mlp-10` and `mlp-100`, where version 2 (the same weights) is under a shadow rollout "
            "held at a 10 % or a 100 % step, so that share of answered requests is also mirrored to it "
            "(default `[rollout]`: copies gather for 100 ms and run as one batch of up to 64 rows; a copy "
            "is dropped while the stable queue is not empty or 4 groups are in flight). The arms run in "
            f"{len(results['arms']['plain'])} rounds, in a rotated order; each figure is the median over the "
            "rounds (the machine is shared: one run alone is noise).",
            "- Detection on `cls-<kind>` (x FP32[batch, 4] -> logits, probs; canary steps 5/25/50/100 %, "
            "`min_requests = 50`, `step_seconds = 10`): closed loop, concurrency 8, the bad version "
            "published "
            f"{results['publish_at']:g} s into the run: slower = an extra 160-layer 256-wide MatMul branch; "
            "erroring = a Gather out of range for rows with x[0] > 1; disagreeing = output columns shuffled; "
            "drifting = the same model with a reference profile of N(4, 1) (traffic is N(0, 1)).",
        ],
    )
    lines += goal_table(goals(results))
    lines += ["Rollbacks as recorded in rollout.json:", ""]
    for kind in KINDS:
        state = results["detect"][kind]["times"].get("state")
        lines.append(
            f"- {kind}: " + (f"{state['reason']}; figures {state['figures']}" if state else "not rolled back")
        )
    by_arm = []
    for arm, model, title in ARMS:
        counts: dict[str, int] = {}
        for run in results["arms"][arm]:
            for step in run["report"]["steps"]:
                for code, n in step["errors"].items():
                    counts[code] = counts.get(code, 0) + n
        rounds = ", ".join(fmt(measured(run).lat("p99")) for run in results["arms"][arm])
        errors = ", ".join(f"{code} {n}" for code, n in sorted(counts.items())) or "none"
        by_arm.append(f"- {title} (`{model}`): p99 per round {rounds} ms; client errors {errors}.")
    lines += [
        "",
        "Shadow arms, round by round (CANCELLED is gRPC core refusing calls past `--max-pending-calls` "
        "when the process falls behind, i.e. the machine had no CPU to spare):",
        "",
        *by_arm,
        "",
        _resolution(results),
        "",
        "Time to detect is bounded below by `min_requests` at the canary's 5 % share (50 candidate "
        "requests need about 1000 requests), and for drift by the monitor's window (200 candidate rows). "
        "The candidate's failed requests were answered by the stable version, so they are not client errors.",
        "",
        "### Runs",
        "",
        *details([probe, *runs, *(measured(results["detect"][k]["run"]) for k in KINDS)]),
    ]
    return "\n".join(lines)


def _resolution(results: Results) -> str:
    """Whether the rounds resolve a 5 % difference: the no-rollout arm's spread against 5 % of its median."""
    p99s = [v for v in (measured(run).lat("p99") for run in results["arms"]["plain"]) if v is not None]
    middle = _median(list(p99s))
    if not p99s or middle is None:
        return "Reading: no p99 was measured without a rollout."
    spread = max(p99s) - min(p99s)
    if spread > 0.05 * middle:
        return (
            f"Reading: without a rollout the p99 alone spans {fmt(min(p99s))} to {fmt(max(p99s))} ms over "
            f"the rounds, more than 5 % of its median ({fmt(0.05 * middle)} ms), so these runs do not "
            "resolve a 5 % difference: a met verdict says the shadowed medians were within it, not that "
            "a cost that small was measured."
        )
    return (
        f"Reading: without a rollout the p99 spans {fmt(min(p99s))} to {fmt(max(p99s))} ms over the rounds."
    )


def run(args: argparse.Namespace) -> Results:
    from tests.monitor_servers import MonitorProcess

    registry = fresh_registry(args.work, args.results, [])
    build_registry(registry, args.work / "staging")
    detect: dict[str, Any] = {}
    with ExitStack() as stack:
        monitor = MonitorProcess(registry, args.work / "monitor.db", args.work / "monitor.log")
        stack.callback(monitor.stop)
        log_path = args.work / "gateway.log"
        gw = start_gateway(
            stack, registry, log_path, "--poll-interval", "0.2", "--monitor-url", monitor.stream_url
        )
        common: dict[str, Any] = {"registry": registry, "target": gw.target, "metrics_url": gw.metrics_url}
        probe = measure("probe", args.results, model="mlp-plain", levels=(32,), processes=2,
                        duration_s=min(3.0, args.duration), warmup_s=args.warmup, **common)  # fmt: skip
        rate = max(1, round(args.rollout_load * float(probe.report["throughput_rps"])))
        shadow_run: dict[str, Any] = {
            "mode": "open", "poisson": True, "levels": (rate,), "processes": 2, "duration_s": args.duration,
            "warmup_s": args.warmup, "payloads": 64,
        }  # fmt: skip
        for name, steps in SHADOWED.items():
            add_model(registry, name, "mlp", SHADOW_TOML.format(steps=steps))  # version 2, the same weights
            _wait_running(registry / name)
        arms: dict[str, list[dict[str, Any]]] = {arm: [] for arm, _, _ in ARMS}
        for round_ in range(args.rollout_rounds):
            for arm, model, _ in ARMS[round_ % 3 :] + ARMS[: round_ % 3]:
                run_ = measure(f"{model}-r{round_}", args.results, model=model, **shadow_run, **common)
                arms[arm].append(run_.to_json())
        for kind in KINDS:
            bad, mean, clip0 = candidate(kind)
            source = args.work / "staging" / f"cls-{kind}-bad.onnx"
            onnx.save(bad, source)
            reference = args.work / "staging" / f"cls-{kind}-bad.npz"
            reference_rows(reference, mean, clip0)
            name = f"cls-{kind}"

            def publish_one(name: str = name, source: Path = source, reference: Path = reference) -> None:
                publish(registry, name, source, reference=reference, notes="rollout benchmark candidate")

            watcher = Watcher(registry / name, publish_one, args.publish_at, args.warmup, "rolled_back")
            result = measure(f"detect-{kind}", args.results, watcher, model=name, levels=(8,), processes=1,
                             duration_s=max(args.duration, 20.0), warmup_s=args.warmup, payloads=256,
                             **common)  # fmt: skip
            if watcher.thread is not None:
                watcher.thread.join(60)
            detect[kind] = {"run": result.to_json(), "times": watcher.times}
    return {
        "probe": probe.to_json(),
        "arms": arms,
        "detect": detect,
        "publish_at": args.publish_at,
        "load": args.rollout_load,
        "gateway": gw.command,
    }


def _wait_running(model_dir: Path, timeout: float = 60.0) -> None:
    import time

    from registry.rollout import read_state

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(model_dir)
        if state is not None and state.status == "running":
            time.sleep(1.0)  # the gateways adopt it at their next tick
            return
        time.sleep(0.05)
    raise RuntimeError(f"{model_dir.name}: the shadow rollout did not start within {timeout:g} s")


SECTION = Section("rollout", "Safe rollout (issue 16)", run, render, goals, _add_arguments, duration_s=10.0)
