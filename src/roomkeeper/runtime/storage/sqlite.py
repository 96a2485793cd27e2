"""SQLite storage: one file in WAL mode, a writer and a reader connection, each on a worker
thread of its own so trio never blocks and a load never waits behind a commit.

Commits that arrive while the writer is busy are written together, in one transaction
(group commit): each in a SAVEPOINT of its own, so one actor's failed write fails only
that actor's caller, and every caller is released once the transaction is durable.

The WAL is checkpointed by a third connection on a thread of its own, in the background,
at most every `CHECKPOINT_INTERVAL` while commits come: SQLite's own automatic
checkpoint runs inside the commit that crosses its threshold, and made that commit (and
every caller of the groups behind it) wait for the database file's writes and fsync: the
slowest commits took 17 to 20 ms against 2 to 4 ms now (bench/commit_tail.py,
docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import attrs
import trio

from ..errors import StorageError
from ..ids import ActorId
from .base import UNCHANGED, ActorRecord, StoredStream, WriteSet

T = TypeVar("T")

log = logging.getLogger("roomkeeper.runtime")

CHECKPOINT_INTERVAL = 0.25
"""Seconds from one background checkpoint's end to the next, while commits come."""

WAL_BACKSTOP_PAGES = 4096
"""The writer's own automatic checkpoint, in pages (16 MiB of WAL at 4 KiB a page): it
runs only if the background checkpoints fall that far behind (or keep failing)."""

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

# An actor with nothing stored, no alarm and no stream keeps no row (no row per room name
# ever used).
_FORGET = (
    "DELETE FROM actors WHERE actor = ?1 AND alarm IS NULL"
    " AND NOT EXISTS (SELECT 1 FROM kv WHERE actor = ?1)"
    " AND NOT EXISTS (SELECT 1 FROM streams WHERE actor = ?1)"
)


@attrs.define(eq=False)
class _Commit:
    """One caller's writes waiting for (or in) a group transaction."""

    actor: ActorId
    writes: WriteSet
    wake: trio.Event = attrs.Factory(trio.Event)
    leading: bool = False
    finished: bool = False
    error: StorageError | None = None


def _write(db: sqlite3.Connection, actor: ActorId, writes: WriteSet) -> None:
    key = actor.hex
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
    if writes.deletes or writes.alarm is None or writes.streams_removed:
        db.execute(_FORGET, (key,))


def _write_group(db: sqlite3.Connection, group: list[_Commit]) -> None:
    """One transaction for the group; each commit in its own savepoint."""
    db.execute("BEGIN IMMEDIATE")  # sqlite3.Error here fails the whole group
    for item in group:
        db.execute("SAVEPOINT one")
        try:
            _write(db, item.actor, item.writes)
        except sqlite3.Error as exc:
            db.execute("ROLLBACK TO one")
            item.error = StorageError(f"storage failed: {exc}")
        db.execute("RELEASE one")
    db.execute("COMMIT")


