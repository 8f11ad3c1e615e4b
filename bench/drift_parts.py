"""The drift section's measurements (:mod:`bench.drift`): the engine against scipy and numpy on identical
data, and the live service.

(a) exact KS, 64 features x 100k window rows vs a 100k-row reference: the audit path (numpy SIMD sort of
    the window, numba merge, p-values as scipy's 'auto') vs a ``scipy.stats.ks_2samp`` loop; the
    one-off sort of the reference is timed apart;
(b) ingest of 64 features x 1M rows into the streaming counts: numba vs numpy ``searchsorted`` +
    ``bincount`` with the same edges (numpy gets contiguous columns);
(c) evaluation of 64 features from the counts (PSI + grid KS + bounds);
(d) the running service: SampleBatch frames of 64 rows x 16 features over one WebSocket from a client
    process, windows closing (the demo classifier's defaults: 1000 rows, exact audit), rows/s taken in
    and the server's resident memory over the run; then half as long with 20,000-row windows;
(e) import plus JIT time of ``monitor.stats`` on a cold and on a warm numba cache.

Each timing is the median of ``repeat`` runs. Imported only when the drift section runs (numba JIT).
The service's frames come from the test oracle :func:`tests.monitor_oracles.sample_batch`, imported
normally: run the suite from the repository root (``python -m bench``).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np

from loadtests.promscrape import parse
from monitor import stats
from monitor.grid import Grid
from monitor.kolmogorov import ks_2samp_pvalues

ROOT = Path(__file__).resolve().parents[1]


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median seconds of ``repeat`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        began = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times), result


def quantile_grid(
    reference: np.ndarray[Any, Any], fine: int = 1000, coarse: int = 10
) -> tuple[Grid, list[Any]]:
    levels = np.union1d(np.arange(1, fine) / fine, np.arange(1, coarse) / coarse)
    edges = [np.unique(np.quantile(col, levels, method="inverted_cdf")) for col in reference.T]
    cuts = [
        np.unique(np.quantile(col, np.arange(1, coarse) / coarse, method="inverted_cdf"))
        for col in reference.T
    ]
    maps = [
        np.concatenate([[0], np.searchsorted(c, e, side="right")]) for e, c in zip(edges, cuts, strict=True)
    ]
    return Grid.build(edges, maps, [False] * len(edges)), edges


def bench_exact_ks(rows: int, features: int, repeat: int) -> dict[str, Any]:
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(1)
    reference = rng.normal(size=(features, rows))
    window = rng.normal(0.01, 1.0, size=(features, rows))
    sort_s, ordered = timed(lambda: np.sort(reference, axis=1), 1)
    flat, off = ordered.ravel(), np.arange(features + 1, dtype=np.int64) * rows

    def audit() -> tuple[Any, Any]:
        imax, n1, n2 = stats.ks_exact(window, flat, off)
        return ks_2samp_pvalues(imax, n1, n2)

    audit()  # page in
    ours_s, (d, p) = timed(audit, repeat)
    scipy_s, expect = timed(lambda: [ks_2samp(window[f], reference[f]) for f in range(features)], repeat)
    d_err = max(abs(float(d[f]) - float(expect[f].statistic)) for f in range(features))
    p_err = max(
        abs(float(p[f]) - float(expect[f].pvalue)) / max(float(expect[f].pvalue), 1e-300)
        for f in range(features)
    )
    return {
        "rows": rows,
        "features": features,
        "reference_sort_s": sort_s,
        "numba_s": ours_s,
        "scipy_s": scipy_s,
        "speedup": scipy_s / ours_s,
        "max_d_error": d_err,
        "max_p_rel_error": p_err,
    }


def bench_ingest(rows: int, features: int, repeat: int) -> dict[str, Any]:
    rng = np.random.default_rng(2)
    grid, edges = quantile_grid(rng.normal(size=(20000, features)))
    values = rng.normal(size=(rows, features))
    columns = np.ascontiguousarray(values.T)  # numpy's best case, not timed
    counts, special = grid.zeros()

    def ours() -> Any:
        counts.fill(0)
        stats.ingest(grid, values, 0, counts, special)
        return counts.copy()

    def numpy_way() -> list[Any]:
        return [
            np.bincount(np.searchsorted(edges[f], columns[f], side="right"), minlength=edges[f].size + 1)
            for f in range(features)
        ]

    ours_s, got = timed(ours, repeat)
    numpy_s, expect = timed(numpy_way, repeat)
    same = all(np.array_equal(got[grid.bin_off[f] : grid.bin_off[f + 1]], expect[f]) for f in range(features))
    n = rows * features
    return {
        "rows": rows,
        "features": features,
        "numba_ns": ours_s / n * 1e9,
        "numpy_ns": numpy_s / n * 1e9,
        "speedup": numpy_s / ours_s,
        "identical": same,
        "threads": numba.get_num_threads(),
    }


def bench_evaluate(features: int, repeat: int) -> dict[str, Any]:
    rng = np.random.default_rng(3)
    grid, _ = quantile_grid(rng.normal(size=(20000, features)))
    ref, special = grid.zeros()
    cur, _ = grid.zeros()
    stats.ingest(grid, rng.normal(size=(20000, features)), 0, ref, special)
    stats.ingest(grid, rng.normal(0.1, 1, size=(1000, features)), 0, cur, special)
    calls = 2000
    seconds, _ = timed(lambda: [stats.evaluate(grid, ref, cur) for _ in range(calls)], repeat)
    return {"features": features, "bins": grid.n_bins, "evaluate_us": seconds / calls * 1e6}


def _client(port: int, frames: list[bytes], seconds: float, sent: Any) -> None:
    import aiohttp

    async def run() -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"http://127.0.0.1:{port}/v1/samples/stream", max_msg_size=0) as ws,
        ):
            count, stop = 0, time.monotonic() + seconds
            while time.monotonic() < stop:
                await ws.send_bytes(frames[count % len(frames)])
                count += 1
            sent.value = count

    asyncio.run(run())


def _metric(text: str, name: str, **labels: str) -> float:
    """Sum of the ``name`` samples of a /metrics page whose labels include ``labels``."""
    return sum(
        value
        for sample_labels, value in parse(text).get(name, [])
        if all(dict(sample_labels).get(k) == v for k, v in labels.items())
    )


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_service(seconds: float, window_rows: int = 1000) -> dict[str, Any]:
    from registry.demo import build_demo
    from tests.monitor_oracles import sample_batch
    from tests.monitor_servers import MonitorProcess

    with tempfile.TemporaryDirectory(prefix="bench-drift-") as tmp:
        registry = Path(tmp) / "registry"
        build_demo(registry)
        with (registry / "classifier" / "model.toml").open("a", encoding="utf-8") as f:
            f.write(f"\n[drift]\nwindow_rows = {window_rows}\n")
        with np.load(registry / "classifier" / "1" / "reference.npz") as npz:
            ref = npz["input:input"]
        rng = np.random.default_rng(4)
        frames = [
            sample_batch("classifier", "1", {"input": ref[rng.integers(0, len(ref), 64)]}) for _ in range(200)
        ]
        monitor = MonitorProcess(registry, Path(tmp) / "m.db", Path(tmp) / "monitor.log")
        server, url, port, scrape = monitor.proc, monitor.url, monitor.port, monitor.metrics
        try:
            urllib.request.urlopen(
                urllib.request.Request(f"{url}/v1/samples", data=frames[0]), timeout=60
            ).read()
            sent = multiprocessing.get_context("spawn").Value("q", 0)
            client = multiprocessing.get_context("spawn").Process(
                target=_client, args=(port, frames, seconds + 8, sent)
            )
            client.start()
            time.sleep(5.0)  # client start-up and warm-up are not measured
            rss, first = [_rss_mib(server.pid)], scrape()
            began = time.monotonic()
            while time.monotonic() - began < seconds:
                time.sleep(1.0)
                rss.append(_rss_mib(server.pid))
            last, elapsed = scrape(), time.monotonic() - began
            client.join(60)
            rows = _metric(last, "infergate_monitor_rows_total") - _metric(
                first, "infergate_monitor_rows_total"
            )
            evaluated = _metric(last, "infergate_monitor_windows_total", outcome="evaluated")
            dropped = _metric(last, "infergate_monitor_windows_total", outcome="dropped")
            eval_sum = _metric(last, "infergate_monitor_evaluation_duration_seconds_sum")
            return {
                "window_rows": window_rows,
                "seconds": elapsed,
                "rows_per_s": rows / elapsed,
                "rss_start_mib": rss[0],
                "rss_end_mib": rss[-1],
                "rss_max_mib": max(rss),
                "windows_evaluated": evaluated,
                "windows_dropped": dropped,
                "evaluation_ms_mean": eval_sum / max(evaluated, 1) * 1000,
                "frames_sent": sent.value,
            }
        finally:
            monitor.stop()


def bench_jit() -> dict[str, float]:
    probe = "import time; t = time.perf_counter(); import {0}; print(time.perf_counter() - t)"
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-jit-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for key, module in (
            ("numba_import_s", "numba"),
            ("cold_s", "monitor.stats"),
            ("warm_s", "monitor.stats"),
        ):
            done = subprocess.run(
                [sys.executable, "-c", probe.format(module)],
                cwd=ROOT,
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            out[key] = float(done.stdout.strip())
    return out
