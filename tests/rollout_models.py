"""Rollout fixtures: a small classifier and its bad variants (same signature), built with onnx.helper.

Every variant maps x FP32[batch, 4] -> logits FP32[batch, 3], probs FP32[batch, 3]:

- :func:`classifier` (seed 0): the stable version; the same seed again is a good candidate.
- ``shuffled=True``: the output layer's columns permuted, so the predicted labels disagree.
- ``heavy=N``: adds N layers of a 256-wide MatMul on each row tiled 32 times, multiplied by zero and added
  to the logits: the same answers, much more compute (the p99 gate).
- ``failing_above=T``: adds a Gather whose index is 1000 for rows with x[0] > T (out of range: onnxruntime
  fails the whole batch) and 0 otherwise, multiplied by zero and added: the same answers on the rows it
  can take. Warm-up (zeros) and a golden check on rows below T pass.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17  # as tests/onnx_models.py (not imported: bench type-checks this module)
IR_VERSION = 9
FEATURES = 4
CLASSES = 3


def classifier(
    seed: int = 0, *, shuffled: bool = False, heavy: int = 0, failing_above: float | None = None
) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w1 = rng.normal(size=(FEATURES, 16)).astype(np.float32)
    w2 = rng.normal(size=(16, CLASSES)).astype(np.float32)
    if shuffled:
        w2 = w2[:, [1, 2, 0]]
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["base"]),
    ]
    extra: list[str] = []
    if heavy:
        extra.append(_heavy(nodes, inits, heavy))
    if failing_above is not None:
        extra.append(_failing(nodes, inits, failing_above))
    current = "base"
    for i, term in enumerate(extra):
        inits.append(numpy_helper.from_array(np.zeros((1, 1), np.float32), f"zero{i}"))
        nodes.append(helper.make_node("Mul", [term, f"zero{i}"], [f"nil{i}"]))
        nodes.append(helper.make_node("Add", [current, f"nil{i}"], [f"sum{i}"]))
        current = f"sum{i}"
    nodes.append(helper.make_node("Identity", [current], ["logits"]))
    nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1))
    graph = helper.make_graph(
        nodes,
        "classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES]),
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", CLASSES]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def _heavy(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], depth: int) -> str:
    """Rows tiled to 32 x 256 and pushed through ``depth`` MatMul+Tanh layers; returns a [batch, 1] name."""
    width = 256
    rng = np.random.default_rng(99)
    inits += [
        numpy_helper.from_array((rng.normal(size=(width, width)) / 16).astype(np.float32), "hw"),
        numpy_helper.from_array(np.array([-1, 1, FEATURES], np.int64), "as3d"),
        numpy_helper.from_array(np.array([1, 32, width // FEATURES], np.int64), "reps"),
    ]
    nodes += [
        helper.make_node("Reshape", ["x", "as3d"], ["hx"]),
        helper.make_node("Tile", ["hx", "reps"], ["h0"]),
    ]
    current = "h0"
    for layer in range(depth):
        nodes.append(helper.make_node("MatMul", [current, "hw"], [f"hm{layer}"]))
        nodes.append(helper.make_node("Tanh", [f"hm{layer}"], [f"ht{layer}"]))
        current = f"ht{layer}"
    nodes.append(helper.make_node("ReduceMean", [current], ["heavy3d"], axes=[1, 2], keepdims=1))
    nodes.append(helper.make_node("Reshape", ["heavy3d", "as_column"], ["heavy2d"]))
    inits.append(numpy_helper.from_array(np.array([-1, 1], np.int64), "as_column"))
    return "heavy2d"


def _failing(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], threshold: float) -> str:
    """Gather(table[2, 1], idx) with idx = 1000 where x[:, 0] > threshold; returns a [batch, 1] name."""
    inits += [
        numpy_helper.from_array(np.zeros((2, 1), np.float32), "table"),
        numpy_helper.from_array(np.array([0], np.int64), "col0"),
        numpy_helper.from_array(np.array([1], np.int64), "col1"),
        numpy_helper.from_array(np.array(threshold, np.float32), "limit"),
        numpy_helper.from_array(np.array(1000, np.int64), "far"),
    ]
    nodes += [
        helper.make_node("Slice", ["x", "col0", "col1", "col1"], ["x0"]),  # [batch, 1]
        helper.make_node("Greater", ["x0", "limit"], ["above"]),
        helper.make_node("Cast", ["above"], ["above_i"], to=TensorProto.INT64),
        helper.make_node("Mul", ["above_i", "far"], ["idx2d"]),
        helper.make_node("Squeeze", ["idx2d", "col1"], ["idx"]),  # [batch]
        helper.make_node("Gather", ["table", "idx"], ["gathered"], axis=0),  # [batch, 1]
    ]
    return "gathered"


def reference_logits(x: np.ndarray, seed: int = 0, *, shuffled: bool = False) -> np.ndarray:
    """The classifier's logits in numpy (the oracle for answers)."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(size=(FEATURES, 16)).astype(np.float32)
    w2 = rng.normal(size=(16, CLASSES)).astype(np.float32)
    if shuffled:
        w2 = w2[:, [1, 2, 0]]
    return np.maximum(x @ w1, 0) @ w2
