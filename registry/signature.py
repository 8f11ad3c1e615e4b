"""Model signatures: the V2 view of an ONNX model's inputs and outputs.

This module owns the mapping between V2 (Open Inference Protocol) datatype names and ONNX element types,
the immutable :class:`TensorSpec` / :class:`Signature` records stored in every manifest, reading a
signature out of an ``.onnx`` file (with the ``onnx`` format library only, never onnxruntime), and the
rule for what counts as a breaking signature change between two versions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import numpy as np
import onnx
from onnx import TensorProto

from registry.errors import NotFoundError, SignatureError

__all__ = [
    "DYNAMIC",
    "ONNX_TO_V2",
    "V2_DATATYPES",
    "Signature",
    "TensorSpec",
    "breaking_changes",
    "numpy_dtype",
    "per_signature",
    "read_signature",
]

DYNAMIC = -1
"""The dimension value used for a dynamic (symbolic or unknown) dimension."""

V2_DATATYPES: Mapping[str, int] = MappingProxyType(
    {
        "BOOL": TensorProto.BOOL,
        "UINT8": TensorProto.UINT8,
        "UINT16": TensorProto.UINT16,
        "UINT32": TensorProto.UINT32,
        "UINT64": TensorProto.UINT64,
        "INT8": TensorProto.INT8,
        "INT16": TensorProto.INT16,
        "INT32": TensorProto.INT32,
        "INT64": TensorProto.INT64,
        "FP16": TensorProto.FLOAT16,
        "FP32": TensorProto.FLOAT,
        "FP64": TensorProto.DOUBLE,
        "BYTES": TensorProto.STRING,
    }
)
"""V2 datatype name -> ONNX ``TensorProto`` element type."""

ONNX_TO_V2: Mapping[int, str] = MappingProxyType({elem: name for name, elem in V2_DATATYPES.items()})
"""ONNX ``TensorProto`` element type -> V2 datatype name (the inverse of :data:`V2_DATATYPES`)."""

_NUMPY_DTYPES: Mapping[str, np.dtype[Any]] = MappingProxyType(
    {
        "BOOL": np.dtype(np.bool_),
        "UINT8": np.dtype(np.uint8),
        "UINT16": np.dtype(np.uint16),
        "UINT32": np.dtype(np.uint32),
        "UINT64": np.dtype(np.uint64),
        "INT8": np.dtype(np.int8),
        "INT16": np.dtype(np.int16),
        "INT32": np.dtype(np.int32),
        "INT64": np.dtype(np.int64),
        "FP16": np.dtype(np.float16),
        "FP32": np.dtype(np.float32),
        "FP64": np.dtype(np.float64),
        "BYTES": np.dtype(np.object_),
    }
)


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    """The numpy dtype that holds V2 ``datatype`` (``object`` for BYTES); SignatureError if unknown."""
    try:
        return _NUMPY_DTYPES[datatype]
    except KeyError:
        raise SignatureError(f"unknown V2 datatype {datatype!r}") from None


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor: V2 datatype and shape, with :data:`DYNAMIC` (-1) for a dynamic dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise SignatureError(f"tensor name must be a non-empty string, got {self.name!r}")
        if self.datatype not in V2_DATATYPES:
            raise SignatureError(f"tensor {self.name!r}: unknown V2 datatype {self.datatype!r}")
        shape = tuple(self.shape) if isinstance(self.shape, list | tuple) else None
        if shape is None or not all(type(d) is int and d >= DYNAMIC for d in shape):
            raise SignatureError(
                f"tensor {self.name!r}: shape must be a sequence of ints >= -1, got {self.shape!r}"
            )
        object.__setattr__(self, "shape", shape)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"name", "datatype", "shape"}``."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        """Inverse of :meth:`to_dict`; SignatureError on a missing or malformed field."""
        if not isinstance(data, Mapping) or set(data) != {"name", "datatype", "shape"}:
            raise SignatureError(f"tensor spec must have exactly name, datatype and shape, got {data!r}")
        return cls(name=data["name"], datatype=data["datatype"], shape=data["shape"])


@dataclass(frozen=True)
class Signature:
    """A model's graph inputs (initializers excluded) and outputs, in graph order; names unique per side."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def __post_init__(self) -> None:
        for side in ("inputs", "outputs"):
            specs = getattr(self, side)
            if not isinstance(specs, list | tuple) or not all(isinstance(s, TensorSpec) for s in specs):
                raise SignatureError(f"signature {side} must be a sequence of TensorSpec")
            names = [s.name for s in specs]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise SignatureError(f"signature {side}: duplicate tensor names {duplicates}")
            object.__setattr__(self, side, tuple(specs))
        if not self.outputs:
            raise SignatureError("signature has no outputs")

    def input(self, name: str) -> TensorSpec:
        """The input called ``name``; KeyError if there is none."""
        return _find(self.inputs, name)

    def output(self, name: str) -> TensorSpec:
        """The output called ``name``; KeyError if there is none."""
        return _find(self.outputs, name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"inputs": [...], "outputs": [...]}``."""
        return {"inputs": [s.to_dict() for s in self.inputs], "outputs": [s.to_dict() for s in self.outputs]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        """Inverse of :meth:`to_dict`; SignatureError on a missing or malformed field."""
        if not isinstance(data, Mapping) or set(data) != {"inputs", "outputs"}:
            raise SignatureError("signature must have exactly 'inputs' and 'outputs'")
        sides = []
        for side in ("inputs", "outputs"):
            if not isinstance(data[side], list):
                raise SignatureError(f"signature {side} must be a list")
            sides.append(tuple(TensorSpec.from_dict(item) for item in data[side]))
        return cls(inputs=sides[0], outputs=sides[1])


T = TypeVar("T")


def per_signature(build: Callable[[Signature], T], limit: int = 1024) -> Callable[[Signature], T]:
    """``build`` memoised per :class:`Signature` object, for what a hot path derives from a signature
    once (specs by name, validation plans). Keyed by identity, so a look-up hashes nothing; the signature
    is kept beside its value, so a recycled ``id`` is never mistaken for it. At most ``limit`` entries
    (signatures come and go with versions): past that the memo starts over."""
    memo: dict[int, tuple[Signature, T]] = {}

    def derived(signature: Signature) -> T:
        cached = memo.get(id(signature))
        if cached is not None and cached[0] is signature:
            return cached[1]
        value = build(signature)
        if len(memo) >= limit:
            memo.clear()
        memo[id(signature)] = (signature, value)
        return value

    return derived


def _find(specs: tuple[TensorSpec, ...], name: str) -> TensorSpec:
    for spec in specs:
        if spec.name == name:
            return spec
    raise KeyError(name)


def breaking_changes(old: Signature, new: Signature) -> list[str]:
    """Why clients of ``old`` would break against ``new``, one line each; empty when compatible.

    Breaking: an input added or removed, an output removed, a changed datatype or rank, or a changed
    non-batch dimension (every dimension after the first). Not breaking: a new output, any change of
    the batch dimension (dim 0), and an input dimension that becomes dynamic (it accepts more).
    """
    problems: list[str] = []
    for side, old_specs, new_specs in (
        ("input", old.inputs, new.inputs),
        ("output", old.outputs, new.outputs),
    ):
        old_by_name = {s.name: s for s in old_specs}
        new_by_name = {s.name: s for s in new_specs}
        problems.extend(f"{side} {n!r} removed" for n in old_by_name if n not in new_by_name)
        if side == "input":
            problems.extend(f"input {n!r} added" for n in new_by_name if n not in old_by_name)
        for name, was in old_by_name.items():
            now = new_by_name.get(name)
            if now is None:
                continue
            if was.datatype != now.datatype:
                problems.append(f"{side} {name!r}: datatype {was.datatype} -> {now.datatype}")
            if len(was.shape) != len(now.shape):
                problems.append(f"{side} {name!r}: rank {len(was.shape)} -> {len(now.shape)}")
                continue
            for axis, (a, b) in enumerate(zip(was.shape[1:], now.shape[1:], strict=True), start=1):
                widened = side == "input" and b == DYNAMIC
                if a != b and not widened:
                    problems.append(f"{side} {name!r}: dim {axis} {a} -> {b}")
    return problems


def read_signature(onnx_path: Path) -> Signature:
    """Read the V2 signature of the model in ``onnx_path`` without loading external tensor data.

    Graph inputs that are initializers are excluded. Symbolic or unknown dimensions become -1. An output
    whose shape the file does not record is filled in by ONNX shape inference. SignatureError names the
    tensor whose type is not a V2 tensor type or whose rank stays unknown; NotFoundError if no file.
    """
    if not onnx_path.is_file():
        raise NotFoundError(f"{onnx_path}: no such ONNX file")
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends; report them all the same way
        raise SignatureError(f"{onnx_path}: not a readable ONNX model: {exc}") from exc
    graph = model.graph
    initializers = {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
    inputs = [vi for vi in graph.input if vi.name not in initializers]
    outputs = list(graph.output)
    if any(_unknown_rank(vi) for vi in outputs):
        inferred = _infer_outputs(model)
        outputs = [inferred.get(vi.name, vi) if _unknown_rank(vi) else vi for vi in outputs]
    try:
        return Signature(
            inputs=tuple(_tensor_spec(vi) for vi in inputs), outputs=tuple(_tensor_spec(vi) for vi in outputs)
        )
    except SignatureError as exc:
        raise SignatureError(f"{onnx_path}: {exc}") from None


def _unknown_rank(value_info: onnx.ValueInfoProto) -> bool:
    kind = value_info.type.WhichOneof("value")
    return kind == "tensor_type" and not value_info.type.tensor_type.HasField("shape")


def _infer_outputs(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is best effort; the caller reports the unknown rank
        return {}
    return {vi.name: vi for vi in inferred.graph.output}


def _tensor_spec(value_info: onnx.ValueInfoProto) -> TensorSpec:
    name = value_info.name
    kind = value_info.type.WhichOneof("value")
    if kind != "tensor_type":
        raise SignatureError(f"tensor {name!r}: ONNX type {kind or 'unset'} is not a dense tensor")
    tensor_type = value_info.type.tensor_type
    elem = tensor_type.elem_type
    if elem not in ONNX_TO_V2:
        onnx_name = TensorProto.DataType.Name(elem) if elem in TensorProto.DataType.values() else str(elem)
        raise SignatureError(f"tensor {name!r}: ONNX element type {onnx_name} has no V2 datatype")
    if not tensor_type.HasField("shape"):
        raise SignatureError(f"tensor {name!r}: unknown rank")
    shape = tuple(
        d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else DYNAMIC
        for d in tensor_type.shape.dim
    )
    return TensorSpec(name=name, datatype=ONNX_TO_V2[elem], shape=shape)
