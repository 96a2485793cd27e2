"""PostgresBackend against a real PostgreSQL: storage semantics, leases, fencing, faults.

Each test gets its own empty database on the session's throwaway server. Lease expiry is
decided by PostgreSQL's clock, so the tests that need a lease to expire use a short TTL
and wait for it for real (polling, never asserting on a duration).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
import trio

from roomkeeper.runtime.errors import Fenced, StorageError
from roomkeeper.runtime.ids import ActorId
from roomkeeper.runtime.leases import Granted, HeldElsewhere, lease_store
from roomkeeper.runtime.storage import PostgresBackend, StoredStream, WriteSet
from roomkeeper.runtime.storage.postgres import sql

from ..support.postgres import PostgresServer

ROOM = ActorId("rooms", "alpha")
LONG = 60.0  # a TTL no test outlives
SHORT = 0.5  # a TTL a test waits out


@asynccontextmanager
async def opened(
    dsn: str, node: str = "node-a", ttl: float = LONG, **kw: Any
) -> AsyncIterator[PostgresBackend]:
    backend = PostgresBackend(dsn, node_id=node, address=f"http://{node}.test", lease_ttl=ttl, **kw)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


def query(dsn: str, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(statement, args or None)
        return cur.fetchall() if cur.description else []


async def until(found: Callable[[], object]) -> None:
    """Poll PostgreSQL until ``found()`` is true (at most 30 s)."""
    with trio.fail_after(30):
        while True:
            if found():
                return
            await trio.sleep(0.02)


async def owned(backend: PostgresBackend, actor: ActorId = ROOM) -> int:
    got = await backend.acquire(actor)
    assert isinstance(got, Granted), got
    return got.epoch


async def wait_until_expired(dsn: str, actor: ActorId = ROOM) -> None:
    """Until PostgreSQL's clock says the actor's lease has expired."""
    expired = "SELECT 1 FROM leases WHERE actor = %s AND expires_at < clock_timestamp()"
    await until(lambda: query(dsn, expired, actor.hex))


# --- storage, as SQLite does it --------------------------------------------------------------


async def test_is_a_lease_store(postgres_dsn: str) -> None:
    backend = PostgresBackend(postgres_dsn, node_id="n", address="http://n.test")
    assert lease_store(backend) is backend


async def test_values_round_trip_and_deletes(postgres_dsn: str) -> None:
    every_byte = bytes(range(256))
    async with opened(postgres_dsn) as db:
        await owned(db)
        assert (await db.load(ROOM)).values == {}
        await db.commit(ROOM, WriteSet(puts={"a": b"1", "bin": every_byte, "gone": b"x"}))
        await db.commit(ROOM, WriteSet(puts={"a": b"2"}, deletes={"gone"}))
        record = await db.load(ROOM)
        assert record.values == {"a": b"2", "bin": every_byte}
        assert record.alarm is None
        assert record.streams == ()


async def test_alarm_set_and_cleared(postgres_dsn: str) -> None:
    async with opened(postgres_dsn) as db:
        await owned(db)
        await db.commit(ROOM, WriteSet(alarm=1234.5))
        assert (await db.load(ROOM)).alarm == 1234.5
        await db.commit(ROOM, WriteSet(puts={"k": b"v"}))  # alarm UNCHANGED
        assert (await db.load(ROOM)).alarm == 1234.5
        await db.commit(ROOM, WriteSet(alarm=None))
        assert (await db.load(ROOM)).alarm is None
        # The process-wide start-up lists stay empty on a shared store (see the module).
        assert await db.alarms() == []


async def test_an_actor_with_nothing_left_keeps_no_row(postgres_dsn: str) -> None:
    async with opened(postgres_dsn) as db:
        await owned(db)
        await db.commit(ROOM, WriteSet(puts={"k": b"v"}, alarm=5.0, streams_added={"s1": b"{}"}))
        assert query(postgres_dsn, "SELECT count(*) FROM actors") == [(1,)]
        await db.commit(ROOM, WriteSet(deletes={"k"}, alarm=None))
        assert query(postgres_dsn, "SELECT count(*) FROM actors") == [(1,)]  # the stream
        await db.commit(ROOM, WriteSet(streams_removed={"s1"}))
        assert query(postgres_dsn, "SELECT count(*) FROM actors") == [(0,)]
        # Deleting what was never stored creates nothing either.
        await db.commit(ROOM, WriteSet(deletes={"nothing"}, alarm=None))
        assert query(postgres_dsn, "SELECT count(*) FROM actors") == [(0,)]


async def test_names_are_paged_in_order_per_namespace(postgres_dsn: str) -> None:
    async with opened(postgres_dsn) as db:
        for name in ("c", "a", "b", "d"):
            actor = ActorId("rooms", name)
            await owned(db, actor)
            await db.commit(actor, WriteSet(puts={"k": b"v"}))
        other = ActorId("other", "a")
        await owned(db, other)
        await db.commit(other, WriteSet(puts={"k": b"v"}))
        only_alarm = ActorId("rooms", "bb")
        await owned(db, only_alarm)
        await db.commit(only_alarm, WriteSet(alarm=9.0))  # no values: not listed

        assert await db.names("rooms", limit=2) == ["a", "b"]
        assert await db.names("rooms", after="b", limit=2) == ["c", "d"]
        assert await db.names("rooms", after="d") == []
        assert await db.names("other") == ["a"]


async def test_streams_are_reported_per_actor_at_load(postgres_dsn: str) -> None:
    other = ActorId("rooms", "beta")
    async with opened(postgres_dsn) as db:
        await owned(db)
        await owned(db, other)
        await db.commit(ROOM, WriteSet(streams_added={"s1": b'{"p":1}', "s2": b'{"p":2}'}))
        await db.commit(other, WriteSet(streams_added={"s9": b"{}"}))
        await db.save_positions([(ROOM, "s1", 7), (ROOM, "nope", 3), (other, "s9", 2)])
        await db.commit(ROOM, WriteSet(streams_removed={"s2"}))

        record = await db.load(ROOM)
        assert record.streams == (StoredStream(ROOM, "s1", b'{"p":1}', 7),)
        assert (await db.load(other)).streams == (StoredStream(other, "s9", b"{}", 2),)
        # Re-adding a stream starts its position again, as on SQLite.
        await db.commit(ROOM, WriteSet(streams_added={"s1": b"{}"}))
        assert (await db.load(ROOM)).streams == (StoredStream(ROOM, "s1", b"{}", 0),)
        assert await db.streams() == []


# --- fencing -----------------------------------------------------------------------------------


async def test_commit_without_a_lease_is_fenced_and_writes_nothing(postgres_dsn: str) -> None:
    async with opened(postgres_dsn) as db:
        with pytest.raises(Fenced):
            await db.commit(ROOM, WriteSet(puts={"k": b"v"}))
        assert query(postgres_dsn, "SELECT count(*) FROM kv") == [(0,)]
        epoch = await owned(db)
        db.forget(ROOM)
        with pytest.raises(Fenced):
            await db.commit(ROOM, WriteSet(puts={"k": b"v"}))
        await db.release(ROOM, epoch)
        assert query(postgres_dsn, "SELECT count(*) FROM kv") == [(0,)]


async def test_expired_lease_is_taken_over_and_the_old_owner_is_fenced(postgres_dsn: str) -> None:
    async with opened(postgres_dsn, "node-a", SHORT) as a, opened(postgres_dsn, "node-b") as b:
        epoch = await owned(a)
        await a.commit(ROOM, WriteSet(puts={"k": b"from a"}))

        held = await b.acquire(ROOM)
        assert isinstance(held, HeldElsewhere)
        assert (held.owner, held.address) == ("node-a", "http://node-a.test")
        assert 0 < held.expires_in <= SHORT

        await wait_until_expired(postgres_dsn)
        assert await b.acquire(ROOM) == Granted(epoch + 1)
        with pytest.raises(Fenced):
            await a.commit(ROOM, WriteSet(puts={"k": b"stale"}, alarm=1.0))
        assert (await b.load(ROOM)).values == {"k": b"from a"}
        assert query(postgres_dsn, "SELECT alarm FROM actors") == [(None,)]
        # The old owner's renewal finds the lease gone.
        assert await a.renew({ROOM: epoch}) == set()


async def test_a_takeover_waits_for_an_in_flight_fenced_write(postgres_dsn: str) -> None:
    async with opened(postgres_dsn, "node-a", SHORT) as a, opened(postgres_dsn, "node-b") as b:
        epoch = await owned(a)
        # node-a's commit, frozen between its fence and its COMMIT.
        with psycopg.connect(postgres_dsn) as writer:
            fence = writer.execute(sql.FENCE, {"actor": ROOM.hex, "epoch": epoch, "me": "node-a"})
            assert fence.rowcount == 1
            await wait_until_expired(postgres_dsn)

            result: list[Granted | HeldElsewhere] = []
            async with trio.open_nursery() as nursery:

                async def take_over() -> None:
                    result.append(await b.acquire(ROOM))

                nursery.start_soon(take_over)
                waiting = (
                    "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE '%%INSERT INTO leases%%'"
                )
                await until(lambda: query(postgres_dsn, waiting))  # node-b waits on the row
                assert result == []
                writer.execute(sql.PUT_KEY, (ROOM.hex, "k", b"in flight"))
                writer.commit()
        assert result == [Granted(epoch + 1)]
        assert (await b.load(ROOM)).values == {"k": b"in flight"}
        with pytest.raises(Fenced):
            await a.commit(ROOM, WriteSet(puts={"k": b"after"}))
        assert (await b.load(ROOM)).values == {"k": b"in flight"}


async def test_concurrent_acquires_grant_exactly_one(postgres_dsn: str) -> None:
    async with (
        opened(postgres_dsn, "n1", SHORT) as n1,
        opened(postgres_dsn, "n2", SHORT) as n2,
        opened(postgres_dsn, "n3", SHORT) as n3,
    ):
        for actor in (ActorId("rooms", "new"), ActorId("rooms", "expiring")):
            if actor.name == "expiring":  # a lease that expired, taken by no one yet
                await owned(n1, actor)
                await wait_until_expired(postgres_dsn, actor)
                n1.forget(actor)
            results: list[Granted | HeldElsewhere] = []

            async def race(node: PostgresBackend, actor: ActorId, into: list[object]) -> None:
                into.append(await node.acquire(actor))

            async with trio.open_nursery() as nursery:
                for node in (n1, n2, n3):
                    nursery.start_soon(race, node, actor, results)
            granted = [r for r in results if isinstance(r, Granted)]
            assert len(granted) == 1, results
            assert len(results) == 3


async def test_release_lets_another_node_acquire_at_once(postgres_dsn: str) -> None:
    async with opened(postgres_dsn, "node-a") as a, opened(postgres_dsn, "node-b") as b:
        epoch = await owned(a)
        await a.release(ROOM, epoch)
        assert await b.acquire(ROOM) == Granted(epoch + 1)
        with pytest.raises(Fenced):
            await a.commit(ROOM, WriteSet(puts={"k": b"v"}))
        # Re-acquiring its own live lease gives a node a new epoch, fencing the old one.
        assert await b.acquire(ROOM) == Granted(epoch + 2)
        await b.commit(ROOM, WriteSet(puts={"k": b"v"}))


async def test_renew_returns_only_live_leases(postgres_dsn: str) -> None:
    x, y, z, w = (ActorId("rooms", n) for n in "xyzw")
    async with (
        opened(postgres_dsn, "node-a") as a,
        opened(postgres_dsn, "node-a", SHORT) as a_short,  # same node, short leases
        opened(postgres_dsn, "node-b") as b,
    ):
        held = {x: await owned(a), y: await owned(a, y)}
        held[x] = await owned(a, x)
        held[z] = await owned(a, z)
        await a.release(z, held[z])
        await owned(b, z)
        held[w] = await owned(a_short, w)
        await wait_until_expired(postgres_dsn, w)

        assert await a.renew({**held, ROOM: 999}) == {x, y}
        assert await a.renew({}) == set()
        await a.commit(x, WriteSet(puts={"k": b"v"}))
        with pytest.raises(Fenced):
            await a.commit(z, WriteSet(puts={"k": b"v"}))


async def test_due_alarms_are_those_of_rooms_nobody_holds(postgres_dsn: str) -> None:
    old, older, held, future, gone = (
        ActorId("rooms", n) for n in ("old", "older", "held", "future", "gone")
    )
    async with opened(postgres_dsn, "node-a") as a, opened(postgres_dsn, "node-b") as b:
        for actor, when in ((old, 10.0), (older, 5.0), (held, 1.0), (future, 4e9), (gone, 2.0)):
            epoch = await owned(a, actor)
            await a.commit(actor, WriteSet(alarm=when))
            if actor is not held:
                await a.release(actor, epoch)
        query(postgres_dsn, "DELETE FROM leases WHERE actor = %s", gone.hex)  # never leased

        assert await b.due_alarms(10) == [gone, older, old]
        assert await b.due_alarms(1) == [gone]


async def test_schema_creation_is_safe_from_three_nodes_at_once(postgres_dsn: str) -> None:
    nodes = [
        PostgresBackend(postgres_dsn, node_id=f"n{i}", address="http://n.test") for i in range(3)
    ]
    try:
        async with trio.open_nursery() as nursery:
            for node in nodes:
                nursery.start_soon(node.open)
        assert query(postgres_dsn, "SELECT version FROM roomkeeper_schema") == [
            (sql.SCHEMA_VERSION,)
        ]
        await nodes[0].close()
        await nodes[0].open()  # again: nothing to do
        assert len(query(postgres_dsn, "SELECT version FROM roomkeeper_schema")) == 1
    finally:
        for node in nodes:
            await node.close()


async def test_a_newer_schema_is_refused(postgres_dsn: str) -> None:
    async with opened(postgres_dsn):
        pass
    query(postgres_dsn, "INSERT INTO roomkeeper_schema VALUES (%s)", sql.SCHEMA_VERSION + 1)
    with pytest.raises(StorageError, match="upgrade roomkeeper"):
        async with opened(postgres_dsn):
            pass


# --- connections and faults ----------------------------------------------------------------


async def test_every_connection_is_bounded_on_the_server_and_the_socket(postgres_dsn: str) -> None:
    def settings(conn: Any) -> tuple[list[str], dict[str, str]]:
        shown = [
            conn.execute(f"SHOW {name}").fetchone()[0]
            for name in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
        ]
        return shown, conn.info.get_parameters()

    async with opened(postgres_dsn, ttl=4.0) as db:
        shown, params = await db._run("test", settings)
    assert shown == ["2s", "2s", "2s"]
    assert params["keepalives"] == "1"
    assert params["tcp_user_timeout"] == "4000"
    assert params["connect_timeout"] == "2"
    assert params["application_name"] == "roomkeeper"


async def test_server_restart_gives_storage_errors_then_recovers(
    postgres_server: PostgresServer, postgres_dsn: str
) -> None:
    async with opened(postgres_dsn, ttl=2.0) as db:
        epoch = await owned(db)
        await db.commit(ROOM, WriteSet(puts={"k": b"before"}))
        postgres_server.stop()
        try:
            with pytest.raises(StorageError):
                await db.check()
            with pytest.raises(StorageError):
                await db.commit(ROOM, WriteSet(puts={"k": b"during"}))
            with pytest.raises(StorageError):
                await db.renew({ROOM: epoch})
        finally:
            postgres_server.start_again()
        with trio.fail_after(60):
            while True:
                try:
                    await db.check()
                    break
                except StorageError:
                    await trio.sleep(0.1)
        await db.commit(ROOM, WriteSet(puts={"k": b"after"}))
        assert (await db.load(ROOM)).values == {"k": b"after"}


PASSWORD = "pw-Zq8-never-shown"


def _with_password(dsn: str) -> str:
    return dsn.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@")


async def test_the_password_is_never_shown(
    postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    dsn = _with_password(postgres_dsn)  # trust auth accepts it
    async with opened(dsn) as db:
        assert PASSWORD not in repr(db) and PASSWORD not in str(db)
        assert "127.0.0.1" in repr(db)
        await owned(db)
    missing = dsn.rsplit("/", 1)[0] + "/no_such_database"
    with pytest.raises(StorageError) as failed:
        async with opened(missing):
            pass
    assert "no_such_database" in str(failed.value)
    for text in (str(failed.value), repr(failed.value), caplog.text):
        assert PASSWORD not in text


async def test_postgres_urls_and_keyword_strings_are_accepted(postgres_dsn: str) -> None:
    as_postgres = postgres_dsn.replace("postgresql://", "postgres://")
    params = psycopg.conninfo.conninfo_to_dict(postgres_dsn)
    keywords = " ".join(f"{k}={v}" for k, v in params.items())
    for dsn in (as_postgres, keywords):
        async with opened(dsn) as db:
            await db.check()
    with pytest.raises(ValueError, match="not a PostgreSQL connection string"):
        PostgresBackend("not a dsn", node_id="n", address="a")


async def test_every_node_reads_the_same_shared_secret(postgres_dsn: str) -> None:
    """The key nodes sign forwarded requests with: made once, the same for all."""
    async with opened(postgres_dsn, "a") as a, opened(postgres_dsn, "b") as b:
        first = await a.shared_secret()
        assert len(first) == 32
        assert await b.shared_secret() == first == await a.shared_secret()
