"""Feedback on the wire: a ``FeedbackBatch`` (binary) or its JSON form, as columns of items.

This module owns the edge of ``POST /v1/feedback``: :func:`parse_feedback` turns a body into
:class:`FeedbackItems` (one entry per item, in order) or raises SampleError("malformed") when the body
cannot be read at all (the only whole-batch failure). Items are not validated here beyond their form:
an item whose own fields are unusable (a tensor that is not a tensor, a time that is not an integer)
gets an ``invalid`` entry with its message, and the rest of the batch goes on.

JSON: ``{"items": [{"request_id", "model", "version"?, "labels", "event_time_ns"?, "prediction"?,
"prediction_time_ns"?}]}``; ``labels`` and ``prediction`` are a tensor, a list of tensors, or an object
of name -> tensor; a tensor is a number, a nested list of numbers, or ``{"name"?, "datatype", "shape",
"data"}`` (flat or nested ``data``). Arrays are built with numpy (no per-element Python work).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from monitor.errors import SampleError
from protos import monitor_pb2
from registry.signature import numpy_dtype

__all__ = ["FeedbackItems", "LabelColumns", "WireTensor", "as_wire", "parse_feedback", "wire_array"]


@dataclass(frozen=True)
class WireTensor:
    """One tensor as sent: ``datatype`` None when JSON gave bare numbers (then ``data`` holds them)."""

    name: str
    datatype: str | None
    shape: tuple[int, ...] | None
    raw: bytes | None = None
    data: Any = None


@dataclass(frozen=True)
class LabelColumns:
    """The one label tensor of every item of a binary batch, field by field."""

    name: tuple[str, ...]
    datatype: tuple[str, ...]
    raw: tuple[bytes, ...]
    shape: tuple[Sequence[int], ...]


_ITEM_FIELDS = attrgetter("request_id", "model", "version", "event_time_ns", "labels")
_TENSOR_FIELDS = attrgetter("name", "datatype", "raw", "shape")


@dataclass
class FeedbackItems:
    """Columns of a batch's items; ``invalid[i]`` is a message for an item unusable as sent, else None.
    A binary body keeps its items (``source``) and reads their tensors when asked; JSON fills
    ``label_lists``, ``prediction_lists`` and ``prediction_times``."""

    request_id: list[str]
    model: list[str]
    version: list[str]
    event_ns: npt.NDArray[np.int64]
    invalid: list[str | None]
    source: Sequence[Any] | None = None
    label_lists: list[list[WireTensor]] | None = None
    prediction_lists: list[list[WireTensor]] | None = None
    prediction_times: list[int] | None = None
    #: A binary body where every item has exactly one label tensor: their fields (the join's fast path).
    single: LabelColumns | None = None

    def __len__(self) -> int:
        return len(self.request_id)

    def labels(self, i: int) -> Sequence[Any]:
        """Item ``i``'s label tensors (WireTensor or monitor_pb2.Tensor)."""
        if self.source is not None:
            return self.source[i].labels  # type: ignore[no-any-return]
        assert self.label_lists is not None
        return self.label_lists[i]

    def prediction(self, i: int) -> Sequence[Any]:
        """Item ``i``'s carried prediction tensors (empty: none)."""
        if self.source is not None:
            return self.source[i].prediction  # type: ignore[no-any-return]
        assert self.prediction_lists is not None
        return self.prediction_lists[i]

    def prediction_ns(self, i: int) -> int:
        if self.source is not None:
            return int(self.source[i].prediction_time_ns)
        assert self.prediction_times is not None
        return self.prediction_times[i]


def parse_feedback(body: bytes, content_type: str) -> FeedbackItems:
    """Parse a body by its content type (``application/json``, else binary ``FeedbackBatch``)."""
    if content_type == "application/json":
        return _parse_json(body)
    batch = monitor_pb2.FeedbackBatch()
    try:
        batch.ParseFromString(body)
    except Exception as exc:  # DecodeError, and invalid UTF-8 in string fields, depending on the runtime
        raise SampleError("malformed", f"body is not a monitor.proto FeedbackBatch: {exc}") from None
    seq = batch.items
    n = len(seq)
    if n == 0:
        return FeedbackItems([], [], [], np.zeros(0, np.int64), [], source=seq)
    # One attrgetter call per item reads all its fields (faster than one comprehension per field).
    ids, models, versions, events, labels = zip(*map(_ITEM_FIELDS, seq), strict=True)
    out = FeedbackItems(list(ids), list(models), list(versions), np.array(events, np.int64), [None] * n, seq)
    if set(map(len, labels)) == {1}:
        names, datatypes, raws, shapes = zip(*map(_TENSOR_FIELDS, map(itemgetter(0), labels)), strict=True)
        out.single = LabelColumns(names, datatypes, raws, shapes)
    return out


