"""Mirrored copies of a rollout, sent in groups: how copies are grouped into one request, run (with a
failed group re-run copy by copy) and compared (one vectorised comparison per group, counted per copy),
all off the event loop.
:class:`gateway.rollout_live.LiveRollout` decides which copies are made and records the outcomes.

Contracts: :func:`group_copies` keeps copies of different batch keys apart and never puts more than the
target's ``max_batch_size`` rows in one request (a lone copy over it goes alone: the target judges it);
:func:`run_groups` runs on the target runner's executor thread and returns, per group, per copy and in
order, its own rows of every asked output or its own error, and the group's agreement counts;
:func:`agreement_counts` returns (rows, agreeing rows) per copy that both versions answered.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.agreement import agreeing_mask, agreeing_rows
from gateway.batcher import THREAD_HOP_S
from gateway.collate import batch_key, bucket_for, check_rows, pad, split, stack, unpad
from gateway.errors import UnavailableError
from gateway.version import LoadedVersion

__all__ = ["Answer", "Comparison", "Copy", "GroupResult", "agreement_counts", "group_copies", "run_groups"]


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


@dataclass(frozen=True, slots=True)
class Comparison:
    """How a group's answers are compared to the answering version's (:func:`agreement_counts`)."""

    kind: str
    tolerance: float
    to_candidate: bool
    index: int


@dataclass(slots=True)
class GroupResult:
    """One group's outcomes per copy, its agreement counts (None: not compared), the batches it ran as
    (rows, compute ns), and its copies' latencies as runs of the session: (copies, of them failed, padded
    rows, seconds: the session's own time plus :data:`gateway.batcher.THREAD_HOP_S`, the quantity a
    latency profile learns), so the candidate can be judged against the stable version's profile at the
    same batch size."""

    outcomes: list[Answer]
    counts: list[tuple[int, int]] | None
    batches: list[tuple[int, int]]
    runs: list[tuple[int, int, int, float]] = field(default_factory=list)


def run_groups(
    target: LoadedVersion,
    instance: int,
    groups: list[list[Copy]],
    names: tuple[str, ...],
    comparison: Comparison | None,
    ended: Callable[[], bool] = lambda: False,
) -> list[GroupResult]:
    """Runs each group as one stacked request on ``target``'s instance ``instance``, on the calling thread
    (the runner's executor thread: :meth:`gateway.runner.Runner.call`), and compares the answers there,
    so the event loop only records the results. Rows are padded to the target's buckets; each batch's
    latency (compute plus :data:`gateway.batcher.THREAD_HOP_S`, as the executor path learns it) feeds
    the instance's profile. A stack that fails is re-run copy by copy, so only a copy that fails alone
    gets an error. Once ``ended()`` (the rollout was closed while the groups waited for the thread), the
    groups left are not run: each copy gets UnavailableError."""
    runner, batcher = target.runner, target.batcher
    profile = batcher.profiles[instance]
    batchable = target.max_batch_size > 0
    batches: list[tuple[int, int]] = []
    runs: list[tuple[int, int, int, float]] = []

    def run(feeds: dict[str, npt.NDArray[Any]], rows: int, copies: int) -> list[npt.NDArray[Any]]:
        padded = bucket_for(rows, batcher.buckets)
        if padded > rows:
            feeds = pad(feeds, rows, padded)
        begin = time.perf_counter_ns()
        try:
            outputs = unpad(runner.run_timed(instance, feeds, names), rows, padded)
        finally:
            seconds = runner.last_compute_ns[instance] / 1e9 + THREAD_HOP_S
            runs.append((copies, copies, padded, seconds))  # failed until it returns
        runs[-1] = (copies, 0, padded, seconds)
        profile.observe(padded, seconds)
        batches.append((rows, time.perf_counter_ns() - begin))
        if batchable:
            check_rows(outputs, rows)
        return outputs

    results: list[GroupResult] = []
    for group in groups:
        if ended():
            gone = UnavailableError(f"{target.model}:{target.version}: the rollout ended")
            results.append(GroupResult([gone] * len(group), None, []))
            continue
        outcomes: list[Answer] | None = None
        runs = []
        if len(group) > 1:
            feeds, offsets = stack([copy.feeds for copy in group])
            try:
                outcomes = list(split(run(feeds, int(offsets[-1]), len(group)), offsets))
            except Exception:
                outcomes = None  # one copy's rows may be what the target cannot take: find it
                runs = []  # the copies are judged by their own runs
        if outcomes is None:
            outcomes = []
            for copy in group:
                try:
                    outcomes.append(run(copy.feeds, copy.rows, 1))
                except Exception as exc:
                    outcomes.append(exc)
        counts = None
        if comparison is not None:
            counts = agreement_counts(
                comparison.kind,
                comparison.tolerance,
                comparison.to_candidate,
                group,
                outcomes,
                comparison.index,
            )
        results.append(GroupResult(outcomes, counts, batches, runs))
        batches = []
    return results


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
