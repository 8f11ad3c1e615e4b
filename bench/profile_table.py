"""The sums and tables of ``make profile`` (:mod:`bench.profiling`), and their block in BENCHMARKS.md.

Contracts:

* :func:`summarize` sums samples per (thread group, stage) (:func:`bench.stages.classify`) and derives, with
  ``interval_s`` = 1 / sampling rate: thread-seconds = samples x interval; share of a group = samples / the
  group's samples; µs per request = samples x interval x 1e6 / requests; busy cores = thread-seconds /
  profiled seconds. ``idle`` samples are left out of every total and share.
* :func:`render` is pure: a profile result (the JSON that :mod:`bench.profiling` writes) -> one markdown
  block: how it was made (exact commands, git revision, cores, load average, scenario), the load it ran
  under, a table per thread group (samples, share of all samples, busy cores, µs per request) and a table
  per stage (share of the event-loop thread's samples, µs per request on each thread group and in all).
* :func:`replace_block` / :func:`write_block` own the ``profile`` block of BENCHMARKS.md
  (``<!-- profile:start -->`` ... ``<!-- profile:end -->``; appended when missing). Inside it, each table
  sits between ``<!-- profile:RUN:LABEL:start -->`` and ``<!-- profile:RUN:LABEL:end -->``; writing one
  replaces only that table, keeps the others, and orders them by run, then label (``before``, ``after``,
  then others by name). Everything outside the block is kept byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.markdown import TITLE, replace_section, section_body
from bench.stages import GROUPS, IDLE, RULES, STAGES, Rule, Stack, classify, thread_group

__all__ = ["INTRO", "Summary", "kernel_groups", "render", "replace_block", "summarize", "write_block"]

INTRO = """## Profile: where a request's time goes (`make profile`)

