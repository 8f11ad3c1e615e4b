"""Usable cores: CPU affinity capped by the cgroup CPU quota (v2 ``cpu.max`` or v1 CFS files), read from a
real directory tree laid out as the kernel's cgroup mounts are; and the cached one-core watch."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.cores import CoreWatch, quota_cores, usable_cores


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize(
    ("text", "cores"),
    [("max 100000\n", None), ("150000 100000\n", 1.5), ("50000 100000\n", 0.5), ("garbage\n", None)],
)
def test_cgroup_v2_cpu_max(tmp_path: Path, text: str, cores: float | None) -> None:
    write(tmp_path / "cpu.max", text)
    assert quota_cores(tmp_path) == cores


@pytest.mark.parametrize("directory", ["cpu", "cpu,cpuacct"])
def test_cgroup_v1_cfs_quota(tmp_path: Path, directory: str) -> None:
    write(tmp_path / directory / "cpu.cfs_quota_us", "200000\n")
    write(tmp_path / directory / "cpu.cfs_period_us", "100000\n")
    assert quota_cores(tmp_path) == 2.0
    write(tmp_path / directory / "cpu.cfs_quota_us", "-1\n")
    assert quota_cores(tmp_path) is None


def test_no_cgroup_files_means_no_quota(tmp_path: Path) -> None:
    assert quota_cores(tmp_path) is None


def test_usable_cores_is_the_affinity_capped_by_the_quota_rounded_up(tmp_path: Path) -> None:
    assert usable_cores(tmp_path, affinity=lambda: 8) == 8  # no quota
    write(tmp_path / "cpu.max", "150000 100000\n")
    assert usable_cores(tmp_path, affinity=lambda: 8) == 2
    assert usable_cores(tmp_path, affinity=lambda: 1) == 1
    write(tmp_path / "cpu.max", "20000 100000\n")
    assert usable_cores(tmp_path, affinity=lambda: 8) == 1
    assert usable_cores(tmp_path, affinity=lambda: 0) == 1


def test_the_watch_probes_once_per_refresh_and_logs_each_change(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.cores")
    counts = iter([1, 3])
    probes = 0

    def probe() -> int:
        nonlocal probes
        probes += 1
        return next(counts)

    watch = CoreWatch(probe, refresh_s=1.0)
    assert watch.solo(10.0) is True
    assert watch.solo(10.9) is True
    assert probes == 1
    assert watch.solo(11.0) is False
    assert probes == 2
    assert [r.getMessage() for r in caplog.records] == [
        "one usable core: short CPU batches run on the event loop",
        "more than one usable core: batches run on their runner's thread",
    ]


def test_subscribers_get_the_answer_at_once_then_each_change_only() -> None:
    counts = iter([2, 2, 1, 1, 4])
    watch = CoreWatch(lambda: next(counts), refresh_s=1.0)
    heard: list[bool] = []
    watch.subscribe(heard.append, 0.0)
    assert heard == [False]
    for now in (1.0, 2.0, 3.0, 4.0):  # 2 (same), 1 (changed), 1 (same), 4 (changed)
        watch.solo(now)
    assert heard == [False, True, False]
