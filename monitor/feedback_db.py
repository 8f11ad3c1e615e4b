"""Feedback persistence, in the history database: quality windows, quality state, prediction stores.

This module owns three tables next to the drift history (monitor/history.py runs every statement on
its one thread, so the event loop never waits on disk):

* ``quality_windows``: one row per closed quality window (the window's report as JSON), for
  ``GET /v1/drift/history?kind=quality``;
* ``quality_state``: per version, the hysteresis state (:class:`~monitor.decisions.TrackerState`), the
  last window's report and the baseline windows, to resume after a restart;
* ``feedback_store``: per model, an npz snapshot of its prediction store (taken every
  ``feedback_snapshot_s`` seconds when it changed, and at shutdown), so joins keep working after a
  restart. Predictions sampled after the last snapshot of a crashed process are lost.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from monitor.history import History

__all__ = ["FeedbackDB"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS quality_windows (
    id INTEGER PRIMARY KEY,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    window_index INTEGER NOT NULL,
    closed_at_ns INTEGER NOT NULL,
    degraded INTEGER NOT NULL,
    report BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS quality_by_version ON quality_windows (model, version, closed_at_ns);
CREATE TABLE IF NOT EXISTS quality_state (
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    state BLOB NOT NULL,
    PRIMARY KEY (model, version)
);
CREATE TABLE IF NOT EXISTS feedback_store (
    model TEXT PRIMARY KEY,
    data BLOB NOT NULL
);
"""


class FeedbackDB:
    """The feedback tables of ``history``'s database (open the history first)."""

    def __init__(self, history: History) -> None:
        self.history = history

    async def open(self) -> None:
        await self.history.call(lambda db: db.executescript(_SCHEMA))

    async def record(self, model: str, version: int, report: dict[str, Any], state: dict[str, Any]) -> None:
        """Store a closed window's report and the version's state after it."""
        await self.history.call(_record, model, str(version), report, state)

    async def states(self) -> dict[tuple[str, int], dict[str, Any]]:
        rows = await self.history.call(
            lambda db: db.execute("SELECT model, version, state FROM quality_state").fetchall()
        )
        return {(m, int(v)): orjson.loads(s) for m, v, s in rows}

    async def query(
        self, model: str | None, version: str | None, since_ns: int | None, limit: int
    ) -> list[dict[str, Any]]:
        """Window reports, oldest first (the last ``limit``), filtered by model, version and close time."""
        return await self.history.call(_query, model, version, since_ns, limit)  # type: ignore[no-any-return]

    async def save_stores(self, blobs: dict[str, bytes]) -> None:
        await self.history.call(_save_stores, blobs)

    async def load_stores(self) -> dict[str, bytes]:
        rows = await self.history.call(
            lambda db: db.execute("SELECT model, data FROM feedback_store").fetchall()
        )
        return {m: bytes(d) for m, d in rows}


def _record(
    db: sqlite3.Connection, model: str, version: str, report: dict[str, Any], state: dict[str, Any]
) -> None:
    with db:
        db.execute(
            "INSERT INTO quality_windows (model, version, window_index, closed_at_ns, degraded, report)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                model,
                version,
                report["index"],
                report["closed_ns"],
                int(bool(state.get("in_drift"))),
                orjson.dumps(report),
            ),
        )
        db.execute(
            "INSERT OR REPLACE INTO quality_state (model, version, state) VALUES (?, ?, ?)",
            (model, version, orjson.dumps(state)),
        )


def _query(
    db: sqlite3.Connection, model: str | None, version: str | None, since_ns: int | None, limit: int
) -> list[Any]:
    clauses: list[str] = []
    params: list[str | int] = []
    for column, value in (("model", model), ("version", version), ("closed_at_ns >=", since_ns)):
        if value is not None:
            clauses.append(f"{column} ?" if column.endswith(">=") else f"{column} = ?")
            params.append(value)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = db.execute(
        f"SELECT report FROM quality_windows {where} ORDER BY id DESC LIMIT ?", (*params, limit)
    )
    return [orjson.loads(r[0]) for r in reversed(rows.fetchall())]


def _save_stores(db: sqlite3.Connection, blobs: dict[str, bytes]) -> None:
    with db:
        db.executemany(
            "INSERT OR REPLACE INTO feedback_store (model, data) VALUES (?, ?)", list(blobs.items())
        )
