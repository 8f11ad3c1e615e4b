"""Signatures: reading ONNX files, V2 datatypes, dynamic dims, records, and breaking changes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from registry.errors import NotFoundError, SignatureError
from registry.signature import (
    ONNX_TO_V2,
    V2_DATATYPES,
    Signature,
    TensorSpec,
    breaking_changes,
    numpy_dtype,
    per_signature,
    read_signature,
)


def save(
    path: Path,
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: list[onnx.TensorProto] | None = None,
    *,
    check: bool = True,
) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    if check:
        onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def spec(name: str, datatype: str, *shape: int) -> TensorSpec:
    return TensorSpec(name, datatype, tuple(shape))


def test_datatype_tables_are_inverse_and_complete() -> None:
    assert set(V2_DATATYPES) == {
        "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
        "FP16", "FP32", "FP64", "BYTES",
    }  # fmt: skip
    assert {ONNX_TO_V2[e]: e for e in ONNX_TO_V2} == dict(V2_DATATYPES)
    assert V2_DATATYPES["FP32"] == TensorProto.FLOAT
    assert numpy_dtype("FP16") == np.float16
    assert numpy_dtype("BYTES") == np.object_
    with pytest.raises(SignatureError):
        numpy_dtype("BF16")


def test_every_v2_datatype_is_read(tmp_path: Path) -> None:
    names = list(V2_DATATYPES)
    path = save(
        tmp_path / "m.onnx",
        [helper.make_node("Identity", [f"in_{n}"], [f"out_{n}"]) for n in names],
        [helper.make_tensor_value_info(f"in_{n}", V2_DATATYPES[n], ["batch", 3]) for n in names],
        [helper.make_tensor_value_info(f"out_{n}", V2_DATATYPES[n], ["batch", 3]) for n in names],
    )
    signature = read_signature(path)
    assert signature.inputs == tuple(spec(f"in_{n}", n, -1, 3) for n in names)
    assert signature.outputs == tuple(spec(f"out_{n}", n, -1, 3) for n in names)


def test_dims_fixed_symbolic_and_unknown_and_order(tmp_path: Path) -> None:
    unknown_dim = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 4])
    unknown_dim.type.tensor_type.shape.dim[1].Clear()  # neither dim_value nor dim_param
    path = save(
        tmp_path / "m.onnx",
        [
            helper.make_node("Identity", ["b"], ["y"]),
            helper.make_node("Identity", ["a"], ["x"]),
            helper.make_node("Cast", ["c"], ["z"], to=TensorProto.FLOAT),
        ],
        [
            unknown_dim,
            helper.make_tensor_value_info("a", TensorProto.INT64, [2, 3, 5]),
            helper.make_tensor_value_info("c", TensorProto.UINT8, []),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "m"]),
            helper.make_tensor_value_info("x", TensorProto.INT64, [2, 3, 5]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, []),
        ],
    )
    signature = read_signature(path)
    assert signature.inputs == (spec("b", "FP32", -1, -1), spec("a", "INT64", 2, 3, 5), spec("c", "UINT8"))
    assert signature.outputs == (spec("y", "FP32", -1, -1), spec("x", "INT64", 2, 3, 5), spec("z", "FP32"))
    assert signature.input("a").shape == (2, 3, 5)
    assert signature.output("z").shape == ()
    with pytest.raises(KeyError):
        signature.input("y")


def test_initializers_listed_as_inputs_are_excluded(tmp_path: Path) -> None:
    weight = numpy_helper.from_array(np.ones((4, 2), dtype=np.float32), "w")
    path = save(
        tmp_path / "m.onnx",
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        [weight],
    )
    assert [s.name for s in read_signature(path).inputs] == ["x"]


def test_external_data_is_not_loaded(tmp_path: Path) -> None:
    weight = numpy_helper.from_array(np.ones((64, 64), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = tmp_path / "m.onnx"
    onnx.save(model, path, save_as_external_data=True, location="weights.bin", size_threshold=0)
    (tmp_path / "weights.bin").unlink()
    assert read_signature(path).outputs == (spec("y", "FP32", -1, 64),)


def test_output_without_shape_is_inferred(tmp_path: Path) -> None:
    path = save(
        tmp_path / "m.onnx",
        [helper.make_node("Add", ["x", "x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)],
        check=False,  # the checker wants output shapes, but some exporters leave them out
    )
    assert read_signature(path).outputs == (spec("y", "FP64", -1, 3),)


def test_unsupported_types_name_the_tensor(tmp_path: Path) -> None:
    bf16 = save(
        tmp_path / "bf16.onnx",
        [helper.make_node("Cast", ["weird"], ["y"], to=TensorProto.FLOAT)],
        [helper.make_tensor_value_info("weird", TensorProto.BFLOAT16, ["batch"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
    )
    with pytest.raises(SignatureError, match=r"'weird'.*BFLOAT16"):
        read_signature(bf16)
    seq = save(
        tmp_path / "seq.onnx",
        [helper.make_node("SequenceLength", ["items"], ["n"])],
        [helper.make_tensor_sequence_value_info("items", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("n", TensorProto.INT64, [])],
    )
    with pytest.raises(SignatureError, match=r"'items'.*sequence_type"):
        read_signature(seq)


def test_unreadable_and_missing_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff\x00 definitely not protobuf" * 10)
    with pytest.raises(SignatureError, match=r"junk\.onnx"):
        read_signature(junk)
    with pytest.raises(NotFoundError):
        read_signature(tmp_path / "absent.onnx")


@pytest.mark.parametrize(
    ("name", "datatype", "shape"),
    [
        ("", "FP32", (1,)),
        ("x", "FLOAT", (1,)),
        ("x", "FP32", (-2,)),
        ("x", "FP32", (True,)),
        ("x", "FP32", "12"),
    ],
)
def test_tensor_spec_validation(name: str, datatype: str, shape: tuple[int, ...]) -> None:
    with pytest.raises(SignatureError):
        TensorSpec(name, datatype, shape)


def test_signature_validation() -> None:
    with pytest.raises(SignatureError, match="duplicate"):
        Signature((spec("a", "FP32", 1), spec("a", "FP32", 2)), (spec("y", "FP32", 1),))
    with pytest.raises(SignatureError, match="no outputs"):
        Signature((spec("a", "FP32", 1),), ())
    both = Signature(
        (spec("a", "FP32", 1),), (spec("a", "FP32", 1),)
    )  # a pass-through output may share a name
    assert both.output("a") == both.input("a")


def test_from_dict_rejects_malformed_records() -> None:
    with pytest.raises(SignatureError):
        Signature.from_dict({"inputs": []})
    with pytest.raises(SignatureError):
        Signature.from_dict({"inputs": [], "outputs": [{"name": "y", "datatype": "FP32"}]})
    with pytest.raises(SignatureError):
        Signature.from_dict({"inputs": {}, "outputs": []})


specs = st.builds(
    TensorSpec,
    name=st.text(min_size=1, max_size=8),
    datatype=st.sampled_from(sorted(V2_DATATYPES)),
    shape=st.lists(st.integers(min_value=-1, max_value=1 << 40), max_size=4).map(tuple),
)
unique = st.lists(specs, max_size=4, unique_by=lambda s: s.name).map(tuple)


@given(inputs=unique, outputs=unique.filter(bool))
def test_signature_dict_round_trip(inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> None:
    signature = Signature(inputs, outputs)
    assert Signature.from_dict(signature.to_dict()) == signature
    assert breaking_changes(signature, signature) == []


BASE = Signature((spec("x", "FP32", -1, 4), spec("mask", "BOOL", -1, 4)), (spec("y", "FP32", -1, 2),))


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        (BASE, []),
        (
            Signature((spec("x", "FP32", 8, 4), spec("mask", "BOOL", 1, 4)), BASE.outputs),
            [],
        ),  # batch dim only
        (Signature((spec("x", "FP32", -1, -1), BASE.inputs[1]), BASE.outputs), []),  # input widened
        (Signature(BASE.inputs, (*BASE.outputs, spec("extra", "INT64", -1))), []),  # output added
        (
            Signature((spec("x", "FP64", -1, 4), BASE.inputs[1]), BASE.outputs),
            ["input 'x': datatype FP32 -> FP64"],
        ),
        (Signature((spec("x", "FP32", -1, 5), BASE.inputs[1]), BASE.outputs), ["input 'x': dim 1 4 -> 5"]),
        (Signature((spec("x", "FP32", -1, 4, 1), BASE.inputs[1]), BASE.outputs), ["input 'x': rank 2 -> 3"]),
        (Signature(BASE.inputs[:1], BASE.outputs), ["input 'mask' removed"]),
        (Signature((*BASE.inputs, spec("z", "FP32", -1)), BASE.outputs), ["input 'z' added"]),
        (Signature(BASE.inputs, (spec("y", "FP32", -1, -1),)), ["output 'y': dim 1 2 -> -1"]),
        (Signature(BASE.inputs, (spec("p", "FP32", -1, 2),)), ["output 'y' removed"]),
    ],
)
def test_breaking_changes(new: Signature, expected: list[str]) -> None:
    assert breaking_changes(BASE, new) == expected


def test_output_of_unknown_rank_is_refused(tmp_path: Path) -> None:
    path = save(
        tmp_path / "m.onnx",
        [helper.make_node("Mystery", ["x"], ["y"], domain="com.example")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        check=False,
    )
    with pytest.raises(SignatureError, match=r"'y': unknown rank"):
        read_signature(path)


def test_per_signature_builds_once_per_signature_object_and_stays_bounded() -> None:
    built: list[Signature] = []

    def build(signature: Signature) -> int:
        built.append(signature)
        return len(signature.inputs)

    derived = per_signature(build, limit=2)
    first = Signature(inputs=(TensorSpec("x", "FP32", (-1, 3)),), outputs=(TensorSpec("y", "FP32", (-1,)),))
    equal = Signature(inputs=first.inputs, outputs=first.outputs)  # equal, but another object
    assert derived(first) == 1
    assert derived(first) == 1
    assert built == [first]
    assert derived(equal) == 1
    assert built == [first, equal]  # by identity: an equal signature is its own entry
    third = Signature(inputs=(), outputs=first.outputs)
    assert derived(third) == 0  # past the limit the memo starts over
    assert derived(first) == 1
    assert built == [first, equal, third, first]
