"""The compute ceiling: in-process onnxruntime rows/s per batch size, with the gateway's session settings.

Contracts:

* :func:`measure` builds ``instances`` sessions with the options the gateway's runner uses
  (``intra_op_num_threads`` from ``[runtime].intra_op_threads``, one inter-op thread, sequential
  execution, all graph optimizations, CPU provider) and, per batch size, calls ``session.run`` from one
  thread per instance for ``seconds`` (at most ``max_calls`` calls per thread) after ``warmup_calls``.
  No gRPC, no encoding: this is what the model costs.
* Inputs are the registry's ``reference.npz`` rows when present (tiled to the batch size), else random
  data of the signature's shape and type.
* Returns one row per batch size: ``{"batch", "calls", "rows_per_s", "calls_per_s", "latency_ms":
  {"p50", "p99"}}``; timing uses ``time.perf_counter_ns``.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from registry.layout import default_version, scan_model
from registry.manifest import load_manifest
from registry.signature import numpy_dtype

__all__ = ["DEFAULT_BATCH_SIZES", "main", "measure"]

DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)


def _session(path: Path, threads: int) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _feeds(version_dir: Path, batch: int, seed: int) -> dict[str, npt.NDArray[Any]]:
    signature = load_manifest(version_dir / "manifest.json").signature
    reference = version_dir / "reference.npz"
    arrays: dict[str, npt.NDArray[Any]] = {}
    if reference.is_file():
        with np.load(reference, allow_pickle=False) as data:
            arrays = {key.removeprefix("input:"): data[key] for key in data.files if key.startswith("input:")}
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in signature.inputs:
        dtype = numpy_dtype(spec.datatype)
        if spec.name in arrays:
            source = arrays[spec.name]
            feeds[spec.name] = source[np.arange(batch) % len(source)].astype(dtype)
            continue
        shape = [batch if i == 0 and d == -1 else max(d, 1) for i, d in enumerate(spec.shape)]
        feeds[spec.name] = rng.normal(size=shape).astype(dtype)
    return feeds


def _calls(session: Any, feeds: dict[str, Any], deadline: int, max_calls: int, out: list[int]) -> None:
    for _ in range(max_calls):
        t0 = time.perf_counter_ns()
        session.run(None, feeds)
        t1 = time.perf_counter_ns()
        out.append(t1 - t0)
        if t1 >= deadline:
            return


def measure(
    registry: Path,
    model: str,
    *,
    version: int | None = None,
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES,
    seconds: float = 0.5,
    max_calls: int = 100_000,
    warmup_calls: int = 20,
    seed: int = 0,
) -> dict[str, Any]:
    """Rows/s per batch size (see the module contract), with the settings used."""
    info = scan_model(registry / model)
    chosen = version if version is not None else default_version(info, info.versions)
    if chosen is None:
        raise ValueError(f"{registry / model}: no READY version")
    runtime = info.config.runtime
    version_dir = info.version(chosen).path
    sessions = [
        _session(version_dir / "model.onnx", runtime.intra_op_threads) for _ in range(runtime.instances)
    ]
    rows = []
    for batch in batch_sizes:
        feeds = _feeds(version_dir, batch, seed)
        for session in sessions:
            for _ in range(warmup_calls):
                session.run(None, feeds)
        durations: list[list[int]] = [[] for _ in sessions]
        start = time.perf_counter_ns()
        deadline = start + int(seconds * 1e9)
        threads = [
            threading.Thread(target=_calls, args=(s, feeds, deadline, max_calls, d), daemon=True)
            for s, d in zip(sessions, durations, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(seconds + 60)
        wall = (time.perf_counter_ns() - start) / 1e9
        flat = np.concatenate([np.asarray(d, dtype=np.int64) for d in durations])
        rows.append(
            {
                "batch": batch,
                "calls": int(flat.size),
                "calls_per_s": flat.size / wall,
                "rows_per_s": flat.size * batch / wall,
                "latency_ms": {
                    "p50": float(np.percentile(flat, 50)) / 1e6,
                    "p99": float(np.percentile(flat, 99)) / 1e6,
                },
            }
        )
    return {
        "model": model,
        "version": chosen,
        "intra_op_threads": runtime.intra_op_threads,
        "instances": runtime.instances,
        "onnxruntime": ort.__version__,
        "seconds": seconds,
        "batches": rows,
    }


def main(argv: list[str]) -> int:
    """``infergate-load ceiling --registry DIR --model NAME [--version V] [--batch-sizes 1,8,64] ...``."""
    parser = argparse.ArgumentParser(
        prog="infergate-load ceiling", description="In-process onnxruntime rows/s."
    )
    parser.add_argument("--registry", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--version", type=int, default=None)
    parser.add_argument("--batch-sizes", default=",".join(map(str, DEFAULT_BATCH_SIZES)))
    parser.add_argument("--seconds", type=float, default=0.5, help="per batch size (default 0.5)")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    args = parser.parse_args(argv)
    sizes = tuple(int(x) for x in args.batch_sizes.split(","))
    result = measure(args.registry, args.model, version=args.version, batch_sizes=sizes, seconds=args.seconds)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'batch':>6} {'rows/s':>12} {'calls/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for row in result["batches"]:
        lat = row["latency_ms"]
        rates = f"{row['rows_per_s']:>12.0f} {row['calls_per_s']:>10.0f}"
        print(f"{row['batch']:>6} {rates} {lat['p50']:>8.3f} {lat['p99']:>8.3f}")
    return 0
