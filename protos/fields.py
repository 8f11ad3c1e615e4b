"""Protobuf wire encoding of length-delimited fields, for code that writes messages as bytes directly
(the gateway's answers, :mod:`gateway.wire`; the echo server's canned responses, :mod:`loadtests.echo`).

Contract: :func:`field` is the exact encoding protobuf writes for a ``bytes``, ``string`` or message field
``number`` holding ``data``: the tag (wire type 2), the length as a varint, the bytes.
"""

from __future__ import annotations

__all__ = ["field", "field_head"]

_LENGTH_DELIMITED = 2


#: Heads of fields 1-15 holding fewer than 128 bytes (one byte of tag, one of length), made once: the
#: common case (a request id, a small output) is a table look-up instead of a varint loop.
_SHORT_HEADS = tuple(
    tuple(bytes((number << 3 | _LENGTH_DELIMITED, length)) for length in range(0x80)) for number in range(16)
)


def field_head(number: int, length: int) -> bytes:
    """The tag and length that precede ``length`` bytes of length-delimited field ``number``."""
    if length < 0x80 and 0 < number < 16:
        return _SHORT_HEADS[number][length]
    out = bytearray()
    for value in (number << 3 | _LENGTH_DELIMITED, length):
        while value > 0x7F:
            out.append((value & 0x7F) | 0x80)
            value >>= 7
        out.append(value)
    return bytes(out)


def field(number: int, data: bytes) -> bytes:
    """Length-delimited field ``number`` holding ``data``, encoded."""
    return field_head(number, len(data)) + data
