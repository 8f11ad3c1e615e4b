"""The start-up heap freeze: what is alive at start-up leaves the cyclic collector's scans."""

from __future__ import annotations

import gc
import weakref

from gateway.server import freeze_startup_heap


class _Node:
    """A cycle's member that can be weakly referenced (so its collection is seen without comparing ids,
    which a later object may reuse)."""

    def __init__(self) -> None:
        self.me = self


def test_freeze_moves_startup_objects_out_of_every_generation_and_collects_garbage_first() -> None:
    survivor: list[object] = []
    cycle = _Node()
    collected = weakref.ref(cycle)
    del cycle
    try:
        frozen = freeze_startup_heap()
        # Frozen objects still die when their last reference goes (other tests' threads free some), so
        # the count can only have shrunk since.
        assert 0 < gc.get_freeze_count() <= frozen
        assert collected() is None  # the garbage cycle was collected before the freeze, not frozen
        assert not any(obj is survivor for obj in gc.get_objects())  # frozen: no generation scans it
        later: list[object] = []
        assert any(obj is later for obj in gc.get_objects())  # objects made afterwards are tracked as usual
    finally:
        gc.unfreeze()
