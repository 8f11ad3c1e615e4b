"""Mirrored copies of a rollout, sent in groups: how copies are grouped into one request, sent (with a
failed group re-sent copy by copy) and compared (one vectorised comparison per group, counted per copy).
:class:`gateway.rollout_live.LiveRollout` decides which copies are made and records the outcomes.

Contracts: :func:`group_copies` keeps copies of different batch keys apart and never puts more than the
target's ``max_batch_size`` rows in one request (a lone copy over it goes alone: the target judges it);
:func:`send_group` returns, per copy and in order, its own rows of every asked output or its own error;
:func:`agreement_counts` returns (rows, agreeing rows) per copy that both versions answered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.agreement import agreeing_mask, agreeing_rows
from gateway.collate import batch_key, split, stack
from gateway.errors import DeadlineExceededError, ResourceExhaustedError, UnavailableError
from gateway.validate import DecodedRequest
from gateway.version import LoadedVersion

__all__ = ["Answer", "Copy", "agreement_counts", "group_copies", "send_group"]


@dataclass(slots=True)
class Copy:
    """One mirrored request: its decoded inputs and the answering version's compared output (or None)."""

    feeds: dict[str, npt.NDArray[Any]]
    rows: int
    answer: npt.NDArray[Any] | None
    request_id: str = ""


def group_copies(copies: list[Copy], max_rows: int) -> list[list[Copy]]:
    """Copies that may share one request: same batch key, at most ``max_rows`` rows (0: one copy each),
    in the order the groups were opened."""
    if max_rows <= 0:
        return [[copy] for copy in copies]
    open_chunks: dict[Any, tuple[list[Copy], int]] = {}  # batch key -> (its last chunk, that chunk's rows)
    chunks: list[list[Copy]] = []
    for copy in copies:
        key = batch_key(copy.feeds)
        chunk, rows = open_chunks.get(key, ([], 0))
        if chunk and rows + copy.rows > max_rows:
            chunk, rows = [], 0
        if not chunk:
            chunks.append(chunk)
        chunk.append(copy)
        open_chunks[key] = (chunk, rows + copy.rows)
    return chunks


Answer = list[npt.NDArray[Any]] | BaseException


async def send_group(
    target: LoadedVersion, group: list[Copy], names: tuple[str, ...], deadline: float
) -> list[Answer]:
    """One stacked request for ``group`` asking for outputs ``names``; per copy its rows of each output, or
    its error. A stack the target
    refused for load (shed, queue full, unloading) gives every copy that error; one that failed otherwise
    is re-sent copy by copy, so only a copy that fails alone gets an error."""
    priority = target.config.batching.priority_levels
    if len(group) > 1:
        feeds, offsets = stack([copy.feeds for copy in group])
        request = DecodedRequest(feeds, int(offsets[-1]), names)
        try:
            result = await target.batcher.submit(request, deadline, priority)
            return list(split(result.outputs, offsets))
        except (DeadlineExceededError, ResourceExhaustedError, UnavailableError) as refused:
            return [refused] * len(group)
        except Exception:
            pass  # one copy's rows may be what the target cannot take: find it
    outcomes: list[Answer] = []
    for copy in group:
        try:
            result = await target.batcher.submit(
                DecodedRequest(copy.feeds, copy.rows, names), deadline, priority
            )
            outcomes.append(list(result.outputs))
        except Exception as exc:
            outcomes.append(exc)
    return outcomes


def agreement_counts(
    kind: str,
    tolerance: float,
    to_candidate: bool,
    group: list[Copy],
    outcomes: list[Answer],
    index: int,
) -> list[tuple[int, int]]:
    """(rows, agreeing rows) per copy with an answer from both versions, in group order, comparing output
    ``index`` of each outcome: one comparison over the stacked rows, or one per copy when the outputs'
    shapes differ."""
    pairs = [
        (copy.answer, out[index]) for copy, out in zip(group, outcomes, strict=True)
        if copy.answer is not None and not isinstance(out, BaseException)
    ]  # fmt: skip
    if not pairs:
        return []
    try:
        mine = np.concatenate([out for _, out in pairs])
        theirs = np.concatenate([answer for answer, _ in pairs])
    except ValueError:  # outputs of differing shapes: one comparison per copy
        return [
            agreeing_rows(kind, *((out, answer) if to_candidate else (answer, out)), tolerance)
            for answer, out in pairs
        ]
    cand, stable = (mine, theirs) if to_candidate else (theirs, mine)
    mask = agreeing_mask(kind, cand, stable, tolerance).astype(np.int64)
    sizes = [len(out) for _, out in pairs]
    starts = np.cumsum([0, *sizes[:-1]])
    return [(size, int(n)) for size, n in zip(sizes, np.add.reduceat(mask, starts), strict=True)]
