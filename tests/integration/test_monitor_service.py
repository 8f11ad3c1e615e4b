"""The monitor end to end: a real aiohttp server on 127.0.0.1:0 over the demo registry.

Reference-like rows raise nothing; three of sixteen features shifted by 0.5 sigma are flagged, exactly
those, and the version enters drift after K = 2 windows; the webhook (a real server) gets the event
after a failed first attempt; Prometheus shows the gauges; the history and the drift state survive a
restart. Synchronisation waits on the engine's "window published" condition, never on sleeps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from monitor.config import MonitorConfig, WebhookSettings
from registry.demo import build_demo
from registry.publish import publish
from tests.monitor_oracles import sample_batch
from tests.monitor_servers import running_monitor, webhook_receiver

SHIFTED = (1, 5, 9)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("monitor") / "registry"
    build_demo(root)
    with (root / "regressor" / "model.toml").open("a", encoding="utf-8") as f:
        f.write("\n[drift]\nwindow_rows = 500\nwindow_seconds = 0.2\n")
    onnx = root / "classifier" / "1" / "model.onnx"
    publish(root, "noref", onnx)
    return root


def reference_rows(root: Path, rows: int, seed: int, shift: bool = False) -> np.ndarray[Any, Any]:
    with np.load(root / "classifier" / "1" / "reference.npz") as npz:
        ref = npz["input:input"]
    rng = np.random.default_rng(seed)
    x = ref[rng.integers(0, len(ref), rows)].copy()
    if shift:
        x[:, SHIFTED] += 0.5 * ref[:, SHIFTED].std(axis=0)
    return x


def flagged(entry: dict[str, Any]) -> set[str]:
    return {f["name"] for f in entry["features"] if f["drift"]}


async def test_reference_like_rows_raise_nothing_and_metrics_show_gauges(demo: Path, tmp_path: Path) -> None:
    async with running_monitor(MonitorConfig(demo, port=0, db=tmp_path / "m.db")) as monitor:
        x = reference_rows(demo, 2000, seed=1)
        for part in np.array_split(x, 8):
            status, body = await monitor.post(sample_batch("classifier", "1", {"input": part}))
            assert (status, body) == (200, {"rows": len(part)})
        await monitor.wait("classifier", 1, 2)
        entry = await monitor.entry("classifier", 1)
        assert (entry["drift"], entry["skew"], flagged(entry)) == (False, False, set())
        assert entry["window"]["rows"] == 1000
        assert entry["window"]["closed_by"] == "rows"
        by_name = {f["name"]: f for f in entry["features"]}
        assert by_name["input[0]"]["ks_exact"]
        assert by_name["input[0]"]["ks_pvalue"] > 1e-3
        assert by_name["probabilities[0]"]["psi"] is None  # outputs were not sent
        assert by_name["label[0]"]["kind"] == "categorical"
        text = await monitor.metrics()
        for line in (
            'infergate_drift_psi{feature="input[0]",model="classifier",version="1"}',
            'infergate_drift_ks_statistic{feature="input[15]",model="classifier",version="1"}',
            'infergate_drift_ks_pvalue{feature="input[3]",model="classifier",version="1"}',
            'infergate_drift_detected{model="classifier",version="1"} 0.0',
            'infergate_monitor_rows_total{model="classifier",version="1"} 2000.0',
            'infergate_monitor_windows_total{model="classifier",outcome="evaluated",version="1"} 2.0',
        ):
            assert line in text


async def test_shifted_features_are_flagged_alerted_and_remembered_across_a_restart(
    demo: Path, tmp_path: Path
) -> None:
    names = {f"input[{i}]" for i in SHIFTED}
    async with webhook_receiver(fail_first=1) as hook:
        config = MonitorConfig(
            demo, port=0, db=tmp_path / "history.db", webhook=WebhookSettings(url=hook.url, backoff_s=0.01)
        )
        async with running_monitor(config) as monitor:
            x = reference_rows(demo, 2048, seed=2, shift=True)
            async with monitor.http.ws_connect("/v1/samples/stream") as ws:
                for frame in np.split(x, 32):  # 64 rows x 16 features per frame
                    await ws.send_bytes(sample_batch("classifier", "2", {"input": frame}))
                await monitor.wait("classifier", 2, 1)
                first = await monitor.entry("classifier", 2)
                assert (flagged(first), first["drift"], first["skew"]) == (names, False, True)
                await monitor.wait("classifier", 2, 2)
            second = await monitor.entry("classifier", 2)
            assert (flagged(second), second["drift"], second["consecutive"]) == (names, True, 2)
            assert all("ks" in f["reasons"] for f in second["features"] if f["name"] in names)
            event = await hook.events.get()
            assert (event["event"], event["model"], event["version"]) == ("drift_started", "classifier", "2")
            assert set(event["features"]) == names
            assert hook.requests == 2
            assert 'infergate_drift_detected{model="classifier",version="2"} 1.0' in await monitor.metrics()

        async with running_monitor(config) as monitor:
            async with monitor.http.get(
                "/v1/drift/history", params={"model": "classifier", "version": "2"}
            ) as r:
                history = (await r.json())["windows"]
            assert [w["window"]["index"] for w in history] == [1, 2]
            assert [flagged(w) for w in history] == [names, names]
            since = history[1]["window"]["closed_at"]
            async with monitor.http.get("/v1/drift/history", params={"since": since}) as r:
                assert [w["window"]["index"] for w in (await r.json())["windows"]] == [2]
            assert (await monitor.entry("classifier", 2))["drift"] is True  # from the stored state
            clean = reference_rows(demo, 2000, seed=3)
            for part in np.split(clean, 4):
                await monitor.post(sample_batch("classifier", "2", {"input": part}))
            await monitor.wait("classifier", 2, 2)
            after = await monitor.entry("classifier", 2)
            assert (after["drift"], after["window"]["index"], flagged(after)) == (False, 4, set())
            ended = await hook.events.get()
            assert ended["event"] == "drift_ended"
            assert ended["report"]["windows"] == 4


async def test_a_time_window_closes_on_the_clock(demo: Path) -> None:
    async with running_monitor(MonitorConfig(demo, port=0, db=None, tick_s=0.02)) as monitor:
        x = np.random.default_rng(4).normal(size=(30, 8)).astype(np.float32)
        assert (await monitor.post(sample_batch("regressor", "1", {"input": x})))[0] == 200
        await monitor.wait("regressor", 1, 1)
        window = (await monitor.entry("regressor", 1))["window"]
        assert (window["rows"], window["closed_by"]) == (30, "time")


async def test_a_version_without_reference_is_counted_not_monitored(demo: Path) -> None:
    async with running_monitor(MonitorConfig(demo, port=0, db=None)) as monitor:
        x = np.zeros((5, 16), dtype=np.float32)
        assert await monitor.post(sample_batch("noref", "1", {"input": x})) == (200, {"rows": 0})
        assert await monitor.post(sample_batch("noref", "1", {"input": x})) == (200, {"rows": 0})
        entry = await monitor.entry("noref", 1)
        assert (entry["status"], entry["window"], entry["drift"]) == ("no_reference", None, False)
        line = (
            'infergate_monitor_unmonitored_rows_total{model="noref",reason="no_reference",version="1"} 10.0'
        )
        assert line in await monitor.metrics()
        async with monitor.http.get("/healthz") as response:
            assert response.status == 200


async def test_outputs_are_features_too(demo: Path) -> None:
    async with running_monitor(MonitorConfig(demo, port=0, db=None)) as monitor:
        with np.load(demo / "classifier" / "1" / "reference.npz") as npz:
            ref = {k: npz[k] for k in npz.files}
        outputs = {"probabilities": ref["output:probabilities"][:1000], "label": ref["output:label"][:1000]}
        body = sample_batch("classifier", "1", {"input": ref["input:input"][:1000]}, outputs)
        assert (await monitor.post(body))[0] == 200
        await monitor.wait("classifier", 1, 1)
        by_name = {f["name"]: f for f in (await monitor.entry("classifier", 1))["features"]}
        assert by_name["label[0]"]["psi"] is not None
        assert not by_name["label[0]"]["drift"]
        assert by_name["probabilities[1]"]["ks_exact"]


def publish_with_training(root: Path, model: str, training: np.ndarray[Any, Any], toml: str = "") -> Path:
    """``model`` v1: the demo classifier v1 with its reference, trained (so says training.npz) on
    ``training``."""
    source = root / "classifier" / "1"
    data = root / "_data" / f"{model}.npz"
    np.savez(data, **{"input:input": training, "y": np.zeros(len(training))})
    if toml:
        (root / model).mkdir(parents=True, exist_ok=True)
        (root / model / "model.toml").write_text(toml)
    info = publish(root, model, source / "model.onnx", reference=source / "reference.npz", train_data=data)
    return info.path


async def test_skew_is_checked_against_training_once_and_survives_a_restart(
    demo: Path, tmp_path: Path
) -> None:
    with np.load(demo / "_data" / "classifier" / "train-v1.npz") as npz:
        training = npz["input:input"].copy()
    training[:, [0, 7]] += 1.0  # the training pipeline saw these two features off-centre
    publish_with_training(demo, "skewed", training, "[drift]\nwindow_rows = 500\nskew_windows = 2\n")
    skewed = {"input[0]", "input[7]"}
    config = MonitorConfig(demo, port=0, db=tmp_path / "history.db")

    async def window(monitor: Any, seed: int, count: int) -> dict[str, Any]:
        rows = {"input": reference_rows(demo, 500, seed)}
        assert await monitor.post(sample_batch("skewed", "1", rows)) == (200, {"rows": 500})
        await monitor.wait("skewed", 1, count)
        return await monitor.entry("skewed", 1)  # type: ignore[no-any-return]

    async with running_monitor(config) as monitor:
        first = await window(monitor, 10, 1)
        check = first["skew_check"]
        assert (first["skew"], check["status"], check["windows"], check["required"]) == (
            None,
            "pending",
            1,
            2,
        )
        assert flagged(check) == skewed  # drifted against training, not yet decided
        assert (first["drift"], flagged(first)) == (False, set())  # served like the reference
        second = await window(monitor, 11, 2)
        assert (second["skew"], second["skew_check"]["status"], second["skew_check"]["window"]) == (
            True,
            "done",
            2,
        )
        assert {f["name"] for f in second["features"] if f["skew"]} == skewed
        assert 'infergate_skew_detected{model="skewed",version="1"} 1.0' in await monitor.metrics()
        third = await window(monitor, 12, 3)
        assert (third["skew"], third["skew_check"]["windows"]) == (True, 2)  # decided: not checked again

    async with running_monitor(config) as monitor:
        assert (await monitor.entry("skewed", 1))["skew"] is True  # from the history
        fourth = await window(monitor, 13, 1)
        assert (fourth["window"]["index"], fourth["skew"], fourth["skew_check"]["window"]) == (4, True, 2)
        async with monitor.http.get("/v1/drift/history", params={"model": "skewed"}) as r:
            stored = (await r.json())["windows"]
        assert [w["skew"] for w in stored] == [None, True, True, True]
        assert [w["skew_check"]["windows"] for w in stored] == [1, 2, 2, 2]


async def test_an_unusable_training_profile_is_reported_and_monitoring_goes_on(demo: Path) -> None:
    path = publish_with_training(demo, "broken", reference_rows(demo, 100, 20))
    (path / "training.npz").write_bytes(b"not an npz")
    async with running_monitor(MonitorConfig(demo, port=0, db=None)) as monitor:
        rows = {"input": reference_rows(demo, 1000, 21)}
        assert await monitor.post(sample_batch("broken", "1", rows)) == (200, {"rows": 1000})
        await monitor.wait("broken", 1, 1)
        entry = await monitor.entry("broken", 1)
        assert (entry["status"], entry["skew"], entry["skew_check"]["status"]) == (
            "ok",
            None,
            "invalid_training",
        )
        assert "training.npz" in entry["skew_check"]["detail"]
        assert entry["window"]["rows"] == 1000
        assert "infergate_skew_detected{" not in await monitor.metrics()
