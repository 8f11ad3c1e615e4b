"""Feedback joined to sampled predictions on a real monitor (127.0.0.1:0) over the demo registry.

The wall clock of the feedback path is injected (tests/feedback_rig.py Clock); sample and label times
are explicit, so windows by prediction time, TTLs and grace periods are exact, with no sleeps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from monitor.config import MonitorConfig
from registry.demo import build_demo
from registry.sampling import would_sample
from tests.feedback_rig import (
    SECOND,
    T0,
    Clock,
    classifier_outputs,
    demo_inputs,
    feedback,
    samples,
    set_feedback,
)
from tests.monitor_servers import RunningMonitor, running_monitor

FEEDBACK_TOML = "window_seconds = 10.0\ngrace_seconds = 120.0\nttl_seconds = 3600.0\n"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("feedback") / "registry"
    build_demo(root)
    set_feedback(root, "classifier", FEEDBACK_TOML)
    return root


async def predict(monitor: RunningMonitor, demo: Path, ids: list[str], times: list[int], seed: int = 0,
                  version: int = 1) -> dict[str, np.ndarray]:  # fmt: skip
    """Sample ``ids`` (one row each, at ``times``) as the gateway would; returns the model's outputs."""
    x = demo_inputs(demo, len(ids), seed)
    out = classifier_outputs(demo, version, x)
    status, _ = await monitor.post(samples("classifier", str(version), ids, times, x, out))
    assert status == 200
    return out


def clocked(monitor: RunningMonitor) -> Clock:
    clock = Clock(T0 + 5 * SECOND)
    monitor.engine.feedback.wall_ns = clock
    return clock


