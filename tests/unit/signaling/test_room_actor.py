"""The Room actor on the real runtime, under MockClock: streams, hibernation, expiry by
alarm, restarts and slow consumers. The rules themselves are tested in test_state*.py."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
import trio.testing

from roomkeeper.http.codec import SseCodec
from roomkeeper.runtime import (
    ActorSystem,
    Binding,
    MemoryBackend,
    RuntimeConfig,
    SQLiteBackend,
    StorageBackend,
    StorageError,
    StreamLimits,
    WallClock,
    open_actor_system,
)
from roomkeeper_actors.signaling.budget import MemoryAccount
from roomkeeper_actors.signaling.messages import (
    Connect,
    Done,
    Inspect,
    Joined,
    Leave,
    Refused,
    Signal,
)
from roomkeeper_actors.signaling.records import FreshSession, RoomConfig
from roomkeeper_actors.signaling.room import Room, RoomEnv

EPOCH = 1_800_000_000.0


def counting_sessions() -> Any:
    n = itertools.count(1)

    def fresh() -> FreshSession:
        i = next(n)
        return FreshSession(f"00000000-0000-4000-8000-{i:012d}", f"token-{i}", i)

    return fresh


@asynccontextmanager
async def rooms(
    backend: StorageBackend | None = None,
    clock: WallClock | None = None,
    limits: StreamLimits | None = None,
    account: MemoryAccount | None = None,
    **room: Any,
) -> AsyncIterator[ActorSystem]:
    env = RoomEnv(
        RoomConfig(**{"grace": 30.0, **room}),
        counting_sessions(),
        account or MemoryAccount(1 << 30),
    )
    config = RuntimeConfig(
        hibernate_after=10, streams=limits or StreamLimits(heartbeat=10, claim_timeout=60)
    )
    async with open_actor_system(
        {"rooms": Binding(Room, env=env)},
        codec=SseCodec(1000),
        backend=backend or MemoryBackend(),
        config=config,
        clock=clock or WallClock(EPOCH),
    ) as system:
        yield system


class Client:
    """Reads one stream in the background and parses its SSE events."""

    def __init__(self, system: ActorSystem, joined: Joined, token: str) -> None:
        self.system = system
        self.joined = joined
        self.session_id = joined.session_id
        self.token = token
        self.events: list[tuple[int, str, Any]] = []
        self.ended = trio.Event()
        self.scope = trio.CancelScope()

    async def read(self) -> None:
        stream = self.system.streams.get(self.joined.stream_id)
        assert stream is not None
        with self.scope:
            await self.system.streams.pump(stream, self._take)
        self.ended.set()

    async def _take(self, chunk: bytes) -> None:
        for frame in chunk.decode().split("\n\n"):
            fields = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
            if "event" in fields:
                data = orjson.loads(fields["data"])
                self.events.append((int(fields["id"]), fields["event"], data))

    def of(self, kind: str) -> list[Any]:
        return [data for _, event, data in self.events if event == kind]


async def connect(system: ActorSystem, nursery: trio.Nursery, room: str = "r", **kw: Any) -> Client:
    joined = await system.get("rooms", room).ask(Connect(**kw))
    assert isinstance(joined, Joined), joined
    client = Client(system, joined, "")
    nursery.start_soon(client.read)
    await trio.testing.wait_all_tasks_blocked()
    client.token = client.of("session")[0]["token"]
    return client


async def signal(system: ActorSystem, a: Client, b: Client, n: int, room: str = "r") -> Any:
    return await system.get("rooms", room).ask(
        Signal(a.session_id, a.token, b.session_id, {"n": n})
    )


async def test_two_peers_see_each_other_and_exchange_signals(autojump_clock: Any) -> None:
    async with rooms() as system, trio.open_nursery() as nursery:
        a = await connect(system, nursery)
        b = await connect(system, nursery)
        assert a.of("roster")[-1]["peers"] == [a.session_id, b.session_id]
        assert isinstance(await signal(system, a, b, 1), Done)
        await trio.testing.wait_all_tasks_blocked()
        assert b.of("signal") == [{"from": a.session_id, "signal": {"n": 1}}]
        ids = [i for i, _, _ in b.events]
        assert ids == sorted(set(ids))
        nursery.cancel_scope.cancel()


async def test_a_live_room_hibernates_keeps_heartbeats_and_wakes_for_a_signal(
    autojump_clock: Any,
) -> None:
    async with rooms() as system, trio.open_nursery() as nursery:
        a = await connect(system, nursery)
        b = await connect(system, nursery)
        await trio.sleep(35)
        snap = system.snapshot()[0]
        assert (snap.live, snap.hibernations) == (0, 1)
        assert len(b.of("heartbeat")) >= 3  # the runtime kept the streams alive alone
        await signal(system, a, b, 7)
        await trio.testing.wait_all_tasks_blocked()
        assert b.of("signal")[-1]["signal"] == {"n": 7}
        assert system.snapshot()[0].wakes["message"] == 1
        nursery.cancel_scope.cancel()


async def test_a_dropped_peer_expires_by_alarm_even_while_hibernated(autojump_clock: Any) -> None:
    async with rooms(grace=30) as system, trio.open_nursery() as nursery:
        a = await connect(system, nursery)
        b = await connect(system, nursery)
        b.scope.cancel()  # b's connection drops
        await trio.sleep(20)
        assert system.snapshot()[0].live == 0  # hibernated, b still in grace
        assert a.of("roster")[-1]["peers"] == [a.session_id, b.session_id]
        await trio.sleep(15)
        assert a.of("roster")[-1]["peers"] == [a.session_id]
        assert system.snapshot()[0].wakes["alarm"] == 1
        reply = await system.get("rooms", "r").ask(Connect(b.session_id, b.token))
        assert isinstance(reply, Joined) and reply.session_id != b.session_id  # expired
        nursery.cancel_scope.cancel()


async def test_signals_to_a_dropped_peer_wait_and_arrive_in_order(autojump_clock: Any) -> None:
    async with rooms() as system, trio.open_nursery() as nursery:
        a = await connect(system, nursery)
        b = await connect(system, nursery)
        b.scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        for n in range(5):
            assert isinstance(await signal(system, a, b, n), Done)
        await trio.sleep(15)  # across a hibernation: the queue is in storage
        back = await connect(system, nursery, session_id=b.session_id, token=b.token)
        assert [e for _, e, _ in back.events][:2] == ["session", "roster"]
        assert [s["signal"]["n"] for s in back.of("signal")] == [0, 1, 2, 3, 4]
        assert back.events[0][0] > max(i for i, _, _ in b.events)
        nursery.cancel_scope.cancel()


async def test_a_slow_consumer_loses_nothing(autojump_clock: Any) -> None:
    limits = StreamLimits(max_bytes=20_000, max_events=1000, heartbeat=10, claim_timeout=60)
    async with rooms(limits=limits) as system, trio.open_nursery() as nursery:
        a = await connect(system, nursery)
        joined = await system.get("rooms", "r").ask(Connect())
        stream = system.streams.get(joined.stream_id)
        assert stream is not None

        first: list[bytes] = []

        async def stop_reading(chunk: bytes) -> None:  # b takes its first bytes, no more
            first.append(chunk)
            await trio.sleep_forever()

        nursery.start_soon(system.streams.pump, stream, stop_reading)
        await trio.testing.wait_all_tasks_blocked()
        token = orjson.loads(first[0].split(b"data: ")[1].split(b"\n")[0])["token"]
        room = system.get("rooms", "r")
        big = {"sdp": "x" * 3000}
        for _ in range(12):  # more than b's buffer holds
            reply = await room.ask(Signal(a.session_id, a.token, joined.session_id, big))
            assert isinstance(reply, Done)
        await trio.testing.wait_all_tasks_blocked()
        info = {i.session_id: i for i in await room.ask(Inspect())}
        assert not info[joined.session_id].connected  # cut off, in grace
        b = await connect(
            system, nursery, session_id=joined.session_id, token=token, last_event_id=None
        )
        # what was buffered is in the replay history (Last-Event-ID); what was not
        # written waited in the queue: together, nothing is lost
        got = len(b.of("signal")) + info[joined.session_id].replayable
        assert got >= 12
        nursery.cancel_scope.cancel()


async def test_leave_ends_the_stream_with_bye_and_updates_the_roster(autojump_clock: Any) -> None:
    async with rooms() as system, trio.open_nursery() as nursery:
        a = await connect(system, nursery)
        b = await connect(system, nursery)
        room = system.get("rooms", "r")
        assert isinstance(await room.ask(Leave(b.session_id, b.token)), Done)
        await trio.testing.wait_all_tasks_blocked()
        assert b.events[-1][1:] == ("bye", {"reason": "left"}) and b.ended.is_set()
        assert a.of("roster")[-1]["peers"] == [a.session_id]
        refused = await room.ask(Leave(b.session_id, b.token))
        assert isinstance(refused, Refused) and refused.status == 403
        nursery.cancel_scope.cancel()


@pytest.fixture
def disk_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.02)


async def test_a_restart_resumes_sessions_and_expires_the_absent(
    disk_clock: Any, tmp_path: Path
) -> None:
    path = tmp_path / "rooms.sqlite3"
    clock = WallClock(EPOCH)
    async with trio.open_nursery() as nursery:
        async with rooms(SQLiteBackend(path), clock) as system:
            a = await connect(system, nursery)
            b = await connect(system, nursery)
            await signal(system, a, b, 1)
        await trio.testing.wait_all_tasks_blocked()
        assert a.events[-1][1:] == ("bye", {"reason": "shutdown"})
        last_a = a.events[-1][0]
        async with rooms(SQLiteBackend(path), clock) as system:
            a2 = await connect(system, nursery, session_id=a.session_id, token=a.token)
            assert a2.of("session")[0]["resumed"] is True
            assert a2.events[0][0] > last_a
            assert a2.of("roster")[0]["peers"] == [a.session_id, b.session_id]
            await trio.sleep(40)  # b never came back: its grace counted from the restart
            assert a2.of("roster")[-1]["peers"] == [a.session_id]
        nursery.cancel_scope.cancel()


class CommitsFail(MemoryBackend):
    """Reads work, commits fail while ``failing`` (a full disk)."""

    failing = False

    async def commit(self, actor: Any, writes: Any) -> None:
        if self.failing:
            raise StorageError("disk full")
        await super().commit(actor, writes)


async def test_what_a_failed_commit_would_have_announced_is_never_sent(
    autojump_clock: Any,
) -> None:
    """Effects on other streams wait for their handler's writes to be durable: a connect
    or a leave whose commit fails shows nobody a new roster or a bye."""
    backend = CommitsFail()
    async with rooms(backend) as system, trio.open_nursery() as nursery:
        a = await connect(system, nursery)
        b = await connect(system, nursery)
        before = (list(a.events), list(b.events))
        room = system.get("rooms", "r")
        backend.failing = True
        with pytest.raises(StorageError):
            await room.ask(Connect())
        with pytest.raises(StorageError):
            await room.ask(Leave(b.session_id, b.token))
        await trio.testing.wait_all_tasks_blocked()
        assert (a.events, b.events) == before and not b.ended.is_set()
        backend.failing = False
        c = await connect(system, nursery)
        await trio.testing.wait_all_tasks_blocked()
        roster = [a.session_id, b.session_id, c.session_id]
        assert a.of("roster")[-1]["peers"] == b.of("roster")[-1]["peers"] == roster
        assert isinstance(await room.ask(Leave(b.session_id, b.token)), Done)
        await trio.testing.wait_all_tasks_blocked()
        assert b.events[-1][1:] == ("bye", {"reason": "left"})
        assert a.of("roster")[-1]["peers"] == [a.session_id, c.session_id]
        nursery.cancel_scope.cancel()


async def test_an_acknowledged_signal_is_stored_as_sent_before_its_answer(
    autojump_clock: Any,
) -> None:
    """The output gate covers the recipient's replay history: once the room has answered
    a signal, its history entry (the event's data exactly as sent, with the request id in
    the key) is committed, so a crash cannot lose it."""
    backend = MemoryBackend()
    async with rooms(backend) as system, trio.open_nursery() as nursery:
        a = await connect(system, nursery)
        b = await connect(system, nursery)
        room = system.get("rooms", "r")
        reply = await room.ask(Signal(a.session_id, a.token, b.session_id, {"n": 1}, "req-1"))
        assert isinstance(reply, Done)
        stored = backend.values[room.id.hex]
        (key,) = [k for k in stored if k.startswith("h/")]
        await trio.testing.wait_all_tasks_blocked()
        (event_id, _, data) = next(e for e in b.events if e[1] == "signal")
        assert key == f"h/{b.session_id}/{event_id}/{a.session_id}/{b'req-1'.hex()}"
        assert orjson.loads(stored[key]) == data == {"from": a.session_id, "signal": {"n": 1}}
        nursery.cancel_scope.cancel()


async def test_near_the_memory_budget_new_sessions_get_503_and_at_it_signals_too(
    autojump_clock: Any,
) -> None:
    account = MemoryAccount(990)
    async with rooms(account=account) as system, trio.open_nursery() as nursery:
        a = await connect(system, nursery)
        b = await connect(system, nursery)
        room = system.get("rooms", "r")
        big = {"x": [{}] * 290}  # 934 bytes as sent
        assert isinstance(await room.ask(Signal(a.session_id, a.token, b.session_id, big)), Done)
        assert 891 <= account.held < 990  # near: new sessions and new rooms refused
        for name in ("r", "another-room"):
            refused = await system.get("rooms", name).ask(Connect())
            assert isinstance(refused, Refused)
            assert (refused.status, refused.retry_after) == (503, 5)
        back = await system.get("rooms", "r").ask(Connect(a.session_id, a.token))
        assert isinstance(back, Joined)  # resuming is never refused
        assert isinstance(await signal(system, b, a, 1), Done)
        assert account.full
        refused = await signal(system, b, a, 2)
        assert isinstance(refused, Refused) and refused.status == 503
        await trio.sleep(15)  # the room hibernates: its bytes are no longer held
        assert account.held == 0
        nursery.cancel_scope.cancel()


async def test_rooms_joined_and_left_leave_no_row_behind(disk_clock: Any, tmp_path: Path) -> None:
    """An actor with nothing stored, no alarm and no stream keeps no row in SQLite."""
    path = tmp_path / "rooms.sqlite3"
    async with rooms(SQLiteBackend(path)) as system, trio.open_nursery() as nursery:
        for n in range(24):
            room = system.get("rooms", f"room-{n}")
            a = await connect(system, nursery, room=f"room-{n}")
            b = await connect(system, nursery, room=f"room-{n}")
            await signal(system, a, b, n, room=f"room-{n}")
            for peer in (a, b):
                assert isinstance(await room.ask(Leave(peer.session_id, peer.token)), Done)
        await trio.sleep(15)  # every room hibernates
        nursery.cancel_scope.cancel()
    db = sqlite3.connect(path)
    try:
        counts = [
            db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("actors", "kv", "streams")
        ]
    finally:
        db.close()
    assert counts == [0, 0, 0]


async def test_with_durable_signals_off_history_is_stored_at_hibernation(
    autojump_clock: Any,
) -> None:
    backend = MemoryBackend()
    async with rooms(backend, durable_history=False) as system, trio.open_nursery() as nursery:
        a = await connect(system, nursery)
        b = await connect(system, nursery)
        room = system.get("rooms", "r")
        commits = backend.commits
        assert isinstance(await signal(system, a, b, 1), Done)
        assert backend.commits == commits  # the signal wrote nothing
        await trio.sleep(15)  # hibernation saves the history
        assert [k for k in backend.values[room.id.hex] if k.startswith("h/")]
        nursery.cancel_scope.cancel()