`make profile SCENARIO=...` (`python -m bench.profiling`, docs/loadtests.md) samples the running gateway
with py-spy under a named closed-loop load and sorts every sample into a stage by the frames of its stack
(the innermost frame a rule of `bench/stages.py` claims decides). A sample is 1/rate seconds of one
thread that py-spy judged at work. µs per request = samples x (1/rate) / requests answered in the
profiled window (the load generator's rate x the profiled seconds); "busy cores" = thread-seconds per
second. py-spy's judgement is a heuristic in its default non-blocking mode: a runnable thread waiting for
a core counts as at work, and so can a thread that was about to block (in `selector`, the event loop's
epoll, or an executor's queue wait in `thread-hop`). The "kernel" columns give the CPU time the kernel
counted for the same threads over the same window (`/proc`); where a group's samples give more than
that, the excess is waiting, not work. Without `--native`, C and Cython code shows as the Python
frame that called it: `grpc` holds the loop callbacks whose innermost frame is the loop itself (grpc
aio's Cython code, C task steps).
"""


@dataclass
class Summary:
    """Samples per (group, stage) and the figures derived from them (see the module contract)."""

    interval_s: float
    seconds: float
    requests: float
    samples: dict[str, dict[str, int]] = field(default_factory=dict)  # group -> stage -> samples
    unmatched: dict[str, int] = field(default_factory=dict)  # innermost frame of "other" stacks -> samples

    def group_total(self, group: str) -> int:
        """Samples of ``group``'s threads at work (``idle`` left out)."""
        return sum(n for stage, n in self.samples.get(group, {}).items() if stage != IDLE)

    @property
    def idle(self) -> int:
        return self.stage_total(IDLE)

    @property
    def total(self) -> int:
        return sum(self.group_total(g) for g in self.samples)

    def stage_total(self, stage: str) -> int:
        return sum(stages.get(stage, 0) for stages in self.samples.values())

    def share_of_all(self, group: str) -> float | None:
        return self.group_total(group) / self.total if self.total else None

    def share_in_group(self, group: str, stage: str) -> float | None:
        total = self.group_total(group)
        return self.samples.get(group, {}).get(stage, 0) / total if total else None

    def us_per_request(self, samples: int) -> float | None:
        return samples * self.interval_s * 1e6 / self.requests if self.requests > 0 else None

    def busy_cores(self, samples: int) -> float | None:
        return samples * self.interval_s / self.seconds if self.seconds > 0 else None

    def to_json(self) -> dict[str, Any]:
        groups = {
            group: {
                "samples": self.group_total(group),
                "share_of_all": self.share_of_all(group),
                "busy_cores": self.busy_cores(self.group_total(group)),
                "us_per_request": self.us_per_request(self.group_total(group)),
                "stages": {
                    stage: {
                        "samples": n,
                        "share_in_group": self.share_in_group(group, stage),
                        "us_per_request": self.us_per_request(n),
                    }
                    for stage, n in sorted(self.samples.get(group, {}).items())
                },
            }
            for group in GROUPS
            if group in self.samples
        }
        top = sorted(self.unmatched.items(), key=lambda kv: -kv[1])[:20]
        return {
            "interval_s": self.interval_s,
            "seconds": self.seconds,
            "requests": self.requests,
            "samples": self.total,
            "idle_samples": self.idle,
            "groups": groups,
            "other_innermost_frames": dict(top),
        }


def summarize(
    stacks: Iterable[Stack],
    *,
    interval_s: float,
    seconds: float,
    requests: float,
    rules: tuple[Rule, ...] = RULES,
) -> Summary:
    summary = Summary(interval_s=interval_s, seconds=seconds, requests=requests)
    for stack in stacks:
        group, stage = classify(stack, rules)
        stages = summary.samples.setdefault(group, {})
        stages[stage] = stages.get(stage, 0) + stack.count
        if stage == "other":
            key = " ".join(stack.frames[-1]) if stack.frames else "(empty)"
            summary.unmatched[key] = summary.unmatched.get(key, 0) + stack.count
    return summary


def kernel_groups(cpu_s: dict[str, float], stacks: Iterable[Stack]) -> dict[str, float]:
    """CPU seconds by thread group from CPU seconds by OS thread id; the thread ids py-spy printed name
    the threads, and a thread py-spy never saw at work counts as ``other``."""
    names = {stack.tid: stack.thread for stack in stacks if stack.tid}
    out: dict[str, float] = {}
    for tid, seconds in cpu_s.items():
        group = thread_group(names[tid]) if tid in names else GROUPS[-1]
        out[group] = out.get(group, 0.0) + seconds
    return out


_ORDER = {"before": 0, "after": 1}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _us(samples: int, interval_s: float, requests: float) -> float | None:
    return samples * interval_s * 1e6 / requests if requests > 0 and samples else None


def render(result: dict[str, Any], label: str) -> str:
    env, prof = result["environment"], result["profile"]
    interval, seconds, requests = prof["interval_s"], prof["seconds"], prof["requests"]
    groups: dict[str, Any] = prof["groups"]
    total = prof["samples"]
    dirty = " plus uncommitted changes" if env.get("git_dirty") else ""
    if result.get("gateway_revision"):
        dirty += f" (the gateway's code: git {result['gateway_revision']}, exported clean)"
    lat = result["latency_ms"]
    errors = ", ".join(f"{k} {v}" for k, v in sorted(result["errors"].items())) or "0"
    before = ", ".join(f"{x:.2f}" for x in result["load_average_before"])
    after = ", ".join(f"{x:.2f}" for x in result["load_average_after"])
    title = f"### {result['run']}" + (f" · {label}" if label else "")
    lines = [
        title,
        "",
        f"`{result['command']}` on {env['started_at']} UTC; git {env.get('git_commit')}{dirty}; "
        f"{env.get('cpu_count')} cores ({env.get('cpu_model')}), shared; load average {before} before, "
        f"{after} after; Python {env.get('python')}, grpcio {env['versions'].get('grpcio')}, onnxruntime "
        f"{env['versions'].get('onnxruntime')}.",
        "",
        f"- Scenario `{result['scenario']}`: {result['model']}, closed loop, concurrency "
        f"{result['concurrency']}, {result['rows']} row(s) per request; {result['config']}.",
        f"- Gateway: `{result['gateway_command']}`",
        f"- Load: `{result['load_command']}`",
        f"- Profiler: `{result['py_spy_command']}`",
        f"- During the profile: {_num(result['throughput_rps'], 0)} req/s, p50 {_num(lat['p50'], 2)} ms, "
        f"p99 {_num(lat['p99'], 2)} ms, errors {errors}; {_num(requests, 0)} requests in the "
        f"{seconds:g} s window ({_num(result['gateway_requests_in_window'], 0)} by the gateway's /metrics); "
        f"{total:,} samples at {1 / interval:g} Hz.",
        "",
        "| thread group | samples | share of samples | busy cores | µs/request | kernel: busy cores "
        "| kernel: CPU µs/request |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    kernel = result.get("kernel_cpu") or {"seconds": 0.0, "groups": {}}
    seconds_window = seconds

    def kernel_cores(group: str | None) -> str:
        """Busy cores by the kernel's count, and CPU µs per request at that rate over the profiled window."""
        cpu = kernel["groups"]
        seconds = sum(cpu.values()) if group is None else cpu.get(group)
        if seconds is None or not kernel["seconds"]:
            return "- | -"
        cores = seconds / kernel["seconds"]
        return f"{_num(cores, 2)} | {_num(cores * seconds_window * 1e6 / requests if requests > 0 else None)}"

    for group in GROUPS:
        g = groups.get(group)
        if g is None:
            continue
        lines.append(
            f"| {group} | {g['samples']:,} | {_pct(g['share_of_all'])} | {_num(g['busy_cores'], 2)} "
            f"| {_num(g['us_per_request'])} | {kernel_cores(group)} |"
        )
    lines.append(
        f"| all | {total:,} | 100.0% | {_num(total * interval / seconds if seconds else None, 2)} "
        f"| {_num(_us(total, interval, requests))} | {kernel_cores(None)} |"
    )
    present = [g for g in GROUPS if g in groups]
    lines += [
        "",
        "| stage | event loop: share | " + " | ".join(f"{g} µs/req" for g in present) + " | all µs/req |",
        "|---|---:|" + "---:|" * (len(present) + 1),
    ]
    loop = groups.get("event loop", {"stages": {}})
    for stage in STAGES:
        if stage == "idle":
            continue
        counts = [groups[g]["stages"].get(stage, {}).get("samples", 0) for g in present]
        if not any(counts):
            continue
        share = loop["stages"].get(stage, {}).get("share_in_group")
        cells = " | ".join(_num(_us(n, interval, requests)) for n in counts)
        lines.append(f"| {stage} | {_pct(share)} | {cells} | {_num(_us(sum(counts), interval, requests))} |")
    if prof.get("idle_samples"):
        lines += ["", f"Idle samples (blocked waits, left out above): {prof['idle_samples']:,}."]
    other = prof.get("other_innermost_frames") or {}
    if other:
        top = "; ".join(f"`{frame}` {n}" for frame, n in list(other.items())[:5])
        lines += ["", f"Most frequent innermost frames of `other`: {top}."]
    return "\n".join([*lines, ""])


def _markers(key: str) -> tuple[str, str]:
    return f"<!-- {key}:start -->", f"<!-- {key}:end -->"


_TABLE = re.compile(
    r"<!-- profile:(?P<run>[A-Za-z0-9_.-]+):(?P<label>[A-Za-z0-9_-]+):start -->\n?(?P<body>.*?)"
    r"<!-- profile:(?P=run):(?P=label):end -->",
    re.DOTALL,
)


def replace_block(text: str, run: str, label: str, table: str) -> str:
    """``text`` with the ``run``/``label`` table of the profile block set to ``table`` (see the contract)."""
    section = section_body(text, "profile") or ""
    tables = {(m["run"], m["label"]): m["body"].strip("\n") for m in _TABLE.finditer(section)}
    tables[(run, label)] = table.strip("\n")
    parts = [INTRO.strip("\n"), ""]
    for (r, lab), body in sorted(
        tables.items(), key=lambda kv: (kv[0][0], _ORDER.get(kv[0][1], 2), kv[0][1])
    ):
        start, end = _markers(f"profile:{r}:{lab}")
        parts += [start, body, end, ""]
    return replace_section(text, "profile", "\n".join(parts))


def write_block(path: Path, run: str, label: str, table: str) -> None:
    text = path.read_text() if path.exists() else TITLE
    path.write_text(replace_block(text, run, label, table))
