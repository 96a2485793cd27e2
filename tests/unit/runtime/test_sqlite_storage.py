"""The SQLite backend's group commit (several callers, one transaction, each failed
alone), its read connection, its background checkpoints, and the rows it keeps (none for
an empty actor)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
import trio

from roomkeeper.runtime import SQLiteBackend, StorageError
from roomkeeper.runtime.ids import ActorId
from roomkeeper.runtime.storage import MemoryBackend, WriteSet
from roomkeeper.runtime.storage.sqlite import CHECKPOINT_INTERVAL


def writes(n: int) -> WriteSet:
    return WriteSet(puts={"k": str(n).encode()}, alarm=None)


async def test_commits_that_queue_while_the_writer_is_busy_share_a_transaction(
    tmp_path: Path,
) -> None:
    backend = SQLiteBackend(tmp_path / "db.sqlite3")
    await backend.open()
    try:
        async with trio.open_nursery() as nursery:
            for n in range(40):
                nursery.start_soon(backend.commit, ActorId("t", f"a{n}"), writes(n))
        assert 2 <= backend.transactions < 40  # the first alone, the rest grouped
        for n in range(40):
            record = await backend.load(ActorId("t", f"a{n}"))
            assert record.values == {"k": str(n).encode()}
    finally:
        await backend.close()


async def test_a_failing_commit_in_a_group_fails_only_its_caller(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "db.sqlite3")
    await backend.open()
    outcome: dict[int, str] = {}

    async def commit(n: int) -> None:
        bad = WriteSet(puts={"k": None})  # type: ignore[dict-item]  # NOT NULL fails
        try:
            await backend.commit(ActorId("t", f"a{n}"), bad if n == 5 else writes(n))
            outcome[n] = "ok"
        except StorageError:
            outcome[n] = "failed"

    try:
        async with trio.open_nursery() as nursery:
            for n in range(10):
                nursery.start_soon(commit, n)
        assert backend.transactions < 10
        assert outcome == {n: "failed" if n == 5 else "ok" for n in range(10)}
        assert (await backend.load(ActorId("t", "a5"))).values == {}
        assert (await backend.load(ActorId("t", "a6"))).values == {"k": b"6"}
    finally:
        await backend.close()


async def test_a_cancelled_waiting_commit_does_not_stall_the_others(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "db.sqlite3")
    await backend.open()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(backend.commit, ActorId("t", "first"), writes(0))
            await trio.lowlevel.checkpoint()
            with trio.CancelScope() as scope:
                scope.cancel()
                await backend.commit(ActorId("t", "cancelled"), writes(1))
            nursery.start_soon(backend.commit, ActorId("t", "after"), writes(2))
        await backend.commit(ActorId("t", "last"), writes(3))
        assert (await backend.load(ActorId("t", "after"))).values == {"k": b"2"}
    finally:
        await backend.close()


async def test_commits_cancelled_anywhere_in_the_queue_leave_the_writer_working(
    tmp_path: Path,
) -> None:
    """Callers cancelled while they wait, lead, or wait on a group in flight (a deadline
    over many busy actors hits all three): the others go on, the next commit works."""
    backend = SQLiteBackend(tmp_path / "db.sqlite3")
    await backend.open()

    async def loop(n: int) -> None:
        for i in range(10**9):
            await backend.commit(ActorId("t", f"a{n}"), writes(i))

    try:
        for _ in range(5):
            with trio.move_on_after(0.05):
                async with trio.open_nursery() as nursery:
                    for n in range(32):
                        nursery.start_soon(loop, n)
        await backend.commit(ActorId("t", "last"), writes(1))
        assert (await backend.load(ActorId("t", "last"))).values == {"k": b"1"}
        assert not backend._queue and not backend._busy
    finally:
        await backend.close()


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
async def test_an_actor_with_nothing_stored_keeps_no_row(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    backend = SQLiteBackend(path) if kind == "sqlite" else MemoryBackend()
    await backend.open()
    actor = ActorId("rooms", "r")
    await backend.commit(actor, WriteSet(puts={"k": b"1"}, streams_added={"s": b"{}"}))
    await backend.commit(actor, WriteSet(deletes={"k"}, alarm=5.0))
    assert await backend.alarms() == [(actor, 5.0)]
    await backend.commit(actor, WriteSet(alarm=None))  # a stream is still stored
    assert len(await backend.streams()) == 1
    await backend.commit(actor, WriteSet(streams_removed={"s"}))
    assert await backend.alarms() == [] and await backend.streams() == []
    await backend.close()
    if isinstance(backend, SQLiteBackend):
        db = sqlite3.connect(path)
        assert db.execute("SELECT count(*) FROM actors").fetchone() == (0,)
        db.close()
    else:
        assert backend.ids == {} and backend.values == {}


def _in_the_database_file(path: Path, copy: Path) -> set[str]:
    """The actors whose rows are in ``path`` itself, not only in its WAL: what a
    checkpoint has copied there (read from a copy of the file alone)."""
    shutil.copyfile(path, copy)
    db = sqlite3.connect(copy)
    try:
        return {name for (name,) in db.execute("SELECT name FROM actors")}
    finally:
        db.close()


async def test_the_wal_is_checkpointed_in_the_background_at_most_once_an_interval(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    """SQLite's own checkpoint would wait for 1,000 pages, inside the commit that crossed
    them; a row reaches the database file soon after its commit, and the commit did not
    wait for that."""
    path = tmp_path / "db.sqlite3"
    backend = SQLiteBackend(path)
    await backend.open()
    try:
        await backend.commit(ActorId("t", "a"), writes(1))
        assert backend.checkpoints == 1  # started by the commit, run in the background
        await backend.checkpointed()
        assert _in_the_database_file(path, tmp_path / "copy.sqlite3") == {"a"}
        await backend.commit(ActorId("t", "b"), writes(2))
        assert backend.checkpoints == 1  # the last one ended less than an interval ago
        mock_clock.jump(CHECKPOINT_INTERVAL)
        await backend.commit(ActorId("t", "c"), writes(3))
        assert backend.checkpoints == 2
    finally:
        await backend.close()
