from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SampleBatch(_message.Message):
    __slots__ = ("samples",)
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    samples: _containers.RepeatedCompositeFieldContainer[Sample]
    def __init__(self, samples: _Optional[_Iterable[_Union[Sample, _Mapping]]] = ...) -> None: ...

class Sample(_message.Message):
    __slots__ = ("model", "version", "request_id", "timestamp_ns", "inputs", "outputs", "monotonic_ns", "sample_rate", "rows", "request_ids", "timestamps_ns", "monotonics_ns")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_NS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    MONOTONIC_NS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_IDS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_NS_FIELD_NUMBER: _ClassVar[int]
    MONOTONICS_NS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    request_id: str
    timestamp_ns: int
    inputs: _containers.RepeatedCompositeFieldContainer[Tensor]
    outputs: _containers.RepeatedCompositeFieldContainer[Tensor]
    monotonic_ns: int
    sample_rate: float
    rows: _containers.RepeatedScalarFieldContainer[int]
    request_ids: _containers.RepeatedScalarFieldContainer[str]
    timestamps_ns: _containers.RepeatedScalarFieldContainer[int]
    monotonics_ns: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., request_id: _Optional[str] = ..., timestamp_ns: _Optional[int] = ..., inputs: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., monotonic_ns: _Optional[int] = ..., sample_rate: _Optional[float] = ..., rows: _Optional[_Iterable[int]] = ..., request_ids: _Optional[_Iterable[str]] = ..., timestamps_ns: _Optional[_Iterable[int]] = ..., monotonics_ns: _Optional[_Iterable[int]] = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ("name", "datatype", "shape", "raw")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    name: str
    datatype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    raw: bytes
    def __init__(self, name: _Optional[str] = ..., datatype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., raw: _Optional[bytes] = ...) -> None: ...

class FeedbackBatch(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Feedback]
    def __init__(self, items: _Optional[_Iterable[_Union[Feedback, _Mapping]]] = ...) -> None: ...

class Feedback(_message.Message):
    __slots__ = ("request_id", "model", "version", "labels", "event_time_ns", "prediction", "prediction_time_ns")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model: str
    version: str
    labels: _containers.RepeatedCompositeFieldContainer[Tensor]
    event_time_ns: int
    prediction: _containers.RepeatedCompositeFieldContainer[Tensor]
    prediction_time_ns: int
    def __init__(self, request_id: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[str] = ..., labels: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., event_time_ns: _Optional[int] = ..., prediction: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., prediction_time_ns: _Optional[int] = ...) -> None: ...
