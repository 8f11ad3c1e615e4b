"""Helpers for the feedback tests: sample and feedback bodies with explicit ids and times, a settable
wall clock, and the demo classifier's outputs computed by onnxruntime (the oracle of its predictions)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from protos import monitor_pb2

T0 = 1_800_000_000 * 10**9  # a prediction time on a 10 s window boundary
SECOND = 10**9


@dataclass
class Clock:
    """A settable wall clock in ns (the hub's ``wall_ns``)."""

    now: int = T0

    def __call__(self) -> int:
        return self.now


def set_feedback(root: Path, model: str, section: str) -> None:
    """Replace the ``[feedback]`` section of ``model``'s model.toml (the last section in the demo's)."""
    path = root / model / "model.toml"
    text = path.read_text(encoding="utf-8").split("\n[feedback]\n")[0]
    path.write_text(f"{text}\n[feedback]\n{section}", encoding="utf-8")


def tensor(message: Any, name: str, array: npt.NDArray[Any], datatype: str | None = None) -> None:
    names = {"float32": "FP32", "float64": "FP64", "int64": "INT64", "int32": "INT32"}
    a = np.ascontiguousarray(array)
    message.add(name=name, datatype=datatype or names[a.dtype.name], shape=list(a.shape), raw=a.tobytes())


def samples(model: str, version: str, ids: list[str], times: list[int], x: npt.NDArray[np.float32],
            outputs: dict[str, npt.NDArray[Any]], rate: float = 0.0) -> bytes:  # fmt: skip
    """A SampleBatch of one sample per request (one row each), stating ``rate`` as the gateway does."""
    batch = monitor_pb2.SampleBatch()
    for i, (rid, stamp) in enumerate(zip(ids, times, strict=True)):
        s = batch.samples.add(
            model=model, version=version, request_id=rid, timestamp_ns=stamp, sample_rate=rate
        )
        tensor(s.inputs, "input", x[i : i + 1])
        for name, array in outputs.items():
            tensor(s.outputs, name, array[i : i + 1])
    return batch.SerializeToString()


def feedback(model: str, ids: list[str], labels: npt.NDArray[Any], *, version: str = "",
             events: list[int] | None = None, name: str = "label") -> bytes:  # fmt: skip
    """A FeedbackBatch: one item per id, its label row ``labels[i]`` as a [1] tensor."""
    batch = monitor_pb2.FeedbackBatch()
    for i, rid in enumerate(ids):
        item = batch.items.add(request_id=rid, model=model, version=version)
        if events is not None:
            item.event_time_ns = events[i]
        tensor(item.labels, name, labels[i : i + 1])
    return batch.SerializeToString()


def classifier_outputs(root: Path, version: int, x: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[Any]]:
    """The demo classifier's outputs for ``x``, by onnxruntime."""
    session = ort.InferenceSession(str(root / "classifier" / str(version) / "model.onnx"))
    proba, label = session.run(["probabilities", "label"], {"input": x})
    return {"probabilities": proba, "label": label}


def demo_inputs(root: Path, rows: int, seed: int) -> npt.NDArray[np.float32]:
    with np.load(root / "classifier" / "1" / "reference.npz") as npz:
        ref = npz["input:input"]
    chosen: npt.NDArray[np.float32] = ref[np.random.default_rng(seed).integers(0, len(ref), rows)]
    return chosen.astype(np.float32)