def as_wire(t: WireTensor | monitor_pb2.Tensor) -> WireTensor:
    """``t`` as a WireTensor (a binary body's tensors stay protobuf objects until needed)."""
    return t if isinstance(t, WireTensor) else WireTensor(t.name, t.datatype, tuple(t.shape), t.raw)


def _parse_json(body: bytes) -> FeedbackItems:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise SampleError("malformed", f"body is not JSON: {exc}") from None
    raw_items = doc.get("items") if isinstance(doc, dict) else None
    if not isinstance(raw_items, list):
        raise SampleError("malformed", 'expected a JSON object {"items": [...]}')
    labels_of: list[list[WireTensor]] = []
    predictions_of: list[list[WireTensor]] = []
    times: list[int] = []
    out = FeedbackItems(
        [], [], [], np.zeros(len(raw_items), np.int64), [], None, labels_of, predictions_of, times
    )
    for i, item in enumerate(raw_items):
        problem: str | None = None
        rid = model = version = ""
        labels: list[WireTensor] = []
        prediction: list[WireTensor] = []
        stamp = 0
        try:
            if not isinstance(item, dict):
                raise ValueError("an item must be an object")
            rid, model, version = (_text(item, key) for key in ("request_id", "model", "version"))
            out.event_ns[i] = _integer(item, "event_time_ns")
            stamp = _integer(item, "prediction_time_ns")
            labels = _json_tensors(item.get("labels", item.get("label")))
            prediction = _json_tensors(item.get("prediction"))
        except ValueError as exc:
            problem = str(exc)
        out.request_id.append(rid)
        out.model.append(model)
        out.version.append(version)
        labels_of.append(labels)
        predictions_of.append(prediction)
        times.append(stamp)
        out.invalid.append(problem)
    return out


def _text(item: dict[str, Any], key: str) -> str:
    value = item.get(key, "")
    if not isinstance(value, str):
        raise ValueError(f"{key}: expected a string")
    return value


def _integer(item: dict[str, Any], key: str) -> int:
    value = item.get(key, 0)
    if type(value) is not int or not -(2**63) <= value < 2**63:
        raise ValueError(f"{key}: expected an integer (nanoseconds)")
    return value


def _json_tensors(value: Any) -> list[WireTensor]:
    if value is None:
        return []
    if isinstance(value, dict) and "data" not in value:
        return [_json_tensor(v, str(name)) for name, v in value.items()]
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return [_json_tensor(v, "") for v in value]
    return [_json_tensor(value, "")]


def _json_tensor(value: Any, name: str) -> WireTensor:
    if isinstance(value, dict):
        datatype, shape = value.get("datatype"), value.get("shape")
        if not isinstance(datatype, str):
            raise ValueError("a tensor needs a datatype string")
        if not isinstance(shape, list) or not all(type(d) is int for d in shape):
            raise ValueError("a tensor needs a shape (a list of integers)")
        return WireTensor(str(value.get("name", name)), datatype, tuple(shape), data=value.get("data"))
    return WireTensor(name, None, None, data=value)


def wire_array(tensor: WireTensor, datatype: str) -> npt.NDArray[Any]:
    """The tensor's values as an array of ``datatype`` (what the version expects); ValueError saying why
    when its datatype differs, or its bytes or data do not fill its shape."""
    dtype = numpy_dtype(datatype).newbyteorder("<")
    if tensor.datatype is not None and tensor.datatype != datatype:
        raise TypeError(f"datatype {tensor.datatype}, expected {datatype}")
    if tensor.raw is not None:
        shape = tensor.shape or ()
        if any(d < 0 for d in shape) or len(tensor.raw) != math.prod(shape) * dtype.itemsize:
            raise ValueError(f"raw holds {len(tensor.raw)} bytes, shape {list(shape)} of {datatype}")
        return np.frombuffer(tensor.raw, dtype=dtype).reshape(shape)
    try:
        array = np.asarray(tensor.data)
    except ValueError as exc:  # a ragged list
        raise ValueError(f"data is not a rectangular array: {exc}") from None
    if array.dtype.kind not in "biuf":
        raise ValueError("data: expected numbers")
    if array.dtype.kind == "f" and dtype.kind in "iu" and not np.array_equal(array, np.round(array)):
        raise TypeError(f"data holds fractions, expected {datatype}")
    if tensor.shape is not None:
        if math.prod(tensor.shape) != array.size:
            raise ValueError(f"data holds {array.size} values, shape {list(tensor.shape)}")
        array = array.reshape(tensor.shape)
    return array.astype(dtype)
