"""SQLite storage: one file, WAL mode, every call on a worker thread so trio never blocks."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import trio

from ..errors import StorageError
from ..ids import ActorId
from .base import UNCHANGED, ActorRecord, StoredStream, WriteSet

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS actors (
    actor TEXT PRIMARY KEY, namespace TEXT NOT NULL, name TEXT NOT NULL, alarm REAL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS actors_alarm ON actors (alarm) WHERE alarm IS NOT NULL;
CREATE TABLE IF NOT EXISTS kv (
    actor TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (actor, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS streams (
    actor TEXT NOT NULL, stream TEXT NOT NULL, attachment BLOB NOT NULL,
    last_id TEXT NOT NULL DEFAULT '0', PRIMARY KEY (actor, stream)
) WITHOUT ROWID;
"""


class SQLiteBackend:
    """Durable state in one SQLite file.

    ``synchronous=NORMAL`` in WAL mode (the default) survives a killed process; ``full``
    also survives power loss, at the cost of an fsync per commit.
    """

    def __init__(self, path: str | Path, *, durability: str = "normal") -> None:
        self.path = Path(path)
        if durability not in ("normal", "full"):
            raise ValueError("durability must be 'normal' or 'full'")
        self._sync = durability.upper()
        self._db: sqlite3.Connection | None = None
        self._limiter = trio.CapacityLimiter(1)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        db = self._db
        if db is None:
            raise StorageError("storage is not open")

        def call() -> T:
            try:
                return fn(db)
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.rollback()
                raise StorageError(f"storage failed: {exc}") from exc

        return await trio.to_thread.run_sync(call, limiter=self._limiter)

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            try:
                db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(f"PRAGMA synchronous={self._sync}")
                db.execute("PRAGMA busy_timeout=5000")
                db.executescript(_SCHEMA)
                return db
            except sqlite3.Error as exc:
                raise StorageError(f"cannot open storage at {self.path}: {exc}") from exc

        self._db = await trio.to_thread.run_sync(connect, limiter=self._limiter)

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await trio.to_thread.run_sync(db.close, limiter=self._limiter)

    async def load(self, actor: ActorId) -> ActorRecord:
        def load(db: sqlite3.Connection) -> ActorRecord:
            rows = db.execute("SELECT key, value FROM kv WHERE actor = ?", (actor.hex,))
            values = {k: bytes(v) for k, v in rows}
            row = db.execute("SELECT alarm FROM actors WHERE actor = ?", (actor.hex,)).fetchone()
            return ActorRecord(values, row[0] if row else None)

        return await self._run(load)

    async def commit(self, actor: ActorId, writes: WriteSet) -> None:
        key = actor.hex

        def commit(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT OR IGNORE INTO actors (actor, namespace, name) VALUES (?, ?, ?)",
                (key, actor.namespace, actor.name),
            )
            if writes.alarm is not UNCHANGED:
                db.execute("UPDATE actors SET alarm = ? WHERE actor = ?", (writes.alarm, key))
            if writes.deletes:
                db.executemany(
                    "DELETE FROM kv WHERE actor = ? AND key = ?", [(key, k) for k in writes.deletes]
                )
            if writes.puts:
                db.executemany(
                    "INSERT OR REPLACE INTO kv (actor, key, value) VALUES (?, ?, ?)",
                    [(key, k, v) for k, v in writes.puts.items()],
                )
            if writes.streams_removed:
                db.executemany(
                    "DELETE FROM streams WHERE actor = ? AND stream = ?",
                    [(key, s) for s in writes.streams_removed],
                )
            if writes.streams_added:
                db.executemany(
                    "INSERT OR REPLACE INTO streams (actor, stream, attachment) VALUES (?, ?, ?)",
                    [(key, s, a) for s, a in writes.streams_added.items()],
                )
            db.execute("COMMIT")

        await self._run(commit)

    async def alarms(self) -> list[tuple[ActorId, float]]:
        def alarms(db: sqlite3.Connection) -> list[tuple[ActorId, float]]:
            rows = db.execute(
                "SELECT namespace, name, alarm FROM actors WHERE alarm IS NOT NULL"
            ).fetchall()
            return [(ActorId(ns, name), float(when)) for ns, name, when in rows]

        return await self._run(alarms)

    async def streams(self) -> list[StoredStream]:
        def streams(db: sqlite3.Connection) -> list[StoredStream]:
            rows = db.execute(
                "SELECT a.namespace, a.name, s.stream, s.attachment, s.last_id"
                " FROM streams s JOIN actors a ON a.actor = s.actor"
            ).fetchall()
            return [
                StoredStream(ActorId(ns, n), sid, bytes(att), int(last))
                for ns, n, sid, att, last in rows
            ]

        return await self._run(streams)

    async def names(self, namespace: str, *, after: str = "", limit: int = 100) -> list[str]:
        def names(db: sqlite3.Connection) -> list[str]:
            rows = db.execute(
                "SELECT name FROM actors a WHERE namespace = ? AND name > ?"
                " AND EXISTS (SELECT 1 FROM kv WHERE kv.actor = a.actor)"
                " ORDER BY name LIMIT ?",
                (namespace, after, limit),
            )
            return [name for (name,) in rows]

        return await self._run(names)

    async def save_positions(self, positions: list[tuple[ActorId, str, int]]) -> None:
        def save(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "UPDATE streams SET last_id = ? WHERE actor = ? AND stream = ?",
                [(str(last), actor.hex, sid) for actor, sid, last in positions],
            )
            db.execute("COMMIT")

        await self._run(save)
