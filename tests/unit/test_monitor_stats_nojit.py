"""The stats tests once more with NUMBA_DISABLE_JIT=1, so the kernels' Python source runs line by line.

A subprocess is needed: numba reads the variable when it is imported. The module covered is
tests/unit/test_monitor_stats.py (it shrinks its Hypothesis budget and sample sizes under this variable).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_stats_module_passes_without_jit() -> None:
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/unit/test_monitor_stats.py",
    ]
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=110, check=False
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout
