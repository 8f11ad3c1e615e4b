"""The start-up heap freeze: what is alive at start-up leaves the cyclic collector's scans."""

from __future__ import annotations

import gc

from gateway.server import freeze_startup_heap


def test_freeze_moves_startup_objects_out_of_every_generation_and_collects_garbage_first() -> None:
    survivor: list[object] = []
    cycle: list[object] = []
    cycle.append(cycle)
    cycle_id = id(cycle)
    del cycle
    try:
        frozen = freeze_startup_heap()
        assert frozen == gc.get_freeze_count() > 0
        tracked = {id(obj) for obj in gc.get_objects()}
        assert id(survivor) not in tracked  # frozen: no generation scans it any more
        assert cycle_id not in tracked  # the garbage cycle was collected before the freeze, not frozen
        later: list[object] = []
        assert any(obj is later for obj in gc.get_objects())  # objects made afterwards are tracked as usual
    finally:
        gc.unfreeze()
