"""Quality decisions and estimates on a real monitor (127.0.0.1:0) over the demo registry.

Ground truth is the demo's own: rows of its training-data file (the inputs and labels drawn from the
demo's true model), so the classifier's realized accuracy sits at its validation accuracy unless the test
moves P(y|x). Predictions are the ONNX model's, by onnxruntime. Prediction times are explicit (four 10 s
windows of 500 predictions), the feedback path's clock is injected, and every wait is on an event.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from monitor.config import MonitorConfig, WebhookSettings
from registry.demo import build_demo
from tests.feedback_rig import SECOND, T0, Clock, classifier_outputs, feedback, samples, set_feedback
from tests.monitor_servers import RunningMonitor, running_monitor, webhook_receiver

WINDOWS, ROWS = 4, 500
CONFIG = (
    "window_seconds = 10.0\ngrace_seconds = 120.0\nwindow_rows = 500\nmin_effect = 0.05\nconsecutive = 2\n"
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("quality") / "registry"
    build_demo(root)
    set_feedback(root, "classifier", CONFIG)
    return root


def truth(
    root: Path, rows: int, seed: int, tilt: float = 0.0
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """``rows`` (x, y) pairs of the demo's data; ``tilt`` > 0 draws them with weights exp(tilt * x0): a
    covariate shift that keeps P(y|x)."""
    with np.load(root / "_data" / "classifier" / "train-v2.npz") as npz:
        x, y = npz["input:input"], npz["y"]
    weights = np.exp(tilt * x[:, 0].astype(np.float64))
    pick = np.random.default_rng(seed).choice(len(x), rows, replace=True, p=weights / weights.sum())
    return x[pick], y[pick]


async def run_windows(monitor: RunningMonitor, demo: Path, x: Any, y: Any) -> list[dict[str, Any]]:
    """Sample version 1's predictions of ``x`` in four 10 s windows, label them with ``y`` window by window,
    and return the four closed windows' reports."""
    monitor.engine.feedback.wall_ns = Clock(T0 + WINDOWS * 10 * SECOND)
    out = classifier_outputs(demo, 1, x)
    ids = [f"w{i}" for i in range(len(x))]
    times = [T0 + (i // ROWS) * 10 * SECOND + (i % ROWS) * 1000 for i in range(len(x))]
    for w in range(WINDOWS):
        part = slice(w * ROWS, (w + 1) * ROWS)
        body = samples(
            "classifier", "1", ids[part], times[part], x[part], {k: v[part] for k, v in out.items()}
        )
        assert (await monitor.post(body))[0] == 200
    for w in range(WINDOWS):
        part = slice(w * ROWS, (w + 1) * ROWS)
        answer = (await monitor.feedback(feedback("classifier", ids[part], y[part].astype(np.int64))))[1]
        assert answer["joined"] == ROWS, answer["errors"][:3]
    await monitor.wait_quality("classifier", 1, WINDOWS)
    async with monitor.http.get("/v1/drift/history", params={"kind": "quality", "model": "classifier"}) as r:
        return list((await r.json())["windows"])


async def test_concept_shift_is_caught_by_quality_while_psi_and_ks_stay_silent(
    demo: Path, tmp_path: Path
) -> None:
    x, y = truth(demo, WINDOWS * ROWS, seed=1)
    flipped = y.copy()
    region = x[:, 0] > 0.5  # P(x) unchanged; P(y|x) moves in this region
    flipped[region] = 1 - flipped[region]
    async with webhook_receiver() as hook:
        config = MonitorConfig(demo, port=0, db=tmp_path / "m.db", webhook=WebhookSettings(url=hook.url))
        async with running_monitor(config) as monitor:
            reports = await run_windows(monitor, demo, x, flipped)
            await monitor.wait("classifier", 1, 2)  # the same 2,000 sampled rows: two drift windows
            entry = await monitor.entry("classifier", 1)
            assert entry["drift"] is False
            assert [f["name"] for f in entry["features"] if f["drift"]] == []
            for w, report in enumerate(reports):
                part = slice(w * ROWS, (w + 1) * ROWS)
                realized = float(np.mean(classifier_outputs(demo, 1, x[part])["label"] == flipped[part]))
                assert report["metrics"]["accuracy"] == pytest.approx(realized)
                assert report["decision"]["degraded"] is True
                assert report["baseline"]["source"] == "validation"
                accuracy = next(m for m in report["decision"]["metrics"] if m["name"] == "accuracy")
                threshold = report["baseline"]["metrics"]["accuracy"] - 0.05
                assert accuracy["threshold"] == pytest.approx(threshold)
                assert accuracy["interval"][1] < threshold
            block = entry["quality"]
            assert (block["degraded"], block["windows"]) == (True, WINDOWS)
            event = await asyncio.wait_for(hook.events.get(), 30)
            assert (event["event"], event["model"], event["version"]) == (
                "quality_degraded",
                "classifier",
                "1",
            )
            assert event["data"]["prediction_time_start_ns"] == T0 + 10 * SECOND  # the second window decides
            assert event["data"]["rows"] == ROWS
            # CBPE assumes P(y|x) does not move: here its estimate is visibly wrong, and says so
            assert all(r["estimate_error"]["accuracy_within"] is False for r in reports)
            text = await monitor.metrics()
            assert 'infergate_quality_degraded{model="classifier",version="1"} 1.0' in text
        async with running_monitor(config) as monitor:  # the state, its block and gauges survive a restart
            await asyncio.wait_for(monitor.engine.quality.restored.wait(), 30)
            assert 'infergate_quality_degraded{model="classifier",version="1"} 1.0' in await monitor.metrics()
            block = (await monitor.entry("classifier", 1))["quality"]
            assert (block["degraded"], block["window"]["index"]) == (True, reports[-1]["index"])


async def test_covariate_shift_with_the_same_concept_is_not_degraded_and_cbpe_holds(
    demo: Path, tmp_path: Path
) -> None:
    x, y = truth(demo, WINDOWS * ROWS, seed=2, tilt=0.5)
    async with running_monitor(MonitorConfig(demo, port=0, db=tmp_path / "m.db")) as monitor:
        reports = await run_windows(monitor, demo, x, y)
        for report, w in zip(reports, range(WINDOWS), strict=True):
            part = slice(w * ROWS, (w + 1) * ROWS)
            predicted = classifier_outputs(demo, 1, x[part])["label"]
            assert report["metrics"]["accuracy"] == pytest.approx(float(np.mean(predicted == y[part])))
            assert report["decision"]["degraded"] is False
            error = report["estimate_error"]
            assert error["accuracy_within"] is True, error
            assert error["reliable"] is True
        block = (await monitor.entry("classifier", 1))["quality"]
        assert block["degraded"] is False
        assert block["calibration"]["reliable"] is True
        text = await monitor.metrics()
        assert 'infergate_quality{metric="accuracy",model="classifier",version="1"}' in text
        assert 'infergate_quality_baseline{metric="accuracy",model="classifier",version="1"}' in text


async def test_an_open_window_is_estimated_before_its_labels(demo: Path, tmp_path: Path) -> None:
    x, y = truth(demo, ROWS, seed=3)
    out = classifier_outputs(demo, 1, x)
    async with running_monitor(MonitorConfig(demo, port=0, db=tmp_path / "m.db")) as monitor:
        monitor.engine.feedback.wall_ns = Clock(T0 + SECOND)
        ids = [f"e{i}" for i in range(ROWS)]
        assert (await monitor.post(samples("classifier", "1", ids, [T0] * ROWS, x, out)))[0] == 200
        monitor.engine.quality.tick()
        async with asyncio.timeout(30):
            await monitor.engine.quality.wait_estimate("classifier", 1)
        estimate = (await monitor.entry("classifier", 1))["quality"]["estimate"]
        assert estimate["index"] == T0 // (10 * SECOND)
        assert estimate["rows"] == ROWS
        realized = float(np.mean(out["label"] == y))  # the labels the monitor has not seen
        assert abs(estimate["accuracy"] - realized) <= estimate["accuracy_error"]
        assert (
            'infergate_quality_estimated{metric="accuracy",model="classifier",version="1"}'
            in await monitor.metrics()
        )


async def test_a_regressor_is_judged_on_mae_rmse_and_bias(demo: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    with np.load(demo / "_data" / "regressor" / "train-v1.npz") as npz:
        x, y = npz["input:input"][:800], npz["y"][:800].astype(np.float32)
    session = ort.InferenceSession(str(demo / "regressor" / "1" / "model.onnx"))
    (pred,) = session.run(["prediction"], {"input": x})
    hour = 3600 * SECOND
    async with running_monitor(MonitorConfig(demo, port=0, db=None)) as monitor:
        clock = Clock(T0 + hour + SECOND)
        monitor.engine.feedback.wall_ns = clock
        ids = [f"r{i}" for i in range(800)]
        times = [T0 + (i // 400) * hour for i in range(800)]  # two one-hour windows (the default span)
        body = samples("regressor", "1", ids, times, x, {"prediction": pred})
        assert (await monitor.post(body))[0] == 200
        truth = y.copy()
        truth[400:] += 0.5  # the second window's targets move: a concept shift
        answer = (await monitor.feedback(feedback("regressor", ids, truth, name="prediction")))[1]
        assert answer["joined"] == 800
        clock.now = T0 + 2 * hour + 600 * SECOND  # both windows' ends plus the default grace
        assert monitor.engine.quality.tick() == 2
        await monitor.wait_quality("regressor", 1, 2)
        async with monitor.http.get(
            "/v1/drift/history", params={"kind": "quality", "model": "regressor"}
        ) as r:
            first, second = (await r.json())["windows"]
        for report, part in ((first, slice(0, 400)), (second, slice(400, 800))):
            residual = pred[part].astype(np.float64).ravel() - truth[part].astype(np.float64).ravel()
            assert report["metrics"]["mae"] == pytest.approx(np.abs(residual).mean())
            assert report["metrics"]["rmse"] == pytest.approx(np.sqrt((residual**2).mean()))
            assert report["metrics"]["bias"] == pytest.approx(residual.mean())
            assert report["baseline"]["source"] == "validation"
            assert report["estimate"] is None  # no CBPE for a regressor
        assert (first["decision"]["degraded"], second["decision"]["degraded"]) == (False, True)
        block = (await monitor.entry("regressor", 1))["quality"]
        assert (block["task"], block["calibration_detail"]) == ("regressor", "no probabilities output")
