"""The drift gate with a real monitor process: a candidate whose reference profile does not match the
traffic (its training data was unlike production) is rolled back by the drift gate, under load, with no
failed client request, as a canary and as a shadow; the stable version, whose reference matches, keeps
serving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from gateway.config import GatewayConfig
from registry.publish import publish
from tests.monitor_servers import MonitorProcess
from tests.rollout_models import FEATURES, classifier
from tests.rollout_rig import Traffic, check_answers, finished, metric, wait_state
from tests.servers import ServerThread

TOML = """\
[batching]
latency_budget_ms = 30000.0

[sampling]
rate = 1.0

[drift]
window_rows = 200  # calibrated PSI (the default) judges windows of at least 20 rows per decile
window_seconds = 3600.0
consecutive = 1

[rollout]
mode = "{mode}"
steps = [50, 100]
step_seconds = 3600.0
min_requests = 30
max_p99_ratio = 100.0
"""


#: Most a stable version's PSI may reach, over its threshold (module test: why not ``drift is False``).
STABLE_PSI_RATIO_MAX = 3.0


def _worst(entry: dict[str, Any] | None) -> float:
    """Largest PSI ÷ threshold over an entry's features (0 without one)."""
    if entry is None:
        return 0.0
    ratios = [f["psi"] / f["psi_threshold"] for f in entry["features"] if f.get("psi") is not None]
    return max(ratios, default=0.0)


def publish_with_reference(root: Path, tmp: Path, mean: float, tag: str) -> int:
    source = tmp / f"{tag}.onnx"
    onnx.save(classifier(), source)
    reference = tmp / f"{tag}.npz"
    rows = np.random.default_rng(7).normal(mean, 1.0, size=(2000, FEATURES)).astype(np.float32)
    np.savez(reference, **{"input:x": rows})
    return publish(root, "m", source, reference=reference).version


@pytest.mark.parametrize("mode", ["canary", "shadow"])
def test_a_drifting_candidate_is_rolled_back_by_the_drift_gate(tmp_path: Path, mode: str) -> None:
    """In shadow mode the monitor sees the candidate only through its sampled answers to the mirrored
    copies (shipped as ``<id>#shadow``)."""
    root = tmp_path / "registry"
    (root / "m").mkdir(parents=True)
    (root / "m" / "model.toml").write_text(TOML.replace("{mode}", mode))
    publish_with_reference(root, tmp_path, 0.0, "stable")  # traffic is N(0, 1): no drift
    monitor = MonitorProcess(root, tmp_path / "monitor.db", tmp_path / "monitor.log")
    server = None
    traffic = None
    try:
        config = GatewayConfig(
            root,
            port=0,
            metrics_port=None,
            poll_interval=0.1,
            rollout_tick_s=0.05,
            monitor_url=monitor.stream_url,
        )
        server = ServerThread(config)
        wait_state(root, lambda s: s.status == "idle", timeout=10)
        traffic = Traffic(server.target)
        publish_with_reference(root, tmp_path, 4.0, "drifting")  # trained on N(4, 1)
        state = wait_state(root, finished, timeout=90)
        traffic.stop()
        assert state.status == "rolled_back", state
        assert state.figures["gate"] == "drift", state
        assert state.figures["drift"] is True
        check_answers(traffic)
        assert metric(server, "infergate_rollout_gate_total", model="m", gate="drift", result="fail") == 1
        # The stable version's traffic matches its profile. Its last window may still cross the calibrated
        # PSI threshold by chance (the threshold's own false-positive rate: 1 failure in ~50 runs here when
        # this asserted drift is False; 24 passing runs put the worst ratio at 0.45-0.90), so it asserts
        # what no such chance reaches: every feature far below the shift the candidate's windows show.
        stable = monitor.entry("m", 1)
        assert _worst(stable) < STABLE_PSI_RATIO_MAX, stable
        assert _worst(monitor.entry("m", 2)) > 10 * STABLE_PSI_RATIO_MAX
    finally:
        if traffic is not None:
            traffic.stop()
        if server is not None:
            server.stop()
        monitor.stop()
