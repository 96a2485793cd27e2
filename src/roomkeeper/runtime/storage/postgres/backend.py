"""``PostgresBackend``: storage and leases shared by every node, over sync psycopg in threads."""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import psycopg
import psycopg.conninfo
import psycopg_pool
import trio

from ...errors import Fenced, StorageError
from ...ids import ActorId
from ...leases import Granted, HeldElsewhere
from ..base import UNCHANGED, ActorRecord, StoredStream, WriteSet
from . import sql

T = TypeVar("T")
Conn = psycopg.Connection[tuple[Any, ...]]
log = logging.getLogger(__name__)


class PostgresBackend:
    """State, alarms, streams and leases of every actor in one PostgreSQL database.

    ``dsn`` is a libpq connection string or a ``postgresql://`` / ``postgres://`` URL;
    libpq's environment variables and password file fill what it leaves out.
    ``node_id`` owns the leases this backend takes (include a boot id: a restarted node
    must not inherit its previous life's leases), ``address`` is where this node serves,
    told to nodes that find the lease held. ``pool_size`` connections serve the actors;
    one more is kept for lease renewal and the readiness check, so a busy node still
    renews in time.
    """

    def __init__(
        self,
        dsn: str,
        *,
        node_id: str,
        address: str,
        lease_ttl: float = 10.0,
        pool_size: int = 8,
    ) -> None:
        if lease_ttl <= 0:
            raise ValueError("lease_ttl must be positive")
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        try:
            params = psycopg.conninfo.conninfo_to_dict(dsn)
        except psycopg.Error as exc:
            raise ValueError(f"not a PostgreSQL connection string: {exc}") from None
        self._dsn = dsn
        self._password = str(params.pop("password", "") or "")
        self._shown = psycopg.conninfo.make_conninfo("", **params)
        self.node_id = node_id
        self.address = address
        self.lease_ttl = float(lease_ttl)
        self.pool_size = pool_size
        self._pool: psycopg_pool.ConnectionPool[Conn] | None = None
        self._actors = trio.CapacityLimiter(pool_size)
        self._control = trio.CapacityLimiter(1)
        self._epochs: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"PostgresBackend({self._shown!r}, node_id={self.node_id!r})"

    # --- plumbing -------------------------------------------------------------------------

    def _error(self, what: str, exc: BaseException) -> StorageError:
        text = f"PostgreSQL {what} failed: {str(exc).strip() or type(exc).__name__}"
        if self._password:  # libpq never says it; this is in case something else does
            text = text.replace(self._password, "***")
        return StorageError(text)

    async def _run(
        self, what: str, fn: Callable[[Conn], T], *, limiter: trio.CapacityLimiter | None = None
    ) -> T:
        pool = self._pool
        if pool is None:
            raise StorageError("storage is not open")

        def call() -> T:
            broken = False
            try:
                with pool.connection() as conn:
                    try:
                        return fn(conn)
                    finally:
                        broken = conn.broken
            except psycopg_pool.PoolTimeout as exc:
                raise self._error(what, exc) from None
            except psycopg.Error as exc:
                if broken:
                    # The server went away (restarted?): drop the pool's other broken idle
                    # connections now, rather than fail once on each of them later.
                    with contextlib.suppress(Exception):
                        pool.check()
                raise self._error(what, exc) from None

        # Never abandoned on cancellation: a write's outcome matters, and the connection
        # must go back to the pool; statement_timeout bounds the wait.
        return await trio.to_thread.run_sync(call, limiter=limiter or self._actors)

    async def open(self) -> None:
        timeout = max(1.0, self.lease_ttl / 2)

        def configure(conn: Conn) -> None:
            settings = sql.session_settings(self.lease_ttl)
            conn.execute(
                "SELECT " + ", ".join(f"set_config('{k}', %s, false)" for k in settings),
                list(settings.values()),
            )

        params: dict[str, Any] = {"autocommit": True, **sql.connection_params(self.lease_ttl)}
        pool: psycopg_pool.ConnectionPool[Conn] = psycopg_pool.ConnectionPool(
            self._dsn,
            min_size=1,
            max_size=self.pool_size + 1,
            kwargs=params,
            configure=configure,
            timeout=timeout,
            name="roomkeeper",
            open=False,
        )

        def start() -> None:
            # One connection of our own first: it reports why the server cannot be used
            # (the pool would only retry until its timeout), and migrates the schema.
            try:
                with psycopg.connect(self._dsn, **params) as conn:
                    configure(conn)
                    migrate(conn)
                pool.open(wait=True, timeout=max(timeout, 5.0))
            except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
                pool.close()
                raise self._error(f"connection to {self._shown!r}", exc) from None
            except BaseException:
                pool.close()
                raise

        await trio.to_thread.run_sync(start)
        self._pool = pool
        log.info("storage: PostgreSQL %s, node %s", self._shown, self.node_id)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await trio.to_thread.run_sync(pool.close)

    # --- state ----------------------------------------------------------------------------

    async def load(self, actor: ActorId) -> ActorRecord:
        args = {"actor": actor.hex}

        def load(conn: Conn) -> ActorRecord:
            # No transaction needed: only this node writes the actor while it holds it.
            values = {k: bytes(v) for k, v in conn.execute(sql.LOAD_VALUES, args)}
            row = conn.execute(sql.LOAD_ALARM, args).fetchone()
            streams = tuple(
                StoredStream(actor, sid, bytes(att), int(last))
                for sid, att, last in conn.execute(sql.LOAD_STREAMS, args)
            )
            return ActorRecord(values, row[0] if row else None, streams)

        return await self._run("load", load)

    def _fence(self, conn: Conn, actor: ActorId, epoch: int | None) -> None:
        """Inside a transaction: lock the actor's lease row if this node still holds it
        with ``epoch``, else raise ``Fenced`` (the transaction then rolls back)."""
        if epoch is not None:
            cur = conn.execute(sql.FENCE, {"actor": actor.hex, "epoch": epoch, "me": self.node_id})
            if cur.rowcount == 1:
                return
        raise Fenced(f"{actor}: this node no longer holds the lease (epoch {epoch})")

    async def commit(self, actor: ActorId, writes: WriteSet) -> None:
        epoch = self._epochs.get(actor.hex)
        if epoch is None:
            raise Fenced(f"{actor}: this node holds no lease")
        key = actor.hex
        args = {"actor": key, "namespace": actor.namespace, "name": actor.name}
        adds = bool(writes.puts or writes.streams_added or writes.alarm not in (None, UNCHANGED))
        removes = bool(writes.deletes or writes.streams_removed or writes.alarm is None)

        def commit(conn: Conn) -> None:
            with conn.transaction(), conn.cursor() as cur:
                self._fence(conn, actor, epoch)
                if adds:
                    cur.execute(sql.ADD_ACTOR, args)
                if writes.alarm is not UNCHANGED:
                    cur.execute(sql.SET_ALARM, {"actor": key, "alarm": writes.alarm})
                _many(cur, sql.DELETE_KEY, ((key, k) for k in writes.deletes))
                _many(cur, sql.PUT_KEY, ((key, k, v) for k, v in writes.puts.items()))
                _many(cur, sql.REMOVE_STREAM, ((key, s) for s in writes.streams_removed))
                _many(cur, sql.ADD_STREAM, ((key, s, a) for s, a in writes.streams_added.items()))
                if removes:
                    cur.execute(sql.DROP_IF_EMPTY, args)

        await self._run("commit", commit)

    async def alarms(self) -> list[tuple[ActorId, float]]:
        """None: alarms belong to whichever node activates their actor (``due_alarms``
        finds those nobody holds), not to the process that starts."""
        await trio.lowlevel.checkpoint()
        return []

    async def streams(self) -> list[StoredStream]:
        """None: an actor's stored streams are reported when it activates, on whichever
        node (``ActorRecord.streams``), since another node may be serving them now."""
        await trio.lowlevel.checkpoint()
        return []

    async def save_positions(self, positions: list[tuple[ActorId, str, int]]) -> None:
        """Fenced per actor: the positions of an actor this node no longer holds are
        left alone (its new owner has them), the others are saved."""
        by_actor: dict[ActorId, list[tuple[int, str, str]]] = {}
        for actor, stream_id, last_id in positions:
            by_actor.setdefault(actor, []).append((last_id, actor.hex, stream_id))
        epochs = {actor: self._epochs.get(actor.hex) for actor in by_actor}

        def save(conn: Conn) -> None:
            with conn.transaction(), conn.cursor() as cur:
                for actor, rows in by_actor.items():
                    try:
                        with conn.transaction():
                            self._fence(conn, actor, epochs[actor])
                            cur.executemany(sql.SAVE_POSITION, rows)
                    except Fenced:
                        continue

        if by_actor:
            await self._run("save_positions", save)

    async def names(self, namespace: str, *, after: str = "", limit: int = 100) -> list[str]:
        args = {"namespace": namespace, "after": after, "limit": limit}

        def names(conn: Conn) -> list[str]:
            return [name for (name,) in conn.execute(sql.NAMES, args)]

        return await self._run("names", names)

    # --- leases ---------------------------------------------------------------------------

    async def acquire(self, actor: ActorId) -> Granted | HeldElsewhere:
        args = {"actor": actor.hex, "me": self.node_id, "addr": self.address, "ttl": self.lease_ttl}

        def acquire(conn: Conn) -> Granted | HeldElsewhere:
            for _ in range(3):
                row = conn.execute(sql.ACQUIRE, args).fetchone()
                if row is not None:
                    return Granted(int(row[0]))
                held = conn.execute(sql.HOLDER, args).fetchone()
                if held is not None and held[2] > 0:
                    return HeldElsewhere(held[0], held[1], float(held[2]))
                # Released or expired between the two statements: try again.
            raise StorageError(f"{actor}: the lease changed hands three times in a row")

        self._epochs.pop(actor.hex, None)
        got = await self._run("lease acquire", acquire)
        if isinstance(got, Granted):
            self._epochs[actor.hex] = got.epoch
        return got

    async def renew(self, held: Mapping[ActorId, int]) -> set[ActorId]:
        if not held:
            await trio.lowlevel.checkpoint()
            return set()
        by_hex = {actor.hex: actor for actor in held}
        args = {
            "me": self.node_id,
            "ttl": self.lease_ttl,
            "actors": list(by_hex),
            "epochs": [held[actor] for actor in by_hex.values()],
        }

        def renew(conn: Conn) -> set[str]:
            return {hex_ for (hex_,) in conn.execute(sql.RENEW, args)}

        renewed = await self._run("lease renew", renew, limiter=self._control)
        for hex_, actor in by_hex.items():
            if hex_ not in renewed and self._epochs.get(hex_) == held[actor]:
                del self._epochs[hex_]
        return {by_hex[hex_] for hex_ in renewed}

    async def release(self, actor: ActorId, epoch: int) -> None:
        self.forget(actor)
        args = {"actor": actor.hex, "epoch": epoch, "me": self.node_id}
        await self._run("lease release", lambda conn: conn.execute(sql.RELEASE, args))

    def forget(self, actor: ActorId) -> None:
        self._epochs.pop(actor.hex, None)

    async def due_alarms(self, limit: int) -> list[ActorId]:
        def due(conn: Conn) -> list[ActorId]:
            return [ActorId(ns, n) for ns, n in conn.execute(sql.DUE_ALARMS, {"limit": limit})]

        return await self._run("due alarms", due)

    async def check(self) -> None:
        await self._run("check", lambda conn: conn.execute("SELECT 1"), limiter=self._control)

    async def shared_secret(self) -> bytes:
        """The cluster's key: made by the first node that asks, read by the others."""

        def read(conn: Conn) -> bytes:
            conn.execute(sql.SECRET_INIT, {"secret": secrets.token_bytes(32)})
            row = conn.execute(sql.SECRET).fetchone()
            assert row is not None
            return bytes(row[0])

        return await self._run("shared secret", read, limiter=self._control)


def _many(cur: psycopg.Cursor[Any], statement: str, rows: Iterable[tuple[Any, ...]]) -> None:
    batch = list(rows)
    if len(batch) == 1:
        cur.execute(statement, batch[0])
    elif batch:
        cur.executemany(statement, batch)


def migrate(conn: Conn) -> None:
    """Bring the schema to ``sql.SCHEMA_VERSION``, one node at a time."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (sql.MIGRATION_LOCK,))
        conn.execute(sql.SCHEMA_TABLE)
        row = conn.execute(sql.SCHEMA_VERSION_NOW).fetchone()
        version = int(row[0]) if row and row[0] is not None else 0
        if version > sql.SCHEMA_VERSION:
            raise StorageError(
                f"the database has schema version {version}; this roomkeeper knows"
                f" up to {sql.SCHEMA_VERSION}: upgrade roomkeeper"
            )
        for target in range(version + 1, sql.SCHEMA_VERSION + 1):
            for statement in sql.MIGRATIONS[target]:
                conn.execute(statement)
            conn.execute("INSERT INTO roomkeeper_schema (version) VALUES (%s)", (target,))
