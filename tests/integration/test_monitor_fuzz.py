"""500 malformed, oversized or unauthenticated frames and bodies against a token-guarded monitor: it keeps
serving, refuses each with a 4xx or a close code, lets nothing into the windows, and its memory stays flat.

The monitor runs in this process (the real aiohttp server on 127.0.0.1:0); RSS is read from
/proc/self/status after a warm-up round of the same traffic, so imports and caches are already paid.
"""

from __future__ import annotations

import random
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from monitor.app import METRICS
from tests.monitor_oracles import sample_batch
from tests.monitor_servers import RunningMonitor, guarded_demo, rss_kib, running_monitor

LIMIT = 64 * 1024
TOKEN = "fuzz-ingest-6e1d"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
GOOD = sample_batch("classifier", "1", {"input": np.zeros((4, 16), np.float32)})


def _frames(rng: random.Random, count: int) -> list[tuple[str, bytes]]:
    """(kind, payload) pairs: garbage, truncated and bit-flipped batches, oversized, and text."""
    frames: list[tuple[str, bytes]] = []
    for i in range(count):
        kind = ("garbage", "truncated", "flipped", "oversized", "text", "unauthenticated")[i % 6]
        if kind == "garbage":
            payload = rng.randbytes(rng.randrange(1, 2048))
        elif kind == "truncated":
            payload = GOOD[: rng.randrange(1, len(GOOD))]
        elif kind == "flipped":
            data = bytearray(GOOD)
            for _ in range(rng.randrange(1, 8)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            payload = bytes(data)
        elif kind == "oversized":
            payload = rng.randbytes(LIMIT + rng.randrange(1, 4096))
        else:
            payload = GOOD
        frames.append((kind, payload))
    return frames


async def _send(monitor: RunningMonitor, kind: str, payload: bytes, via_socket: bool) -> None:
    headers = {} if kind == "unauthenticated" else HEADERS
    http = monitor.http
    if not via_socket:
        async with http.post("/v1/samples", data=payload, headers=headers) as response:
            if kind == "unauthenticated":
                assert response.status == 401
            elif kind == "oversized":
                assert response.status == 413
            else:
                assert response.status in (200, 400), response.status  # a flipped bit may still parse
        return
    if kind == "unauthenticated":
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await http.ws_connect("/v1/samples/stream")
        return
    async with http.ws_connect("/v1/samples/stream", headers=headers, max_msg_size=0) as ws:
        if kind == "text":
            await ws.send_str(payload.decode("latin-1"))
        else:
            await ws.send_bytes(payload)
        await ws.send_bytes(GOOD)  # a frame after the bad one: the socket is closed or still takes it
        await ws.close()


async def test_fuzzed_frames_keep_it_serving_with_flat_memory(tmp_path: Path) -> None:
    config = guarded_demo(tmp_path, TOKEN, LIMIT)
    rng = random.Random(15)
    warmup, fuzz = _frames(rng, 120), _frames(rng, 500)
    async with running_monitor(config) as monitor:
        for i, (kind, payload) in enumerate(warmup):  # the same traffic first, so caches are paid
            await _send(monitor, kind, payload, via_socket=i % 2 == 0)
        before = rss_kib()
        for i, (kind, payload) in enumerate(fuzz):
            await _send(monitor, kind, payload, via_socket=i % 2 == 0)
        after = rss_kib()
        async with monitor.http.get("/healthz") as response:
            assert response.status == 200
        async with monitor.http.post("/v1/samples", data=GOOD, headers=HEADERS) as response:
            assert (response.status, await response.json()) == (200, {"rows": 4})
        registry = monitor.app[METRICS].registry
        refused = registry.get_sample_value("infergate_monitor_rejected_total", {"reason": "unauthorized"})
        assert refused == sum(kind == "unauthenticated" for kind, _ in warmup + fuzz)
    assert after - before < 32 * 1024, f"RSS grew by {after - before} KiB over 500 frames"
