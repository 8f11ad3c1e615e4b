"""Rollback means what the operator sees (issue 16 item 4), through a real gateway and its watcher: when the
newest READY version is corrupt the gateway keeps serving the one below it, the registry reports that one as
the default, and ``infergate-registry rollback`` pins the version below it, which the gateway then serves,
with zero failed requests throughout."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from gateway.config import GatewayConfig
from registry.layout import read_pin
from registry.serving import serving_default
from tests.integration.test_lifecycle import (
    POLL,
    RELAXED,
    _tamper_sha,
    check_answers,
    publish_scale,
    scale_traffic,
    state_of,
    wait_for,
)
from tests.servers import ServerThread


def registry_cli(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "registry", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def add_corrupt_version(root: Path, staging: Path, factor: float, number: int) -> None:
    """Place a READY version ``number`` whose model.onnx no longer matches its manifest, in one rename
    (publishing then tampering would race the gateway's watcher)."""
    publish_scale(staging, factor)
    version_dir = staging / "m" / "1"
    _tamper_sha(version_dir)
    shutil.copytree(version_dir, root / "m" / ".tmp-incoming")
    (root / "m" / ".tmp-incoming").rename(root / "m" / str(number))


def test_rollback_pins_below_the_version_served_past_a_corrupt_newest_one(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    assert publish_scale(root, 2.0, toml=RELAXED) == 1
    assert publish_scale(root, 3.0) == 2
    server = ServerThread(GatewayConfig(root, sampling=False, port=0, metrics_port=None, poll_interval=POLL))
    traffic = scale_traffic(server.target, threads=2)
    try:
        assert wait_for(lambda: len(traffic.answers) > 20)
        assert traffic.versions_sent_after(0.0) == {"2"}
        add_corrupt_version(root, tmp_path / "staging", 5.0, 3)
        assert wait_for(lambda: (state_of(server, "3") or {}).get("state") == "UNAVAILABLE")
        refused = time.monotonic()
        assert wait_for(lambda: len(traffic.versions_sent_after(refused)) > 0)
        assert traffic.versions_sent_after(refused) == {"2"}  # the gateway passes over 3 and serves 2

        found = serving_default(root, "m")
        assert (found.version, list(found.skipped)) == (2, [3])
        listed = registry_cli("list", "--registry", root, "--json")
        assert listed.returncode == 0, listed.stderr
        assert (json.loads(listed.stdout)[0]["default"], json.loads(listed.stdout)[0]["failing"].keys()) == (
            2,
            {"3"},
        )

        done = registry_cli("rollback", "--registry", root, "m")
        assert (done.returncode, done.stdout) == (0, "1\n"), done.stderr
        assert "m: version 3 is not served, it fails the load checks: " in done.stderr
        assert "sha256" in done.stderr
        assert "m: default was version 2; pinned version 1" in done.stderr
        assert read_pin(root / "m") == 1
        pinned = time.monotonic()
        assert wait_for(lambda: "1" in traffic.versions_sent_after(pinned))
        settled = time.monotonic()
        assert wait_for(lambda: len(traffic.versions_sent_after(settled + 0.5)) > 0)
        assert traffic.versions_sent_after(settled + 0.5) == {"1"}
    finally:
        traffic.stop()
        server.stop()
    check_answers(traffic)


def test_a_fresh_gateway_serves_the_highest_intact_version_when_the_newest_is_corrupt(tmp_path: Path) -> None:
    """The registry's "fallback" default is what a freshly started gateway serves too, not nothing."""
    root = tmp_path / "registry"
    assert publish_scale(root, 2.0, toml=RELAXED) == 1
    assert publish_scale(root, 3.0) == 2
    add_corrupt_version(root, tmp_path / "staging", 5.0, 3)
    assert serving_default(root, "m").version == 2
    server = ServerThread(GatewayConfig(root, sampling=False, port=0, metrics_port=None, poll_interval=POLL))
    traffic = scale_traffic(server.target, threads=1)
    try:
        assert wait_for(lambda: len(traffic.answers) > 10)
        assert (state_of(server, "3") or {}).get("state") == "UNAVAILABLE"
        assert traffic.versions_sent_after(0.0) == {"2"}
        polled = time.monotonic()  # later polls keep 2: the failed 3 is not retried, 2 is not retired
        assert wait_for(lambda: len(traffic.versions_sent_after(polled + 3 * POLL)) > 0)
        assert traffic.versions_sent_after(polled) == {"2"}
    finally:
        traffic.stop()
        server.stop()
    check_answers(traffic)
