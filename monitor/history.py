"""Drift history: every evaluated window, kept in SQLite so it survives a restart.

This module owns the monitor's storage: one row per evaluated window (the report entry as JSON, with
its model, version, window number, close time and verdict) and one row per version with the drift state
(:class:`~monitor.decisions.TrackerState`) to resume after a restart. The database runs in WAL mode;
``path`` None keeps it in memory (tests). All SQLite work happens on one thread owned by the store
(sqlite3 connections belong to a thread), so the event loop never waits on disk.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson

from monitor.decisions import TrackerState

__all__ = ["History"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS windows (
    id INTEGER PRIMARY KEY,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    window_index INTEGER NOT NULL,
    closed_at_ns INTEGER NOT NULL,
    drift INTEGER NOT NULL,
    report BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS windows_by_version ON windows (model, version, closed_at_ns);
CREATE INDEX IF NOT EXISTS windows_by_time ON windows (closed_at_ns);
CREATE TABLE IF NOT EXISTS versions (
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    state TEXT NOT NULL,
    report BLOB,
    PRIMARY KEY (model, version)
);
"""


class History:
    """The history store; :meth:`open` before use, :meth:`close` when done."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="monitor-history")
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        if self._path is not None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self._path) if self._path is not None else ":memory:")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.commit()

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    async def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(connection, *args)`` on the store's thread (for other tables in the same database,
        e.g. monitor/feedback_db.py); returns its result."""
        return await self._run(lambda: fn(self._connection(), *args))

    async def record(self, entry: dict[str, Any], closed_at_ns: int, state: TrackerState) -> None:
        """Store one evaluated window's report entry and the version's drift state after it."""
        await self._run(self._record, entry, closed_at_ns, state)

    def _record(self, entry: dict[str, Any], closed_at_ns: int, state: TrackerState) -> None:
        db = self._connection()
        report = orjson.dumps(entry)
        with db:
            db.execute(
                "INSERT INTO windows (model, version, window_index, closed_at_ns, drift, report)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    entry["model"],
                    entry["version"],
                    entry["window"]["index"],
                    closed_at_ns,
                    int(entry["window"]["drift"]),
                    report,
                ),
            )
            db.execute(
                "INSERT OR REPLACE INTO versions (model, version, state, report) VALUES (?, ?, ?, ?)",
                (entry["model"], entry["version"], orjson.dumps(dataclasses.asdict(state)).decode(), report),
            )

    async def query(
        self, model: str | None, version: str | None, since_ns: int | None, limit: int
    ) -> list[dict[str, Any]]:
        """Report entries of evaluated windows, oldest first, filtered by model, version and close time
        (``closed_at >= since``); at most ``limit`` (the most recent ones when there are more)."""
        return await self._run(self._query, model, version, since_ns, limit)  # type: ignore[no-any-return]

    def _query(self, model: str | None, version: str | None, since_ns: int | None, limit: int) -> list[Any]:
        clauses: list[str] = []
        params: list[str | int] = []
        for column, value in (("model", model), ("version", version)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if since_ns is not None:
            clauses.append("closed_at_ns >= ?")
            params.append(since_ns)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._connection().execute(
            f"SELECT report FROM windows {where} ORDER BY closed_at_ns DESC, id DESC LIMIT ?",
            (*params, limit),
        )
        return [orjson.loads(r[0]) for r in reversed(rows.fetchall())]

    async def latest(self) -> list[dict[str, Any]]:
        """The last stored report entry of every version, for ``GET /v1/drift`` after a restart."""
        return await self._run(self._latest)  # type: ignore[no-any-return]

    def _latest(self) -> list[Any]:
        rows = self._connection().execute(
            "SELECT report FROM versions WHERE report IS NOT NULL ORDER BY model, version"
        )
        return [orjson.loads(r[0]) for r in rows.fetchall()]

    async def state(self, model: str, version: int) -> TrackerState | None:
        """The drift state stored for a version, or None."""
        return await self._run(self._state, model, str(version))  # type: ignore[no-any-return]

    def _state(self, model: str, version: str) -> TrackerState | None:
        row = (
            self._connection()
            .execute("SELECT state FROM versions WHERE model = ? AND version = ?", (model, version))
            .fetchone()
        )
        if row is None:
            return None
        data = orjson.loads(row[0])
        known = {f.name for f in dataclasses.fields(TrackerState)}
        return TrackerState(**{k: v for k, v in data.items() if k in known})

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("history is not open")
        return self._db
