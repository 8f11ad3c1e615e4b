"""A batch predicted to compute longer than LONG_COMPUTE_S runs inside TRANSPORT.long_compute (gRPC's
transport threads preempt meanwhile, gateway/sharing.py); a short one does not. Driven by the batcher
rig's fake runner and fake clock; the transport record is a fake that notes what ran inside it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from gateway import execution
from gateway.sharing import LONG_COMPUTE_S
from tests.batcher_rig import rig, settle


class _Transport:
    def __init__(self) -> None:
        self.depth = 0
        self.blocks = 0
        self.ran_inside: list[bool] = []

    @contextlib.contextmanager
    def long_compute(self) -> Iterator[None]:
        self.depth += 1
        self.blocks += 1
        try:
            yield
        finally:
            self.depth -= 1


@pytest.mark.parametrize(("seed_s", "long"), [(LONG_COMPUTE_S * 4, True), (LONG_COMPUTE_S / 10, False)])
async def test_only_long_batches_run_with_preemptive_transport_threads(
    monkeypatch: pytest.MonkeyPatch, seed_s: float, long: bool
) -> None:
    transport = _Transport()
    monkeypatch.setattr(execution, "TRANSPORT", transport)
    r = rig(max_batch_size=4, gated=False, seed_s=seed_s)
    compute = r.runner._compute

    def noting(*args: object) -> object:
        transport.ran_inside.append(transport.depth > 0)
        return compute(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(r.runner, "_compute", noting)
    futures = [r.submit(float(i)) for i in range(3)]
    await settle()
    r.clock.advance(0.01)
    await settle()
    assert all(future.done() for future in futures)
    assert transport.ran_inside
    assert all(inside == long for inside in transport.ran_inside)
    assert transport.depth == 0
    assert (transport.blocks > 0) == long
