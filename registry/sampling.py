"""Which requests the gateway samples: the one deterministic rule both processes apply.

The gateway samples a request with a non-empty id when the first 8 bytes of the id's BLAKE2b digest, read
as a little-endian integer, fall below ``rate * 2**64``; a replay of the same ids samples the same requests,
and the monitor, told the rate, can tell a label for a request that was never sampled from one whose
prediction it should hold. Requests without an id are sampled at random by the gateway (not covered here).
"""

from __future__ import annotations

import hashlib

__all__ = ["would_sample"]

_SCALE = 2.0**64


def would_sample(request_id: str, rate: float) -> bool:
    """Whether the gateway samples the request with this non-empty ``request_id`` at ``rate`` (0..1)."""
    if rate <= 0.0:
        return False
    if rate >= 1.0:
        return True
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") < rate * _SCALE
