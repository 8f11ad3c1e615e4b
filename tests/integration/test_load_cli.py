"""``infergate-load`` as a user runs it: from a plain install (no ``load`` extra, so no matplotlib and no
tqdm), against a server on another loopback address (127.0.0.2), which the user's tool must not refuse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.models import build_bench_registry
from bench.servers import ServerProcess

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = 'raise ImportError("No module named {0!r} (hidden by the test: no load extra)")\n'


@pytest.fixture(scope="module")
def echo_on_127_0_0_2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("cli")
    registry = build_bench_registry(work / "registry", models=("tiny",))
    command = [sys.executable, "-m", "loadtests", "echo-server", "--registry", str(registry)]
    command += ["--host", "127.0.0.2", "--port", "0"]
    with ServerProcess(command, r"listening on 127\.0\.0\.2:(\d+)", work / "echo.log", "echo") as echo:
        yield f"127.0.0.2:{echo.start(timeout_s=60)[0]}"


def _without_load_extra(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """``python -m loadtests ARGV`` where importing matplotlib or tqdm fails, in every process of the run."""
    hidden = tmp_path / "hidden"
    hidden.mkdir(exist_ok=True)
    for name in ("matplotlib", "tqdm"):
        (hidden / f"{name}.py").write_text(BLOCKED.format(name))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hidden), str(ROOT)])}
    return subprocess.run(
        [sys.executable, "-m", "loadtests", *argv],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_runs_without_the_load_extra_against_another_loopback_address(
    echo_on_127_0_0_2: str, tmp_path: Path
) -> None:
    out = tmp_path / "report.json"
    done = _without_load_extra(
        tmp_path, "--target", echo_on_127_0_0_2, "--model", "tiny", "--concurrency", "2",
        "--requests", "40", "--warmup", "0", "--json", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["requests"] == report["ok"] == 40
    assert report["parameters"]["target"] == echo_on_127_0_0_2
    assert "infergate-load: tiny" in done.stdout


def test_plot_without_matplotlib_names_the_extra(echo_on_127_0_0_2: str, tmp_path: Path) -> None:
    done = _without_load_extra(
        tmp_path, "--target", echo_on_127_0_0_2, "--model", "tiny", "--requests", "5",
        "--plot", str(tmp_path / "plots"),
    )  # fmt: skip
    assert done.returncode == 2
    assert "--plot needs matplotlib" in done.stderr
    assert "pip install 'infergate[load]'" in done.stderr
    assert not (tmp_path / "plots").exists()
