"""The PyTriton peer of ``make bench-peers``: tritonserver 2.51 (bundled by nvidia-pytriton 0.7.0) with its
Python backend, one bound function per model that calls onnxruntime under Triton's dynamic batcher.

Runs inside ``bench-out/peers/venv-pytriton`` (``bench/peers/pytriton.lock``), never in the project's venv:
it imports only pytriton, numpy and onnxruntime, and nothing of this repository.

Contracts:

* ``python pytriton_server.py --grpc-port P --http-port H --metrics-port M NAME=MODEL.onnx ...`` serves
  every model under its NAME on 127.0.0.1 only (gRPC, HTTP, metrics), with ``max_batch_size`` 128 and
  ``max_queue_delay_microseconds`` 500; inputs and outputs are the ONNX graph's (one each, FP32, the
  leading dim the batch).
* onnxruntime runs as in every server of the comparison: ``intra_op_num_threads = 1``, one inter-op
  thread, sequential execution, no spinning, CPU.
* Readiness is the server's own (gRPC ServerReady / ModelReady); SIGTERM or SIGINT stops Triton and its
  backends. The caller sets ``LD_LIBRARY_PATH`` so the Python backend stub finds ``libpython3.11.so``.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch  # type: ignore[import-not-found]
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor  # type: ignore[import-not-found]
from pytriton.triton import Triton, TritonConfig  # type: ignore[import-not-found]

MAX_BATCH_SIZE = 128
MAX_QUEUE_DELAY_US = 500


def make_session(path: Path) -> Any:
    """An onnxruntime CPU session with the comparison's settings (see the module contract)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def bind_model(triton: Any, name: str, path: Path) -> None:
    session = make_session(path)
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    input_name, output_name = inp.name, out.name

    def infer(**inputs: Any) -> dict[str, Any]:
        rows = np.ascontiguousarray(inputs[input_name], dtype=np.float32)
        return {output_name: session.run([output_name], {input_name: rows})[0]}

    triton.bind(
        model_name=name,
        infer_func=batch(infer),
        inputs=[Tensor(name=input_name, dtype=np.float32, shape=(int(inp.shape[1]),))],
        outputs=[Tensor(name=output_name, dtype=np.float32, shape=(int(out.shape[1]),))],
        config=ModelConfig(
            max_batch_size=MAX_BATCH_SIZE,
            batcher=DynamicBatcher(max_queue_delay_microseconds=MAX_QUEUE_DELAY_US),
        ),
        strict=False,
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grpc-port", type=int, required=True)
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--metrics-port", type=int, required=True)
    p.add_argument("models", nargs="+", help="NAME=PATH.onnx")
    args = p.parse_args(argv)
    config = TritonConfig(
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        http_address="127.0.0.1",
        http_port=args.http_port,
        metrics_address="127.0.0.1",
        metrics_port=args.metrics_port,
        allow_gpu_metrics=False,
        exit_timeout_secs=5,
    )
    signal.signal(signal.SIGTERM, _interrupt)
    with Triton(config=config) as triton:
        for spec in args.models:
            name, _, path = spec.partition("=")
            bind_model(triton, name, Path(path))
        print(f"pytriton peer serving {', '.join(m.split('=')[0] for m in args.models)}", flush=True)
        triton.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
