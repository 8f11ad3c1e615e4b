"""The rollout controller on a fake clock: no wall time decides a step. A real ModelTable (onnxruntime
sessions) serves the registry; the windows are filled through the public recording API, the clock is
moved by hand, and each :meth:`RolloutController.tick` is awaited."""

from __future__ import annotations

from pathlib import Path

import onnx
from prometheus_client import CollectorRegistry

from gateway.models import ModelTable
from gateway.rollout import RolloutController
from gateway.rollout_metrics import RolloutMetrics
from registry.publish import publish
from registry.rollout import read_state
from tests.rollout_models import classifier

TOML = """\
[rollout]
mode = "canary"
steps = [10, 100]
step_seconds = 30.0
min_requests = 5
drift_gate = false
"""


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _registry(tmp_path: Path) -> Path:
    root = tmp_path / "registry"
    (root / "m").mkdir(parents=True)
    (root / "m" / "model.toml").write_text(TOML)
    source = tmp_path / "c.onnx"
    onnx.save(classifier(), source)
    publish(root, "m", source)
    return root


def _feed(controller: RolloutController, *, candidate_ok: bool = True, seconds: float = 0.001) -> None:
    live = controller.live("m")
    assert live is not None
    for _ in range(5):
        live.window.stable.record(True, 0.001)
        live.window.candidate.record(candidate_ok, seconds)
        live.window.record_comparison(1, 1)


async def test_steps_advance_on_the_fake_clock_and_the_candidate_is_promoted(tmp_path: Path) -> None:
    root = _registry(tmp_path)
    table = ModelTable(root)
    await table.load_all()
    clock = FakeClock()
    metrics = RolloutMetrics(CollectorRegistry())
    controller = RolloutController(table, metrics, clock=clock)
    try:
        await controller.tick()
        assert read_state(root / "m").status == "idle"  # type: ignore[union-attr]  # the baseline
        publish(root, "m", tmp_path / "c.onnx")
        await table.load_model("m")
        await controller.tick()
        state = read_state(root / "m")
        assert state is not None
        assert (state.status, state.stable, state.candidate, state.step) == ("running", 1, 2, 0)
        _feed(controller)
        clock.now += 29.9
        await controller.tick()
        assert read_state(root / "m").step == 0  # type: ignore[union-attr]  # step_seconds not yet passed
        clock.now += 0.1
        await controller.tick()
        assert read_state(root / "m").step == 1  # type: ignore[union-attr]
        assert metrics.step.labels("m", "2")._value.get() == 1
        _feed(controller)
        clock.now += 30.0
        await controller.tick()
        state = read_state(root / "m")
        assert state is not None
        assert (state.status, state.stable) == ("promoted", 2)
        assert controller.live("m") is None
        assert table.serving("m") == (2, frozenset({2}))  # the old version was retired
    finally:
        await controller.stop()
        await table.close()


async def test_a_failing_gate_rolls_back_at_once_whatever_the_clock(tmp_path: Path) -> None:
    root = _registry(tmp_path)
    table = ModelTable(root)
    await table.load_all()
    clock = FakeClock()
    controller = RolloutController(table, clock=clock)
    try:
        await controller.tick()
        publish(root, "m", tmp_path / "c.onnx")
        await table.load_model("m")
        await controller.tick()
        _feed(controller, candidate_ok=False)  # every candidate request failed
        await controller.tick()  # no time passed
        state = read_state(root / "m")
        assert state is not None
        assert (state.status, state.figures["gate"], state.stable) == ("rolled_back", "error_ratio", 1)
        assert state.candidate_stamp is not None
        assert table.serving("m") == (1, frozenset({1}))  # the candidate was retired
        await controller.tick()
        assert read_state(root / "m") == state  # and not tried again
    finally:
        await controller.stop()
        await table.close()
