"""``--workers 2`` during a rollout: two gateway processes follow one rollout.json. Each transition is
written by one of them (compare-and-replace) and adopted by the other, the candidate is promoted, and no
client request fails. Real subprocesses, real tritonclient traffic."""

from __future__ import annotations

import signal
import time
import urllib.request
from pathlib import Path

from registry.rollout import read_state
from tests.collector import free_port
from tests.rollout_models import classifier
from tests.rollout_rig import (
    Traffic,
    check_answers,
    finished,
    publish_model,
    rollout_toml,
    wait_state,
)
from tests.workers_rig import gateway_workers


def scrape(port: int, name: str, **labels: str) -> float | None:
    """The sum of the matching samples on the worker's /metrics; None when there is none."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items())
    ]
    return sum(values) if values else None


def test_two_workers_agree_on_one_rollout(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    (root / "m").mkdir(parents=True)
    (root / "m" / "model.toml").write_text(rollout_toml(steps="[50, 100]", min_requests=20))
    publish_model(root, classifier(), "stable")
    port, metrics = free_port(), free_port()
    options = ("--port", str(port), "--metrics-port", str(metrics), "--no-sampling", "--poll-interval", "0.1")
    traffic = None
    with gateway_workers(root, 2, *options) as gateway:
        try:
            ports = sorted(m for _, _, _, m in (gateway.next_ready(), gateway.next_ready()))
            wait_state(root, lambda s: s.status == "idle", timeout=20)
            traffic = Traffic(f"127.0.0.1:{port}", threads=6)
            publish_model(root, classifier(), "candidate")
            state = wait_state(root, finished, timeout=90)
            traffic.stop()
            assert state.status == "promoted", state
            check_answers(traffic)
            assert len(traffic.answers) > 0
            # Each transition was written once, by whichever worker judged it first; the other adopted it.
            # (The writer announces it once its table has reloaded, just after the state file.)
            deadline = time.monotonic() + 20
            for event, count in (("started", 1), ("step", 1), ("promoted", 1)):
                while True:
                    seen = [scrape(p, "infergate_rollout_events_total", event=event) or 0.0 for p in ports]
                    if sum(seen) >= count or time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
                assert sum(seen) == count, (event, seen)
            while any(scrape(p, "infergate_rollout_step", version="2") not in (-1.0, None) for p in ports):
                assert time.monotonic() < deadline, "a worker still shows the rollout running"
                time.sleep(0.05)
            assert read_state(root / "m") == state
            gateway.process.send_signal(signal.SIGTERM)
            assert gateway.process.wait(60) == 0
        finally:
            if traffic is not None:
                traffic.stop()
