"""``python -m bench [SECTION ...]`` (``make bench``): run sections, save results, rewrite BENCHMARKS.md.

Contracts:

* No section named: every section whose ``default`` is set (:data:`bench.sections.REGISTRY` order). Named
  sections run in the registry's order, each once. A registered section whose module cannot be imported
  stops only runs that include it (a full run does).
* Before the first section the machine's CPU busy share is sampled for ``--idle-probe`` seconds with
  nothing started. Each section then gets its own ``--work``/``--results`` subfolder (``bench-out/NAME``,
  ``bench-out/results/NAME``, both git-ignored); its results, plus the ``meta`` the runner measured
  around it (command, elapsed time, environment, load averages, CPU busy over the run), are written to
  ``bench-out/results/NAME/results.json`` before anything is rendered, so a failed render loses nothing.
* ``--render-only`` runs nothing: it re-renders the named sections from their saved ``results.json``.
* With ``--out``, each section's block and the summary at the top are rewritten
  (:mod:`bench.markdown`), and the files a section lists in ``results["plots"]`` (names in its results
  folder) are copied to ``docs/bench/NAME/`` next to ``--out``, where its markdown links them; without
  ``--out`` the markdown is only printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench.markdown import (
    SUMMARY,
    TITLE,
    merge_summary,
    replace_section,
    section_body,
    summary,
    summary_rows,
)
from bench.sections import REGISTRY, Results, Section, load_section
from loadtests.environment import busy_fraction, cpu_times, environment

__all__ = ["build_parser", "main", "memory", "run_section"]


def memory() -> str | None:
    """Total RAM from ``/proc/meminfo`` (e.g. "126 GiB"), None where unreadable."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.0f} GiB"
    except OSError:
        pass
    return None


def usable_cores() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def build_parser(sections: list[Section]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="infergate's benchmark suite: run sections, save results, rewrite BENCHMARKS.md.",
    )
    p.add_argument("sections", nargs="*", metavar="SECTION", help=f"sections to run: {', '.join(REGISTRY)}")
    p.add_argument("--out", type=Path, default=None, help="BENCHMARKS.md to rewrite (default: print only)")
    p.add_argument("--work", type=Path, default=Path("bench-out"), help="scratch folder (registries, logs)")
    p.add_argument("--results", type=Path, default=Path("bench-out/results"), help="JSON results folder")
    p.add_argument("--duration", type=float, default=None, help="measured seconds per step (section default)")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per step (default 1)")
    p.add_argument("--idle-probe", type=float, default=3.0, help="seconds of CPU sampling before starting")
    p.add_argument("--render-only", action="store_true", help="re-render saved results; run nothing")
    p.add_argument("--list", action="store_true", help="list the sections and exit")
    for section in sections:
        if section.add_arguments is not None:
            section.add_arguments(p)
    return p


def _chosen(names: list[str], sections: dict[str, Section]) -> list[Section]:
    unknown = [n for n in names if n not in sections]
    if unknown:
        raise SystemExit(f"python -m bench: unknown section(s) {unknown}; known: {', '.join(sections)}")
    if not names:
        return [s for s in sections.values() if s.default]
    return [s for name, s in sections.items() if name in names]


def run_section(section: Section, args: argparse.Namespace, argv: list[str], idle: dict[str, Any]) -> Results:
    """Runs one section with its own folders and measured ``meta`` (see the module contract)."""
    ns = argparse.Namespace(**vars(args))
    ns.work, ns.results = args.work / section.name, args.results / section.name
    ns.duration = section.duration_s if args.duration is None else args.duration
    ns.results.mkdir(parents=True, exist_ok=True)
    env, before, started = environment(), cpu_times(), time.monotonic()
    print(f"== section {section.name}: {section.title}", file=sys.stderr, flush=True)
    results = section.run(ns)
    results["meta"] = {
        "section": section.name,
        "command": " ".join(["python -m bench", *argv]),
        "elapsed_s": time.monotonic() - started,
        "environment": env,
        "load_average_end": list(os.getloadavg()),
        "cpu_busy": busy_fraction(before, cpu_times()),
        "memory": memory(),
        "usable_cores": usable_cores(),
        **idle,
    }
    (ns.results / "results.json").write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    return results


def _copy_plots(names: list[str], source: Path, out: Path, section: str) -> None:
    target = out.parent / "docs" / "bench" / section
    if names:
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
    for name in names:
        if (source / name).exists():
            shutil.copy2(source / name, target / name)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    sections: dict[str, Section] = {}
    broken: dict[str, ImportError] = {}
    for name in REGISTRY:
        try:
            sections[name] = load_section(name)
        except ImportError as exc:  # one section's missing part must not stop the others
            broken[name] = exc
    args = build_parser(list(sections.values())).parse_args(argv)
    if args.list:
        for s in sections.values():
            print(f"{s.name:10} {s.title}{'' if s.default else ' (only when named)'}")
        for name, error in broken.items():
            print(f"{name:10} (cannot be imported: {error})")
        return 0
    wanted = [n for n in args.sections or list(REGISTRY) if n in broken]
    if wanted:
        raise SystemExit(f"python -m bench: section(s) {wanted} cannot be imported: {broken[wanted[0]]}")
    chosen = _chosen(args.sections, sections)
    rendered: dict[str, Results] = {}
    if args.render_only:
        for s in chosen:
            rendered[s.name] = json.loads((args.results / s.name / "results.json").read_text())
    else:
        before = cpu_times()
        time.sleep(args.idle_probe)
        idle = {"idle_busy": busy_fraction(before, cpu_times()), "idle_probe_s": args.idle_probe}
        for s in chosen:
            rendered[s.name] = run_section(s, args, argv, idle)
    text = (args.out.read_text() if args.out is not None and args.out.exists() else TITLE) or TITLE
    fresh: dict[str, list[str]] = {}
    for s in chosen:
        body = s.render(rendered[s.name])
        print(body, flush=True)
        text = replace_section(text, s.name, body)
        fresh[s.name] = summary_rows(s.name, s.goals(rendered[s.name]))
    text = replace_section(
        text, SUMMARY, summary(merge_summary(section_body(text, SUMMARY), fresh), REGISTRY)
    )
    if args.out is not None:
        for s in chosen:
            _copy_plots(rendered[s.name].get("plots") or [], args.results / s.name, args.out, s.name)
        args.out.write_text(text)
        print(f"wrote {', '.join(s.name for s in chosen)} and the summary into {args.out}", file=sys.stderr)
    return 0
