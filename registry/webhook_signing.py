"""Webhook signatures shared by the gateway (rollout events) and the monitor (drift and quality alerts).

A signed POST carries ``X-Infergate-Signature-256: sha256=<hex HMAC-SHA256 of the exact body bytes keyed
by the secret>``, as GitHub signs its webhooks, so one receiver checks events from both processes the
same way (:func:`hmac.compare_digest` against :func:`signature` of the body it read). Secrets come from
files read at each delivery (rotation), stripped of surrounding whitespace; they never reach logs.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

__all__ = ["SIGNATURE_HEADER", "signature", "signed_headers"]

SIGNATURE_HEADER = "X-Infergate-Signature-256"


def signature(secret: bytes, body: bytes) -> str:
    """The value of :data:`SIGNATURE_HEADER` for ``body``; receivers compare it with
    :func:`hmac.compare_digest`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def signed_headers(body: bytes, secret_file: Path | None) -> dict[str, str]:
    """JSON content type, plus the signature when ``secret_file`` is set (read now: a rotated file takes
    effect at the next delivery). OSError when the file cannot be read."""
    headers = {"Content-Type": "application/json"}
    if secret_file is not None:
        headers[SIGNATURE_HEADER] = signature(secret_file.read_bytes().strip(), body)
    return headers
