"""The data plane's hand-off to sampling: what an answered request, or a shadow copy's answer, offers to
the :class:`gateway.sampler.Sampler` (O(1) per request, never blocks; drops are counted there).

Contracts:
- :meth:`SampleOffers.answered`: the request as the client got it, under the version that answered it.
- :meth:`SampleOffers.shadow`: the candidate's answer to a shadow copy, under the candidate's version. The
  same requests are chosen as for the stable version (the per-id rule reads the original id), and it is
  shipped as ``<id>`` + :data:`gateway.rollout_live.SHADOW_ID_SUFFIX`, so the monitor's drift windows see
  shadow traffic while a client's label is never joined to an answer the client did not get.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.rollout_live import SHADOW_ID_SUFFIX
from gateway.sampler import Sampler
from gateway.validate import DecodedRequest
from gateway.version import LoadedVersion

__all__ = ["SampleOffers"]


class SampleOffers:
    """Offers answers to ``sampler`` at each version's ``[sampling]`` rate (or the override)."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler

    def answered(
        self, request_id: str, loaded: LoadedVersion, decoded: DecodedRequest, outputs: Sequence[Any]
    ) -> None:
        self._offer(loaded, request_id, request_id, decoded.feeds, decoded.output_names, outputs)

    def shadow(
        self,
        candidate: LoadedVersion,
        request_id: str,
        feeds: dict[str, Any],
        names: tuple[str, ...],
        outputs: list[Any],
    ) -> None:
        """A :data:`gateway.rollout_live.SampleHook`."""
        self._offer(candidate, request_id, request_id + SHADOW_ID_SUFFIX, feeds, names, outputs)

    def _offer(
        self,
        loaded: LoadedVersion,
        decide_id: str,
        sample_id: str,
        feeds: dict[str, Any],
        names: Sequence[str],
        outputs: Sequence[Any],
    ) -> None:
        sampler = self.sampler
        config = loaded.config.sampling
        rate = sampler.rate(config.rate)
        if not sampler.decide(decide_id, rate):
            return
        inputs = {spec.name: (spec.datatype, feeds[spec.name]) for spec in loaded.signature.inputs}
        answered = {
            name: (loaded.output_datatypes[name], array) for name, array in zip(names, outputs, strict=True)
        }
        sampler.offer(
            loaded.model, str(loaded.version), sample_id, inputs, answered, config.max_rows_per_request, rate
        )
