"""gateway/sharing.py: the busy loop's yield (driven by a fake clock and a counting yield, never the wall
clock) and the transport threads found by name in a /proc-like tree."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

from gateway.sharing import YieldingSelect, install_yield, transport_threads


class _Clock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def _select_with(clock: _Clock, interval_ns: int = 100) -> tuple[YieldingSelect, list[float | None]]:
    seen: list[float | None] = []
    yields: list[int] = []

    def select(timeout: float | None = None) -> list[str]:
        seen.append(timeout)
        return ["events"]

    wrapper = YieldingSelect(select, interval_ns, clock=clock, yield_core=lambda: yields.append(clock.now))
    return wrapper, seen


def test_a_busy_loop_yields_once_per_interval_and_only_while_enabled() -> None:
    clock = _Clock()
    select, seen = _select_with(clock)
    clock.now = 500
    assert select(0) == ["events"]
    assert select.yields == 0  # disabled until enabled
    select.enabled = True
    select(0)
    assert select.yields == 1
    clock.now = 599
    select(0)
    assert select.yields == 1  # within the interval
    clock.now = 600
    select(0)
    assert select.yields == 2
    assert seen == [0, 0, 0, 0]  # every call reached the selector with its timeout


def test_a_blocking_select_never_yields() -> None:
    clock = _Clock()
    select, seen = _select_with(clock)
    select.enabled = True
    for at, timeout in zip(itertools.count(1000, 1000), (None, 0.5, 0.001)):
        clock.now = at
        select(timeout)
    assert select.yields == 0
    assert seen == [None, 0.5, 0.001]


async def test_install_wraps_the_running_loops_selector_once_and_the_loop_still_runs() -> None:
    loop = asyncio.get_running_loop()
    wrapper = install_yield(loop, interval_ns=0)
    assert wrapper is not None
    try:
        assert install_yield(loop) is wrapper  # a second install keeps the first
        wrapper.enabled = True
        for _ in range(20):  # each sleep(0) leaves a ready callback: a select with timeout 0
            await asyncio.sleep(0)
        await asyncio.sleep(0.001)  # and a blocking select
        assert wrapper.yields > 0
    finally:
        wrapper.enabled = False


def test_a_loop_without_a_selector_gets_none() -> None:
    assert install_yield(object()) is None  # type: ignore[arg-type]


def test_transport_threads_are_found_by_name(tmp_path: Path) -> None:
    for tid, name in (
        ("101", "event_engine"),
        ("102", "python"),
        ("103", "event_engine"),
        ("x", "event_engine"),
    ):
        (tmp_path / tid).mkdir()
        (tmp_path / tid / "comm").write_text(name + "\n")
    (tmp_path / "104").mkdir()  # a thread that exited: no comm
    assert sorted(transport_threads(tmp_path)) == [101, 103]
    assert transport_threads(tmp_path / "missing") == []
