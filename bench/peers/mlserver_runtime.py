"""The MLServer peer of ``make bench-peers``: a custom MLServer 1.7.1 runtime that calls onnxruntime, behind
MLServer's adaptive batching.

Runs inside ``bench-out/peers/venv-mlserver`` (``bench/peers/mlserver.lock``), never in the project's venv:
it imports only mlserver, numpy and onnxruntime. :mod:`bench.peers.mlserver_setup` writes the
``settings.json`` and ``model-settings.json`` files that name it (``implementation =
"mlserver_runtime.OnnxRuntimeModel"``, ``parameters.uri`` = the ONNX file).

Contracts:

* ``load`` opens one onnxruntime CPU session with the comparison's settings: ``intra_op_num_threads = 1``,
  one inter-op thread, sequential execution, no spinning.
* ``predict`` takes the (adaptively batched) request's first input as FP32 rows and answers the graph's
  output under its ONNX name.
* Each call of ``predict`` records its row count in the histogram ``peer_batch_rows{model_name}``, made on
  prometheus_client's default registry, which MLServer's own metrics port serves (directly with
  ``parallel_workers = 0``; through its multiprocess collector from the workers otherwise). The benchmark
  reads the mean batch from it, because MLServer has no batch-size metric of its own. (``mlserver.log``
  is not used: with ``parallel_workers = 0`` MLServer 1.7.1 does not serve its custom-metrics registry.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
from mlserver import MLModel  # type: ignore[import-not-found]
from mlserver.codecs import NumpyCodec  # type: ignore[import-not-found]
from mlserver.types import InferenceRequest, InferenceResponse  # type: ignore[import-not-found]
from prometheus_client import REGISTRY, Histogram

#: Name of the histogram ``predict`` observes (rows per call).
BATCH_METRIC = "peer_batch_rows"


def batch_rows() -> Any:
    """The process's one rows-per-call histogram. MLServer may import this module more than once, so an
    existing one is taken from the registry rather than from a module global."""
    try:
        return Histogram(
            BATCH_METRIC,
            "rows per predict call of the benchmark runtime",
            ["model_name"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
        )
    except ValueError:  # already registered by an earlier import
        return REGISTRY._names_to_collectors[BATCH_METRIC]


def make_session(path: str) -> Any:
    """An onnxruntime CPU session with the comparison's settings (see the module contract)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


class OnnxRuntimeModel(MLModel):  # type: ignore[misc]
    """One ONNX graph with one input and one output (see the module contract)."""

    async def load(self) -> bool:
        self._session = make_session(str(self.settings.parameters.uri))
        (inp,), (out,) = self._session.get_inputs(), self._session.get_outputs()
        self._input, self._output = inp.name, out.name
        self._rows = batch_rows().labels(model_name=self.name)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        rows = np.ascontiguousarray(NumpyCodec.decode_input(payload.inputs[0]), dtype=np.float32)
        self._rows.observe(rows.shape[0])
        result = self._session.run([self._output], {self._input: rows})[0]
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output(self._output, result)],
        )