def _checkpoint_wal(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


class SQLiteBackend:
    """Durable state in one SQLite file.

    ``synchronous=NORMAL`` in WAL mode (the default) survives a killed process; ``full``
    also survives power loss, at the cost of an fsync per (group) commit.
    """

    def __init__(self, path: str | Path, *, durability: str = "normal") -> None:
        self.path = Path(path)
        if durability not in ("normal", "full"):
            raise ValueError("durability must be 'normal' or 'full'")
        self._sync = durability.upper()
        self._db: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._checkpointer: sqlite3.Connection | None = None
        self._limiter = trio.CapacityLimiter(1)
        self._read_limiter = trio.CapacityLimiter(1)
        self._checkpoint_limiter = trio.CapacityLimiter(1)
        self._checkpointing: trio.Event | None = None  # set when the running one ends
        self._last_checkpoint = -math.inf
        self.checkpoints = 0
        """Background checkpoints started."""
        self._queue: list[_Commit] = []
        self._busy = False
        self.transactions = 0
        """Write transactions run (a group of commits counts once)."""

    async def _on(
        self,
        db: sqlite3.Connection | None,
        limiter: trio.CapacityLimiter,
        fn: Callable[[sqlite3.Connection], T],
    ) -> T:
        if db is None:
            raise StorageError("storage is not open")
        conn = db

        def call() -> T:
            try:
                return fn(conn)
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.rollback()
                raise StorageError(f"storage failed: {exc}") from exc

        return await trio.to_thread.run_sync(call, limiter=limiter)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._on(self._db, self._limiter, fn)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._on(self._reader, self._read_limiter, fn)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout=5000")
        return db

    async def open(self) -> None:
        def connect() -> tuple[sqlite3.Connection, sqlite3.Connection, sqlite3.Connection]:
            try:
                db = self._connect()
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(f"PRAGMA synchronous={self._sync}")
                db.execute(f"PRAGMA wal_autocheckpoint={WAL_BACKSTOP_PAGES}")
                db.executescript(_SCHEMA)
                db.execute(
                    "DELETE FROM actors WHERE alarm IS NULL"
                    " AND NOT EXISTS (SELECT 1 FROM kv WHERE kv.actor = actors.actor)"
                    " AND NOT EXISTS (SELECT 1 FROM streams s WHERE s.actor = actors.actor)"
                )
                return db, self._connect(), self._connect()
            except sqlite3.Error as exc:
                raise StorageError(f"cannot open storage at {self.path}: {exc}") from exc

        self._db, self._reader, self._checkpointer = await trio.to_thread.run_sync(
            connect, limiter=self._limiter
        )

    async def checkpointed(self) -> None:
        """Return once no background checkpoint is running."""
        if self._checkpointing is not None:
            await self._checkpointing.wait()

    async def close(self) -> None:
        if self._checkpointer is not None:
            checkpointer, self._checkpointer = self._checkpointer, None
            # After a running checkpoint (its limiter); one not started yet skips.
            await trio.to_thread.run_sync(checkpointer.close, limiter=self._checkpoint_limiter)
        if self._reader is not None:
            reader, self._reader = self._reader, None
            await trio.to_thread.run_sync(reader.close, limiter=self._read_limiter)
        if self._db is not None:
            db, self._db = self._db, None
            await trio.to_thread.run_sync(db.close, limiter=self._limiter)

    async def load(self, actor: ActorId) -> ActorRecord:
        def load(db: sqlite3.Connection) -> ActorRecord:
            db.execute("BEGIN")  # one snapshot for both reads
            try:
                rows = db.execute("SELECT key, value FROM kv WHERE actor = ?", (actor.hex,))
                values = {k: bytes(v) for k, v in rows}
                row = db.execute(
                    "SELECT alarm FROM actors WHERE actor = ?", (actor.hex,)
                ).fetchone()
            finally:
                db.execute("COMMIT")
            return ActorRecord(values, row[0] if row else None)

        return await self._read(load)

    async def commit(self, actor: ActorId, writes: WriteSet) -> None:
        """Group commit: the first caller to find the writer idle leads; callers that
        arrive meanwhile wait, and the next of them leads their whole group."""
        item = _Commit(actor, writes)
        self._queue.append(item)
        if self._busy:
            try:
                await item.wake.wait()
            except BaseException:
                if item in self._queue:  # not taken into a group yet: withdraw it
                    self._queue.remove(item)
                    if item.leading:
                        self._hand_on()
                raise  # (a group already taken commits it all the same)
            if item.finished:
                if item.error is not None:
                    raise item.error
                return
        self._busy = True
        group, self._queue = self._queue, []
        try:
            await self._run(lambda db: _write_group(db, group))
            self.transactions += 1
        except BaseException as exc:  # failed, or cancelled before the thread ran
            failure = exc if isinstance(exc, StorageError) else StorageError("commit not run")
            for each in group:
                each.error = each.error or failure
            if not isinstance(exc, StorageError):
                raise
        finally:
            for each in group:
                each.finished = True
                if each is not item:
                    each.wake.set()
            self._hand_on()
        self._checkpoint_soon()  # outside the try: nothing it does can fail a caller
        if item.error is not None:
            raise item.error

    def _hand_on(self) -> None:
        """Wake the first waiting commit to lead the next group, or mark the writer idle."""
        if self._queue:
            self._queue[0].leading = True
            self._queue[0].wake.set()
        else:
            self._busy = False

    def _checkpoint_soon(self) -> None:
        """Start a background checkpoint unless one runs or one ended less than
        `CHECKPOINT_INTERVAL` ago."""
        if self._checkpointing is not None or self._checkpointer is None:
            return
        if trio.current_time() - self._last_checkpoint < CHECKPOINT_INTERVAL:
            return
        self._checkpointing = trio.Event()
        self.checkpoints += 1
        trio.lowlevel.spawn_system_task(self._checkpoint, name="sqlite checkpoint")

    async def _checkpoint(self) -> None:
        """Copy the WAL's committed pages into the database file (``PASSIVE``: it never
        waits for the writer or a reader, and never holds them up)."""
        try:
            db = self._checkpointer
            if db is not None:
                await trio.to_thread.run_sync(_checkpoint_wal, db, limiter=self._checkpoint_limiter)
        except Exception as exc:  # a system task must not raise: the writer's backstop remains
            log.warning("background checkpoint failed: %s", exc)
        finally:
            self._last_checkpoint = trio.current_time()
            done, self._checkpointing = self._checkpointing, None
            if done is not None:
                done.set()

    async def alarms(self) -> list[tuple[ActorId, float]]:
        def alarms(db: sqlite3.Connection) -> list[tuple[ActorId, float]]:
            rows = db.execute(
                "SELECT namespace, name, alarm FROM actors WHERE alarm IS NOT NULL"
            ).fetchall()
            return [(ActorId(ns, name), float(when)) for ns, name, when in rows]

        return await self._read(alarms)

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

        return await self._read(streams)

    async def names(self, namespace: str, *, after: str = "", limit: int = 100) -> list[str]:
        def names(db: sqlite3.Connection) -> list[str]:
            rows = db.execute(
                "SELECT name FROM actors a WHERE namespace = ? AND name > ?"
                " AND EXISTS (SELECT 1 FROM kv WHERE kv.actor = a.actor)"
                " ORDER BY name LIMIT ?",
                (namespace, after, limit),
            )
            return [name for (name,) in rows]

        return await self._read(names)

    async def save_positions(self, positions: list[tuple[ActorId, str, int]]) -> None:
        def save(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "UPDATE streams SET last_id = ? WHERE actor = ? AND stream = ?",
                [(str(last), actor.hex, sid) for actor, sid, last in positions],
            )
            db.execute("COMMIT")

        await self._run(save)
