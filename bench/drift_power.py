"""Section ``drift-power`` (``make bench-drift-power``, ``python -m bench drift-power``): how often the
default ``[drift]`` rules flag a real shift, and how often they flag a window or a version with no shift at
all, in "fixed" and "calibrated" PSI mode (issue 17, item 7).

Contracts:

* A seeded simulation through the monitor's real path: :func:`monitor.reference.build_profile` on a fresh
  reference per simulated version, :class:`monitor.windows.VersionWindows` (1,000-row windows, exact-KS
  audit on), :func:`monitor.drift.evaluate_window` under ``DriftConfig()`` with only
  ``psi_threshold_mode`` changed, and :class:`monitor.decisions.DriftTracker` for the K-consecutive rule.
  Both modes judge the very same windows.
* Per case (reference rows ``m``, features ``F``, all standard normal): ``--power-versions`` versions of
  ``--power-windows`` windows with no shift (false alarms: the share of windows that drift, and the share
  of versions that enter drift at K = 2 within those windows), and a quarter as many versions whose first
  feature is shifted by ``--power-shift`` sd (power: the share of windows that drift, and of versions that
  enter drift, with the mean number of windows it took). Rates come with Wilson 95 % intervals.
* Same seed, same figures: every version draws from ``numpy.random.default_rng((seed, case, version))``.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from bench.markdown import header
from bench.sections import Goal, Results, Section

__all__ = ["SECTION", "simulate", "wilson"]

MODES = ("fixed", "calibrated")
CASES = (
    (2_000, 1, 1000),
    (10_000, 1, 1000),
    (100_000, 1, 1000),
    (20_000, 16, 1000),  # over 10,000 values the KS p-value is asymptotic: 16 exact ones per window are slow
    (10_000, 1, 100),
    (10_000, 1, 20),
)
"""(reference rows m, features F, window rows n) per case."""


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--power-versions", type=int, default=600, help="drift-power: unshifted versions per case")
    p.add_argument("--power-windows", type=int, default=50, help="drift-power: windows per version")
    p.add_argument("--power-shift", type=float, default=0.2, help="drift-power: mean shift in sd")
    p.add_argument("--power-seed", type=int, default=17, help="drift-power: seed")


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``hits / n`` (0, 1 when ``n`` is 0)."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def simulate(
    case: int,
    rows: int,
    features: int,
    window_rows: int,
    versions: int,
    windows: int,
    shift: float,
    seed: int,
) -> dict[str, Any]:
    """Counts of drifting windows and of versions entering drift per mode (see the module contract)."""
    import numpy as np

    from monitor.config import ProfileSettings
    from monitor.decisions import DRIFT_STARTED, DriftTracker, large_enough
    from monitor.drift import evaluate_window
    from monitor.reference import build_profile
    from monitor.windows import VersionWindows
    from registry.config import DriftConfig
    from registry.signature import Signature, TensorSpec

    signature = Signature(
        inputs=(TensorSpec("x", "FP64", (-1, features)),), outputs=(TensorSpec("y", "FP32", (-1,)),)
    )
    configs = {mode: DriftConfig(window_rows=window_rows, psi_threshold_mode=mode) for mode in MODES}
    size = window_rows
    out: dict[str, Any] = {m: {"windows": 0, "raw": 0, "versions": 0, "first": []} for m in MODES}
    for v in range(versions):
        rng = np.random.default_rng((seed, case, int(shift * 1000), v))
        profile = build_profile(
            signature, {"input:x": rng.normal(size=(rows, features))}, ProfileSettings(), 10
        )
        pool = VersionWindows(profile, configs["fixed"])
        trackers = {m: DriftTracker(configs[m].consecutive) for m in MODES}
        entered: dict[str, int | None] = dict.fromkeys(MODES)
        tensor = profile.layout.tensors[0]
        for _ in range(windows):
            x = rng.normal(size=(size, features))
            x[:, 0] += shift
            (closed,) = pool.add([(tensor, x)], size, now=0.0, wall=0.0)
            for m in MODES:
                result = evaluate_window(profile, configs[m], closed)
                # as the engine: a window too small for the PSI rule neither starts nor ends drift
                drift = result.drift and large_enough(result)
                out[m]["windows"] += drift
                out[m]["raw"] += result.drift
                if trackers[m].update(drift, closed.index) == DRIFT_STARTED and entered[m] is None:
                    entered[m] = closed.index
            pool.release(closed.buffer)
        for m in MODES:
            out[m]["versions"] += entered[m] is not None
            if entered[m] is not None:
                out[m]["first"].append(entered[m])
    for m in MODES:
        first = out[m].pop("first")
        out[m]["mean_windows_to_enter"] = float(np.mean(first)) if first else None
    return {
        "rows": rows,
        "features": features,
        "window_rows": window_rows,
        "versions": versions,
        "windows": windows,
        "shift": shift,
        **out,
    }


def run(args: argparse.Namespace) -> Results:
    results: Results = {
        "seed": args.power_seed,
        "consecutive": 2,
        "versions": args.power_versions,
        "windows": args.power_windows,
        "cases": [],
    }
    for case, (rows, features, size) in enumerate(CASES):
        print(f"== drift-power: m={rows:,} F={features} n={size}", file=sys.stderr, flush=True)
        versions, windows = args.power_versions, args.power_windows
        null = simulate(case, rows, features, size, versions, windows, 0.0, args.power_seed)
        shifted = simulate(
            case, rows, features, size, max(1, versions // 4), windows, args.power_shift, args.power_seed
        )
        results["cases"].append({"null": null, "shifted": shifted})
    return results


def _rate(part: dict[str, Any], mode: str, key: str) -> tuple[float, float, float]:
    n = part["versions"] * (1 if key == "versions" else part["windows"])
    hits = part[mode][key]
    lo, hi = wilson(hits, n)
    return hits / n, lo, hi


def _pct(rate: tuple[float, float, float]) -> str:
    value, lo, hi = rate
    return f"{value:.1%} ({lo:.1%} to {hi:.1%})"


def goals(results: Results) -> list[Goal]:
    out = []
    for case in results["cases"]:
        s, n = case["shifted"], case["null"]
        tag = f"m={s['rows']:,}, F={s['features']}, n={s['window_rows']:,}"
        for mode in MODES:
            power, false = _rate(s, mode, "windows"), _rate(n, mode, "versions")
            out.append(Goal.report(f"power per window, {mode}, {tag}", _pct(power), power[0]))
            out.append(Goal.report(f"false drift per version, {mode}, {tag}", _pct(false), false[0]))
    return out


def render(results: Results) -> str:
    meta = results["meta"]
    lines = header(
        meta,
        "Power of the default [drift] settings (monitor)",
        [
            f"- Seeded simulation (seed {results['seed']}) through the monitor's real path: `build_profile` "
            "on a fresh standard-normal reference of `m` rows and `F` features per version, `VersionWindows` "
            "of `n` rows with the exact-KS audit, `evaluate_window` under the default `[drift]` (bins 10, "
            "`psi_threshold` 0.2, `ks_min_effect` 0.1, `alpha` 0.01; `n` = 1,000 is the default "
            "`window_rows`, 100 and 20 stand for windows closed by time under light traffic) in both PSI "
            "modes on the same windows, and, as the engine does, a window counts only when `large_enough` "
            f"(else it neither starts nor ends drift), with `DriftTracker` at K = {results['consecutive']}.",
            f"- No shift: {results['versions']:,} versions x {results['windows']} windows per case; shifted: "
            f"{max(1, results['versions'] // 4):,} versions x {results['windows']} windows with the first of "
            f"the `F` features moved by {results['cases'][0]['shifted']['shift']:g} sd. Percentages with "
            "Wilson 95 % intervals; 'enters drift' is within the version's windows. The last column counts "
            "the windows whose features drift before the size rule is applied (what the report shows for "
            "the window): the false alarms the size rule keeps out of the decisions.",
        ],
    )
    lines += [
        "| m (reference rows) | F (features) | n (window rows) | mode | shifted: windows that drift "
        "| shifted: versions that enter drift (mean windows to enter) | no shift: windows that drift "
        "| no shift: versions that enter drift | no shift: windows that drift, size rule ignored |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for case in results["cases"]:
        s, n = case["shifted"], case["null"]
        for mode in MODES:
            mean = s[mode]["mean_windows_to_enter"]
            lines.append(
                f"| {s['rows']:,} | {s['features']} | {s['window_rows']:,} | {mode} "
                f"| {_pct(_rate(s, mode, 'windows'))} "
                f"| {_pct(_rate(s, mode, 'versions'))} ({'-' if mean is None else f'{mean:.1f}'}) "
                f"| {_pct(_rate(n, mode, 'windows'))} | {_pct(_rate(n, mode, 'versions'))} "
                f"| {_pct(_rate(n, mode, 'raw'))} |"
            )
    return "\n".join([*lines, ""])


#: Not part of a plain ``make bench``: a long simulation whose figures move only with the decision rules.
SECTION = Section(
    "drift-power",
    "Power of the default [drift] settings (monitor)",
    run,
    render,
    goals,
    _add_arguments,
    default=False,
)

if __name__ == "__main__":
    from bench.runner import main

    sys.exit(main(["drift-power", *sys.argv[1:]]))
