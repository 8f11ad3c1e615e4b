"""``infergate-monitor`` as a process: it serves on the port it prints, and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from registry.demo import build_demo

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_serves_the_printed_port_and_exits_zero_on_sigterm(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    build_demo(registry)
    command = [
        sys.executable,
        "-m",
        "monitor",
        "--registry",
        str(registry),
        "--port",
        "0",
        "--db",
        str(tmp_path / "m.db"),
        "--log-level",
        "WARNING",
    ]
    with subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("infergate-monitor listening on http://127.0.0.1:"), line
            url = line.split()[-1]
            with urllib.request.urlopen(f"{url}/healthz", timeout=30) as response:
                assert json.load(response)["status"] == "ok"
            with urllib.request.urlopen(f"{url}/v1/drift", timeout=30) as response:
                assert json.load(response) == {"models": []}
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            proc.kill()
    assert (tmp_path / "m.db").is_file()


def test_bad_options_exit_2(tmp_path: Path) -> None:
    from monitor.__main__ import main

    assert main(["--registry", str(tmp_path / "missing")]) == 2
    assert main(["--registry", str(tmp_path), "--port", "70000"]) == 2
    assert main(["--registry", str(tmp_path), "--alert-webhook", "ftp://x"]) == 2
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    tls = ["--ingest-tls-cert", str(junk), "--ingest-tls-key", str(junk)]
    assert main(["--registry", str(tmp_path), *tls]) == 2  # TLS is for the ingest address only
    assert main(["--registry", str(tmp_path), "--ingest-host", "127.0.0.1", *tls[:2]]) == 2  # no key
    assert main(["--registry", str(tmp_path), "--ingest-host", "127.0.0.1", *tls]) == 2  # not a pair
