"""ONNX fixture models built with onnx.helper, and a registry of them for the gateway tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from registry.publish import publish
from registry.signature import V2_DATATYPES

OPSET = 17
IR_VERSION = 9

#: V2 datatype -> ONNX element type, for the per-dtype fixture models.
ONNX_TYPES = dict(V2_DATATYPES)


def _model(
    nodes: list[onnx.NodeProto], inputs: list, outputs: list, initializers: list | None = None
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def dtype_model(datatype: str) -> onnx.ModelProto:
    """x[batch, 3] -> y: Add(x, x) for numbers, Not(x) for BOOL, Identity for BYTES."""
    elem = ONNX_TYPES[datatype]
    op = {"BOOL": "Not", "BYTES": "Identity"}.get(datatype, "Add")
    node = helper.make_node(op, ["x", "x"] if op == "Add" else ["x"], ["y"])
    return _model(
        [node],
        [helper.make_tensor_value_info("x", elem, ["batch", 3])],
        [helper.make_tensor_value_info("y", elem, ["batch", 3])],
    )


def multi_io_model() -> onnx.ModelProto:
    """a FP32[batch, 4], b INT64[batch, 4] -> total = a + float(b), doubled = b * 2, rowmax FP32[batch]."""
    two = numpy_helper.from_array(np.array(2, dtype=np.int64), "two")
    nodes = [
        helper.make_node("Cast", ["b"], ["b_float"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["a", "b_float"], ["total"]),
        helper.make_node("Mul", ["b", "two"], ["doubled"]),
        helper.make_node("ReduceMax", ["a"], ["rowmax"], axes=[1], keepdims=0),
    ]
    return _model(
        nodes,
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("b", TensorProto.INT64, ["batch", 4]),
        ],
        [
            helper.make_tensor_value_info("total", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("doubled", TensorProto.INT64, ["batch", 4]),
            helper.make_tensor_value_info("rowmax", TensorProto.FLOAT, ["batch"]),
        ],
        [two],
    )


def fixed_model() -> onnx.ModelProto:
    """A model with no batch dim: x FP32[2, 3] -> y = Relu(x). max_batch_size is 0 for it."""
    return _model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )


def sequence_model() -> onnx.ModelProto:
    """x FP32[batch, steps, 4] (two dynamic dims) -> y = Tanh(x), s FP32[batch, 4] = ReduceSum over steps."""
    return _model(
        [
            helper.make_node("Tanh", ["x"], ["y"]),
            helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=0),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "steps", 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "steps", 4]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, ["batch", 4]),
        ],
        [numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
    )


def slow_model(width: int = 384, depth: int = 24, fanout: int = 64) -> onnx.ModelProto:
    """x FP32[batch, 4] -> y FP32[batch, width]: tiny requests, tens of ms of compute (for drain tests).

    Each row is tiled to ``fanout`` x ``width`` and pushed through ``depth`` MatMul+Tanh layers, then averaged
    back to one row, so the work depends on the input (nothing to constant-fold).
    """
    rng = np.random.default_rng(0)
    scale = np.sqrt(width)
    weight = numpy_helper.from_array((rng.normal(size=(width, width)) / scale).astype(np.float32), "w")
    initializers = [
        weight,
        numpy_helper.from_array(np.array([1, fanout, width // 4], dtype=np.int64), "repeats"),
        numpy_helper.from_array(np.array([-1, 1, 4], dtype=np.int64), "as_3d"),
    ]
    nodes = [
        helper.make_node("Reshape", ["x", "as_3d"], ["x3"]),
        helper.make_node("Tile", ["x3", "repeats"], ["t_in"]),
    ]
    current = "t_in"
    for layer in range(depth):
        nodes.append(helper.make_node("MatMul", [current, "w"], [f"m{layer}"]))
        current = f"t{layer}"
        nodes.append(helper.make_node("Tanh", [f"m{layer}"], [current]))
    nodes.append(helper.make_node("ReduceMean", [current], ["y"], axes=[1], keepdims=0))
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        initializers,
    )


def fixture_models() -> dict[str, onnx.ModelProto]:
    """Every fixture model by registry name."""
    models = {f"dtype_{dt.lower()}": dtype_model(dt) for dt in ONNX_TYPES}
    models["multi_io"] = multi_io_model()
    models["fixed"] = fixed_model()
    models["sequence"] = sequence_model()
    return models


def build_registry(
    root: Path, models: dict[str, onnx.ModelProto], *, toml: dict[str, str] | None = None
) -> Path:
    """Saves each model and publishes it as version 1 of ``root/<name>``; ``toml`` adds model.toml texts."""
    root.mkdir(parents=True, exist_ok=True)
    sources = root.parent / f"{root.name}-onnx"
    sources.mkdir(exist_ok=True)
    for name, model in models.items():
        path = sources / f"{name}.onnx"
        onnx.save(model, path)
        if toml and name in toml:
            (root / name).mkdir(exist_ok=True)
            (root / name / "model.toml").write_text(toml[name])
        publish(root, name, path)
    return root


def mlp_model(features: int = 16, hidden: int = 32, classes: int = 4, seed: int = 0) -> onnx.ModelProto:
    """x FP32[batch, features] -> Gemm + Relu -> Gemm -> logits FP32[batch, classes], Softmax -> probs."""
    rng = np.random.default_rng(seed)
    initializers = [
        numpy_helper.from_array(rng.normal(size=(features, hidden)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(size=(hidden,)).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(size=(hidden, classes)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(size=(classes,)).astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes]),
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", classes]),
        ],
        initializers,
    )


def gather_model(table_rows: int = 4) -> onnx.ModelProto:
    """idx INT64[batch] -> y FP32[batch, 2] = table[idx]; an index out of range makes onnxruntime fail."""
    table = numpy_helper.from_array(
        np.arange(table_rows * 2, dtype=np.float32).reshape(table_rows, 2), "table"
    )
    return _model(
        [helper.make_node("Gather", ["table", "idx"], ["y"], axis=0)],
        [helper.make_tensor_value_info("idx", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        [table],
    )
