"""The tables of ``make profile`` (:mod:`bench.profiling`) in markdown, and their block in BENCHMARKS.md.

Contracts:

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
from pathlib import Path
from typing import Any

from bench.markdown import TITLE, replace_section, section_body
from bench.stages import GROUPS, STAGES

__all__ = ["INTRO", "render", "replace_block", "write_block"]

INTRO = """## Profile: where a request's time goes (`make profile`)

`make profile SCENARIO=...` (`python -m bench.profiling`, docs/loadtests.md) samples the running gateway
with py-spy under a named closed-loop load and sorts every sample into a stage by the frames of its stack
(the innermost frame a rule of `bench/stages.py` claims decides). Samples are of threads that were not
idle; a sample is 1/rate seconds of one thread. µs per request = samples x (1/rate) / requests answered
in the profiled window (the load generator's rate x the profiled seconds). "busy cores" = thread-seconds
per second. Without `--native`, C and Cython code shows as the Python frame that called it: `grpc`
holds the loop callbacks whose innermost frame is the loop itself (grpc aio's Cython code, C task steps).
"""

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
        "| thread group | samples | share of samples | busy cores | µs/request |",
        "|---|---:|---:|---:|---:|",
    ]
    for group in GROUPS:
        g = groups.get(group)
        if g is None:
            continue
        lines.append(
            f"| {group} | {g['samples']:,} | {_pct(g['share_of_all'])} | {_num(g['busy_cores'], 2)} "
            f"| {_num(g['us_per_request'])} |"
        )
    lines.append(
        f"| all | {total:,} | 100.0% | {_num(total * interval / seconds if seconds else None, 2)} "
        f"| {_num(_us(total, interval, requests))} |"
    )
    present = [g for g in GROUPS if g in groups]
    lines += [
        "",
        "| stage | event loop: share | " + " | ".join(f"{g} µs/req" for g in present) + " | all µs/req |",
        "|---|---:|" + "---:|" * (len(present) + 1),
    ]
    loop = groups.get("event loop", {"stages": {}})
    for stage in STAGES:
        counts = [groups[g]["stages"].get(stage, {}).get("samples", 0) for g in present]
        if not any(counts):
            continue
        share = loop["stages"].get(stage, {}).get("share_in_group")
        cells = " | ".join(_num(_us(n, interval, requests)) for n in counts)
        lines.append(f"| {stage} | {_pct(share)} | {cells} | {_num(_us(sum(counts), interval, requests))} |")
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
