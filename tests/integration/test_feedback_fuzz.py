"""500 malformed feedback bodies and items against a token-guarded monitor: it keeps serving, answers each
with 200 and per-item reasons (400 for an unreadable body, 401 without the token, 413 over the limit),
joins nothing it should not, and its memory stays flat.

The monitor runs in this process (the real aiohttp server on 127.0.0.1:0); RSS is read from
/proc/self/status after a warm-up round of the same traffic, so imports and caches are already paid.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from monitor.app import METRICS
from protos import monitor_pb2
from tests.feedback_rig import T0, classifier_outputs, demo_inputs, feedback, samples
from tests.monitor_servers import RunningMonitor, guarded_demo, rss_kib, running_monitor

LIMIT = 64 * 1024
TOKEN = "fuzz-feedback-41c2"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
IDS = [f"p{i}" for i in range(64)]
GOOD = feedback("classifier", IDS[:8], np.zeros(8, np.int64))
KINDS = ("garbage", "flipped", "oversized", "unauthenticated", "tensor", "json")


def _bad_tensor(rng: random.Random) -> bytes:
    """An item for a stored prediction whose label tensor is wrong in one random way."""
    batch = monitor_pb2.FeedbackBatch()
    item = batch.items.add(
        request_id=rng.choice(IDS), model=rng.choice(["classifier", "classifier", "x-y", ""])
    )
    label = item.labels.add(
        name=rng.choice(["label", "", "other"]), datatype=rng.choice(["INT64", "FP32", "BYTES", "?"])
    )
    label.shape.extend(rng.choice([[1], [0], [-1], [2, 3], [1, 1], [2**62], [2**40, 2**40], []]))
    label.raw = rng.randbytes(rng.choice([0, 1, 8, 16, 48]))
    if rng.random() < 0.3:
        item.labels.add().CopyFrom(label)
    if rng.random() < 0.3:
        item.version = rng.choice(["1", "0", "01", "99", "v1", "-1"])
    if rng.random() < 0.3:
        item.prediction.add(name="probabilities", datatype="FP32", shape=[1, 2], raw=rng.randbytes(8))
        item.prediction_time_ns = rng.choice([0, -5, T0, 2**62])
    return batch.SerializeToString()


def _bad_json(rng: random.Random) -> bytes:
    values: list[Any] = [
        *(None, "x", 1.5, 1e300, [[1], [2, 3]], {"datatype": "INT64"}, [], {"a": {"b": []}}),
        *({"datatype": "INT64", "shape": [1], "data": [1.5]}, {"label": [1]}, [[[[0]]]]),
    ]
    item: Any = {
        "request_id": rng.choice([*IDS, 5, None]),
        "model": rng.choice(["classifier", 3]),
        "labels": rng.choice(values),
        "event_time_ns": rng.choice([0, "now", 1.0, 2**63 - 1]),
    }
    if rng.random() < 0.1:
        return (
            b'{"items": [{"request_id": "p1", "model": "classifier", "labels": 1234567890123456789012345}]}'
        )
    return orjson.dumps({"items": [item, rng.choice(values)]} if rng.random() < 0.8 else rng.choice(values))


def _bodies(rng: random.Random, count: int) -> list[tuple[str, bytes]]:
    bodies: list[tuple[str, bytes]] = []
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        if kind == "garbage":
            payload = rng.randbytes(rng.randrange(1, 2048))
        elif kind == "flipped":
            data = bytearray(GOOD)
            for _ in range(rng.randrange(1, 8)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            payload = bytes(data)
        elif kind == "oversized":
            payload = rng.randbytes(LIMIT + rng.randrange(1, 4096))
        elif kind == "tensor":
            payload = _bad_tensor(rng)
        elif kind == "json":
            payload = _bad_json(rng)
        else:
            payload = GOOD
        bodies.append((kind, payload))
    return bodies


async def _send(monitor: RunningMonitor, kind: str, payload: bytes) -> None:
    headers = {} if kind == "unauthenticated" else dict(HEADERS)
    headers["Content-Type"] = "application/json" if kind == "json" else "application/x-protobuf"
    async with monitor.http.post("/v1/feedback", data=payload, headers=headers) as response:
        if kind == "oversized":
            assert response.status == 413
            return
        answer = await response.json()
        if kind == "unauthenticated":
            assert response.status == 401
        elif kind == "tensor":
            assert response.status == 200, answer
            assert answer["joined"] == 0, answer  # every such item is wrong somewhere
        else:
            assert response.status in (200, 400), (response.status, answer)


async def test_fuzzed_feedback_keeps_it_serving_with_flat_memory(tmp_path: Path) -> None:
    config = guarded_demo(tmp_path, TOKEN, LIMIT)
    root = config.registry
    rng = random.Random(17)
    warmup, fuzz = _bodies(rng, 120), _bodies(rng, 500)
    x = demo_inputs(root, len(IDS), seed=1)
    out = classifier_outputs(root, 1, x)
    async with running_monitor(config) as monitor:
        predictions = samples("classifier", "1", IDS, [T0] * len(IDS), x, out)
        async with monitor.http.post("/v1/samples", data=predictions, headers=HEADERS) as response:
            assert response.status == 200
        for kind, payload in warmup:
            await _send(monitor, kind, payload)
        before = rss_kib()
        for kind, payload in fuzz:
            await _send(monitor, kind, payload)
        after = rss_kib()
        async with monitor.http.get("/healthz") as response:
            assert response.status == 200
        good = feedback("classifier", IDS[-4:], out["label"][-4:])
        headers = {**HEADERS, "Content-Type": "application/x-protobuf"}
        async with monitor.http.post("/v1/feedback", data=good, headers=headers) as response:
            assert (await response.json())["results"] == ["joined"] * 4
        registry = monitor.app[METRICS].registry
        refused = registry.get_sample_value("infergate_monitor_rejected_total", {"reason": "unauthorized"})
        assert refused == sum(kind == "unauthenticated" for kind, _ in warmup + fuzz)
    assert after - before < 32 * 1024, f"RSS grew by {after - before} KiB over 500 bodies"
