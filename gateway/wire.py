"""Inference responses encoded straight to protobuf wire bytes, from fields encoded once per version.

Why: every call built a ``ModelInferResponse`` message (its fields, an output tensor copied in from a
template, the raw contents) for gRPC to serialize. Joining pre-encoded fields instead took the answer's
share of a lone tiny call from 24.9-26.7 to 20.0-23.4 µs when each call follows a 0.8 ms pause, as calls
of a closed loop at C=1 do, and the data plane's back-to-back minimum from 102-116 to 88-100 µs (one
process per figure, three each; README "Why a lone call costs more than the echo server"). The data plane
answers ModelInfer and ModelStreamInfer with these bytes, and the server registers both methods with a
serializer that passes bytes through (:func:`passthrough`).

Contracts:

- :meth:`ResponseWire.encode` returns exactly the bytes of a ``ModelInferResponse`` with ``model_name``,
  ``model_version``, ``id`` (omitted when empty, as protobuf omits it), one ``outputs`` entry per output
  (name, datatype, shape) and one ``raw_output_contents`` entry per output, in the order given; parsing
  them gives the message the data plane built before (tests compare the two).
- An output's encoded tensor metadata is kept per (name, shape): at most :data:`TEMPLATES_MAX`, then the
  cache starts over.
- :func:`stream_response` wraps encoded response bytes as a ``ModelStreamInferResponse``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy.typing as npt

from gateway.codec import NUMPY_DTYPES, encode_array
from protos import inference_pb2 as pb
from protos.fields import field, field_head

__all__ = ["TEMPLATES_MAX", "ResponseWire", "answered_by", "passthrough", "stream_response"]

#: Encoded output tensor metadata kept per version (one per output name and batch shape seen).
TEMPLATES_MAX = 256

# Field numbers of ModelInferResponse (protos/inference.proto) and of ModelStreamInferResponse.
_MODEL_NAME, _MODEL_VERSION, _ID, _OUTPUTS, _RAW_OUTPUT_CONTENTS = 1, 2, 3, 5, 6
_STREAM_INFER_RESPONSE = 2


def _prefix(model: str, version: str) -> bytes:
    """The head of every response of ``model`` version ``version``: its first two fields."""
    return field(_MODEL_NAME, model.encode()) + field(_MODEL_VERSION, version.encode())


def answered_by(encoded: bytes, model: str, version: str) -> bool:
    """Whether ``encoded`` (from :meth:`ResponseWire.encode`) is an answer of ``model`` version
    ``version``, read from its head without parsing the rest."""
    return encoded.startswith(_prefix(model, version))


class ResponseWire:
    """The encoded responses of one version (module doc)."""

    __slots__ = ("_outputs", "_prefix", "_types")

    def __init__(self, model: str, version: str, datatypes: dict[str, str]) -> None:
        self._prefix = _prefix(model, version)
        #: Each output's datatype, and the numpy dtype whose arrays go out as their own bytes (None: BYTES).
        self._types = {
            name: (datatype, None if datatype == "BYTES" else NUMPY_DTYPES[datatype])
            for name, datatype in datatypes.items()
        }
        self._outputs: dict[tuple[str, tuple[int, ...]], bytes] = {}

    def encode(self, request_id: str, names: Sequence[str], arrays: Sequence[npt.NDArray[Any]]) -> bytes:
        """The response to request ``request_id`` carrying ``arrays`` as outputs ``names`` (same order)."""
        parts = [self._prefix]
        if request_id:
            encoded_id = request_id.encode()
            parts.append(field(_ID, encoded_id))
        outputs = self._outputs
        raws = []
        for name, array in zip(names, arrays, strict=True):
            datatype, dtype = self._types[name]
            shape = array.shape
            metadata = outputs.get((name, shape))
            if metadata is None:
                if len(outputs) >= TEMPLATES_MAX:
                    outputs.clear()
                tensor = pb.ModelInferResponse.InferOutputTensor(name=name, datatype=datatype, shape=shape)
                metadata = outputs[(name, shape)] = field(_OUTPUTS, tensor.SerializeToString())
            parts.append(metadata)
            # dtype None (BYTES) must not reach ==: numpy reads None as float64.
            raw = (
                array.tobytes()
                if dtype is not None and array.dtype == dtype
                else encode_array(array, datatype)
            )
            raws.append(field_head(_RAW_OUTPUT_CONTENTS, len(raw)))
            raws.append(raw)
        parts.extend(raws)
        return b"".join(parts)


def stream_response(encoded: bytes) -> bytes:
    """A ``ModelStreamInferResponse`` whose ``infer_response`` is the encoded response ``encoded``."""
    return field(_STREAM_INFER_RESPONSE, encoded)


def passthrough(response: Any) -> bytes:
    """The response serializer of methods the data plane answers with encoded bytes (messages are
    serialized, so a handler that builds one still works)."""
    return response if type(response) is bytes else response.SerializeToString()
