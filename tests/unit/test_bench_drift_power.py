"""bench/drift_power.py: the Wilson interval against scipy's, the simulation is deterministic per seed and
counts what the engine decides, and the section renders from its saved results alone."""

from __future__ import annotations

import argparse

import pytest
from scipy import stats as sps

from bench import drift_power


@pytest.mark.parametrize(("hits", "n"), [(0, 50), (3, 600), (297, 300), (150, 300)])
def test_wilson_matches_scipy(hits: int, n: int) -> None:
    ci = sps.binomtest(hits, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert drift_power.wilson(hits, n) == pytest.approx((ci.low, ci.high), abs=2e-4)  # z = 1.96 vs exact


def test_simulation_is_seeded_and_counts_the_decisions() -> None:
    args = (0, 2_000, 1, 1000, 2, 3, 1.0, 5)  # a 1-sd shift: every window drifts, K = 2 enters at window 2
    first, again = drift_power.simulate(*args), drift_power.simulate(*args)
    assert first == again
    for mode in drift_power.MODES:
        assert first[mode] == {"windows": 6, "raw": 6, "versions": 2, "mean_windows_to_enter": 2.0}
    quiet = drift_power.simulate(0, 2_000, 1, 20, 1, 3, 0.0, 5)  # 20-row windows: too small to count
    assert quiet["fixed"]["windows"] == quiet["calibrated"]["windows"] == 0


def test_render_and_goals_read_only_the_results() -> None:
    case = drift_power.simulate(0, 2_000, 1, 1000, 1, 2, 0.0, 1)
    results = {
        "seed": 1,
        "consecutive": 2,
        "versions": 1,
        "windows": 2,
        "cases": [{"null": case, "shifted": case}],
        "meta": {"command": "python -m bench drift-power", "elapsed_s": 1.0, "environment": {}},
    }
    text = drift_power.render(results)
    assert "| 2,000 | 1 | 1,000 | calibrated |" in text
    assert len(drift_power.goals(results)) == 4
    parser = argparse.ArgumentParser()
    drift_power.SECTION.add_arguments(parser)  # type: ignore[misc]
    assert parser.parse_args([]).power_versions == 600
