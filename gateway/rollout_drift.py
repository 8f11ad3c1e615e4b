"""The rollout's drift gate input: the monitor's verdict on a candidate, from ``GET /v1/drift``.

:class:`MonitorDrift` derives the HTTP base from the gateway's ``--monitor-url`` (``ws://host:port/...``
-> ``http://host:port``), sends the monitor's read token when ``--monitor-read-token-file`` is set, and
asks at most once per ``min_interval_s`` per version (the answer is cached in between). A version drifts
when its entry says ``drift`` or ``skew`` is true, or, with ``max_psi`` > 0, when a feature's PSI exceeds
it. No entry, an unreachable monitor or a bad answer give None (unknown), which never fails a gate.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from gateway.shipper import bearer_header

__all__ = ["MonitorDrift", "drift_url", "entry_drifts"]

log = logging.getLogger(__name__)


def drift_url(monitor_url: str) -> str:
    """``ws[s]://host:port/...`` -> ``http[s]://host:port/v1/drift``."""
    parts = urlsplit(monitor_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return f"{scheme}://{parts.netloc}/v1/drift"


def entry_drifts(entry: dict[str, Any], max_psi: float) -> bool:
    """The verdict on one ``/v1/drift`` model entry (module docstring)."""
    if entry.get("drift") is True or entry.get("skew") is True:
        return True
    if max_psi > 0:
        for feature in entry.get("features") or ():
            psi = feature.get("psi")
            if isinstance(psi, int | float) and psi > max_psi:
                return True
    return False


class MonitorDrift:
    """``await probe(model, version)`` -> True, False or None (module docstring)."""

    def __init__(
        self,
        monitor_url: str,
        *,
        token_file: Path | None = None,
        min_interval_s: float = 0.5,
    ) -> None:
        self.url = drift_url(monitor_url)
        self.token_file = token_file
        self.min_interval_s = min_interval_s
        self._cache: dict[tuple[str, int], tuple[float, bool | None]] = {}

    async def __call__(self, model: str, version: int, max_psi: float = 0.0) -> bool | None:
        key = (model, version)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < self.min_interval_s:
            return cached[1]
        verdict = await self._fetch(model, version, max_psi)
        self._cache[key] = (now, verdict)
        return verdict

    async def _fetch(self, model: str, version: int, max_psi: float) -> bool | None:
        try:
            headers = bearer_header(self.token_file)
            timeout = aiohttp.ClientTimeout(total=2.0)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(self.url, params={"model": model}, headers=headers) as response,
            ):
                if response.status != 200:
                    log.debug("rollout drift gate: monitor answered HTTP %d", response.status)
                    return None
                doc = await response.json()
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            log.debug("rollout drift gate: monitor unreachable: %s", type(exc).__name__)
            return None
        for entry in doc.get("models", []) if isinstance(doc, dict) else []:
            if (
                isinstance(entry, dict)
                and entry.get("model") == model
                and entry.get("version") == str(version)
            ):
                return entry_drifts(entry, max_psi)
        return None