async def test_join_results_per_item_and_counts(demo: Path, tmp_path: Path) -> None:
    async with running_monitor(MonitorConfig(demo, port=0, db=tmp_path / "m.db")) as monitor:
        clock = clocked(monitor)
        ids = [f"r{i}" for i in range(6)]
        out = await predict(monitor, demo, ids, [T0 + i * SECOND for i in range(6)])
        truth = out["label"]
        body = feedback("classifier", ["r0", "r1", "r1", "nope", "r2"], truth[[0, 1, 1, 0, 2]])
        status, answer = await monitor.feedback(body)
        assert status == 200
        assert answer["results"] == ["joined", "joined", "duplicate", "unmatched", "joined"]
        assert (answer["joined"], answer["rejected"]) == (3, 2)
        assert [e["index"] for e in answer["errors"]] == [2, 3]
        again = await monitor.feedback(feedback("classifier", ["r0"], truth[:1]))
        assert again[1]["results"] == ["duplicate"]
        # the wrong version, an unknown version, an unknown model, the wrong dtype and shape
        wrong = [
            feedback("classifier", ["r3"], truth[3:4], version="2"),
            feedback("classifier", ["r3"], truth[3:4], version="9"),
            feedback("nosuch", ["r3"], truth[3:4], version="1"),
            feedback("classifier", ["r3"], truth[3:4].astype(np.int32)),
            feedback("classifier", ["r3"], np.zeros((1, 2), np.int64)),
            feedback("classifier", ["r3"], np.array([5], np.int64)),
        ]
        results = [(await monitor.feedback(b))[1]["results"][0] for b in wrong]
        assert results == ["unmatched", "unknown_version", "unknown_model", "datatype", "shape", "value"]
        # late: the label event is more than ttl_seconds after the prediction
        late = feedback("classifier", ["r3"], truth[3:4], events=[T0 + 3 * SECOND + 3601 * SECOND])
        assert (await monitor.feedback(late))[1]["results"] == ["late"]
        # JSON: nested lists and the {"datatype", "shape", "data"} form; r3 is still unlabelled
        typed = {"datatype": "INT64", "shape": [1], "data": [int(truth[4])]}
        doc = {
            "items": [
                {"request_id": "r3", "model": "classifier", "labels": {"label": [int(truth[3])]}},
                {"request_id": "r4", "model": "classifier", "labels": [typed]},
                {"request_id": "r5", "model": "classifier", "labels": {"label": "x"}},
                "not an item",
            ]
        }
        status, answer = await monitor.feedback(orjson.dumps(doc), "application/json")
        assert (status, answer["results"]) == (200, ["joined", "joined", "shape", "malformed"])
        assert (await monitor.feedback(b"{", "application/json"))[0] == 400
        assert (await monitor.feedback(b"\xff\xff"))[0] == 400
        text = await monitor.metrics()
        for result, count in (("matched", 5), ("duplicate", 2), ("unmatched", 2), ("late", 1)):
            assert f'infergate_feedback_total{{model="classifier",result="{result}"}} {count}.0' in text
        assert "infergate_feedback_store_rows 6.0" in text
        block = (await monitor.entry("classifier", 1))["quality"]
        assert (block["task"], block["prediction"], block["probabilities"], block["label"]) == (
            "classifier", "label", "probabilities", "label")  # fmt: skip
        assert block["open"] == [{"index": T0 // (10 * SECOND), "predictions": 6, "rows": 5}]
        assert clock.now  # the clock drove everything above


async def test_windows_by_prediction_time_with_late_out_of_order_labels(demo: Path, tmp_path: Path) -> None:
    async with running_monitor(MonitorConfig(demo, port=0, db=tmp_path / "m.db")) as monitor:
        clock = clocked(monitor)
        n = 200
        rng = np.random.default_rng(7)
        times = (T0 + rng.integers(0, 30 * SECOND, n)).tolist()  # three 10 s windows of prediction time
        ids = [f"q{i}" for i in range(n)]
        out = await predict(monitor, demo, ids, times, seed=3)
        labelled = rng.random(n) < 0.7
        delay = rng.integers(1 * SECOND, 60 * SECOND, n)  # labels 1-60 s after their predictions
        order = np.argsort(np.asarray(times) + delay)  # out of order with respect to prediction time
        order = order[labelled[order]]
        for part in np.array_split(order, 5):
            clock.now = int(max(np.asarray(times)[part] + delay[part]))
            body = feedback("classifier", [ids[i] for i in part], out["label"][part],
                            events=(np.asarray(times)[part] + delay[part]).tolist())  # fmt: skip
            assert set((await monitor.feedback(body))[1]["results"]) == {"joined"}
        clock.now = T0 + 30 * SECOND + 120 * SECOND  # the last window's end + grace
        assert monitor.engine.quality.tick() == 3
        await monitor.wait_quality("classifier", 1, 3)
        async with monitor.http.get(
            "/v1/drift/history", params={"kind": "quality", "model": "classifier", "version": "1"}
        ) as r:
            rows = (await r.json())["windows"]
        window_of = (np.asarray(times) - T0) // (10 * SECOND)
        for k, report in enumerate(rows):
            in_k = window_of == k
            assert report["index"] == T0 // (10 * SECOND) + k
            assert (report["predictions"], report["rows"]) == (int(in_k.sum()), int((in_k & labelled).sum()))
            assert report["coverage"] == pytest.approx((in_k & labelled).sum() / in_k.sum())
            assert report["closed_by"] == "time"
        block = (await monitor.entry("classifier", 1))["quality"]
        assert block["window"]["index"] == rows[-1]["index"]
        assert block["open"] == []
        assert (
            'infergate_quality_label_coverage_ratio{model="classifier",version="1"}'
            in await monitor.metrics()
        )


async def test_a_restart_keeps_joins_and_first_labels(demo: Path, tmp_path: Path) -> None:
    config = MonitorConfig(demo, port=0, db=tmp_path / "m.db")
    ids = [f"s{i}" for i in range(20)]
    async with running_monitor(config) as monitor:
        clocked(monitor)
        out = await predict(monitor, demo, ids, [T0 + i * SECOND // 10 for i in range(20)], seed=5)
        first = await monitor.feedback(feedback("classifier", ids[:10], out["label"][:10]))
        assert first[1]["joined"] == 10
    async with running_monitor(config) as monitor:
        clocked(monitor)
        status, answer = await monitor.feedback(feedback("classifier", ids[5:], out["label"][5:]))
        assert status == 200
        assert answer["results"] == ["duplicate"] * 5 + ["joined"] * 10
        assert "infergate_feedback_store_rows 20.0" in await monitor.metrics()


async def test_an_item_may_carry_its_prediction(demo: Path, tmp_path: Path) -> None:
    from protos import monitor_pb2
    from tests.feedback_rig import tensor

    async with running_monitor(MonitorConfig(demo, port=0, db=tmp_path / "m.db")) as monitor:
        clocked(monitor)
        x = demo_inputs(demo, 3, seed=9)
        out = classifier_outputs(demo, 2, x)
        batch = monitor_pb2.FeedbackBatch()
        for i, version in enumerate(("2", "2", "")):
            item = batch.items.add(request_id=f"u{i}", model="classifier", version=version)
            item.prediction_time_ns = T0 + SECOND
            tensor(item.labels, "label", out["label"][i : i + 1])
            tensor(item.prediction, "probabilities", out["probabilities"][i : i + 1])
            tensor(item.prediction, "label", out["label"][i : i + 1])
        batch.items[1].ClearField("prediction_time_ns")
        status, answer = await monitor.feedback(batch.SerializeToString())
        assert (status, answer["results"]) == (200, ["accepted", "value", "unknown_version"])
        again = await monitor.feedback(batch.SerializeToString())
        assert again[1]["results"][0] == "duplicate"
        block = (await monitor.entry("classifier", 2))["quality"]
        assert block["open"] == [{"index": T0 // (10 * SECOND), "predictions": 0, "rows": 1}]
        assert block["counts"] == {"accepted": 1, "duplicate": 1}


async def test_the_store_bound_evicts_the_oldest_and_counts(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    build_demo(root)
    set_feedback(root, "classifier", "max_rows = 10\n")
    async with running_monitor(MonitorConfig(root, port=0, db=None)) as monitor:
        clocked(monitor)
        ids = [f"b{i}" for i in range(15)]
        out = await predict(monitor, root, ids, [T0 + i for i in range(15)])
        answer = (await monitor.feedback(feedback("classifier", ids, out["label"])))[1]
        assert answer["results"] == ["unmatched"] * 5 + ["joined"] * 10
        text = await monitor.metrics()
        assert 'infergate_feedback_evicted_total{reason="rows"} 5.0' in text
        assert "infergate_feedback_store_rows 10.0" in text


async def test_requests_without_probabilities_are_judged_on_their_labels(demo: Path, tmp_path: Path) -> None:
    async with running_monitor(MonitorConfig(demo, port=0, db=None)) as monitor:
        clock = clocked(monitor)
        ids = [f"n{i}" for i in range(40)]
        x = demo_inputs(demo, 40, seed=11)
        out = classifier_outputs(demo, 1, x)
        only_label = {"label": out["label"]}  # the client asked for the label output only
        assert (await monitor.post(samples("classifier", "1", ids, [T0] * 40, x, only_label)))[0] == 200
        truth = out["label"].copy()
        truth[:10] = 1 - truth[:10]
        assert (await monitor.feedback(feedback("classifier", ids, truth)))[1]["joined"] == 40
        clock.now = T0 + 10 * SECOND + 120 * SECOND
        assert monitor.engine.quality.tick() == 1
        await monitor.wait_quality("classifier", 1, 1)
        window = (await monitor.entry("classifier", 1))["quality"]["window"]
        assert window["metrics"]["accuracy"] == pytest.approx(0.75)
        assert "log_loss" not in window["metrics"]
        assert window["estimate"] is None
        assert "no probabilities" in window["detail"]


async def test_a_version_whose_roles_do_not_fit_says_so(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    build_demo(root)
    set_feedback(root, "classifier", 'prediction = "scores"\n')  # no such output
    async with running_monitor(MonitorConfig(root, port=0, db=None)) as monitor:
        clocked(monitor)
        out = await predict(monitor, root, ["c0"], [T0])
        answer = (await monitor.feedback(feedback("classifier", ["c0"], out["label"], version="1")))[1]
        assert answer["results"] == ["config"]
        assert "scores" in answer["errors"][0]["error"]
        block = (await monitor.entry("classifier", 1))["quality"]
        assert block["status"] == "config"
        assert "[feedback].prediction" in block["detail"]


async def test_labels_of_requests_the_gateway_never_sampled_are_unsampled_not_unmatched(
    demo: Path, tmp_path: Path
) -> None:
    """The gateway states its rate with each sample; its choice per id is deterministic (would_sample), so
    a label for an id it skipped is expected, and one for an id it took but the monitor lacks is not."""
    rate = 0.3
    ids = [f"u{i}" for i in range(400)]
    taken = [i for i in ids if would_sample(i, rate)]
    skipped = [i for i in ids if not would_sample(i, rate)]
    assert len(taken) > 3
    assert len(skipped) > 3
    async with running_monitor(MonitorConfig(demo, port=0, db=tmp_path / "m.db")) as monitor:
        clocked(monitor)
        x = demo_inputs(demo, len(taken), 5)
        out = classifier_outputs(demo, 1, x)
        kept, lost = taken[:-3], taken[-3:]  # the monitor never gets the last three sampled predictions
        body = samples("classifier", "1", kept, [T0 + SECOND] * len(kept), x[: len(kept)], out, rate)
        assert (await monitor.post(body))[0] == 200
        asked = [*kept[:5], *lost, *skipped[:4]]
        labels = np.zeros(len(asked), np.int64)
        status, answer = await monitor.feedback(feedback("classifier", asked, labels))
        assert status == 200
        assert answer["results"] == ["joined"] * 5 + ["unmatched"] * 3 + ["unsampled"] * 4
        assert "send its prediction with the label" in answer["errors"][-1]["error"]
        text = await monitor.metrics()
        assert 'infergate_feedback_total{model="classifier",result="unsampled"} 4.0' in text
        assert 'infergate_feedback_total{model="classifier",result="unmatched"} 3.0' in text
