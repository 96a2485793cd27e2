"""ICE servers from the room: in every ``session`` event, and on request (``GetIceServers``)
for a live session that gives its token. On the real runtime, under MockClock."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import trio
import trio.testing

from roomkeeper.http.codec import SseCodec
from roomkeeper.ice import IceServers, turn_credential
from roomkeeper.runtime import (
    ActorSystem,
    Binding,
    MemoryBackend,
    RuntimeConfig,
    StreamLimits,
    WallClock,
    open_actor_system,
)
from roomkeeper_actors.signaling.messages import (
    Connect,
    GetIceServers,
    IceConfig,
    Joined,
    Refused,
)
from roomkeeper_actors.signaling.records import FreshSession, RoomConfig
from roomkeeper_actors.signaling.room import Room, RoomEnv
from roomkeeper_actors.signaling.state import RoomState

EPOCH = 1_800_000_000.0
SECRET = "turn-static-secret-0123"
ICE = IceServers(("stun:127.0.0.1:3478",), ("turn:127.0.0.1:3478",), SECRET, 600)


def counting_sessions() -> Callable[[], FreshSession]:
    n = itertools.count(1)

    def fresh() -> FreshSession:
        i = next(n)
        return FreshSession(f"00000000-0000-4000-8000-{i:012d}", f"token-{i}", i)

    return fresh


@asynccontextmanager
async def rooms(ice: IceServers = ICE) -> AsyncIterator[ActorSystem]:
    env = RoomEnv(RoomConfig(grace=30.0), counting_sessions(), ice=ice)
    async with open_actor_system(
        {"rooms": Binding(Room, env=env)},
        codec=SseCodec(1000),
        backend=MemoryBackend(),
        config=RuntimeConfig(streams=StreamLimits(heartbeat=10, claim_timeout=60)),
        clock=WallClock(EPOCH),
    ) as system:
        yield system


async def session_event(system: ActorSystem, **connect: Any) -> tuple[Joined, dict[str, Any]]:
    """Connect, and the data of the stream's first event (read straight from its buffer)."""
    joined = await system.get("rooms", "r").ask(Connect(**connect))
    assert isinstance(joined, Joined)
    stream = system.streams.get(joined.stream_id)
    assert stream is not None
    first = bytes(stream.buffer[0])
    assert b"event: session\n" in first
    data: dict[str, Any] = orjson.loads(first.split(b"data: ", 1)[1].split(b"\n", 1)[0])
    return joined, data


async def test_the_session_event_carries_the_sessions_ice_servers(autojump_clock: Any) -> None:
    async with rooms() as system:
        joined, data = await session_event(system)
        sid = joined.session_id
        username, credential = turn_credential(SECRET, sid, int(EPOCH) + 600)
        assert data["ice_servers"] == [
            {"urls": ["stun:127.0.0.1:3478"]},
            {"urls": ["turn:127.0.0.1:3478"], "username": username, "credential": credential},
        ]
        await trio.sleep(20)  # a resumed session gets credentials as fresh as its stream
        _, again = await session_event(system, session_id=sid, token=data["token"])
        assert again["resumed"] and again["ice_servers"][1]["username"].startswith(
            f"{int(EPOCH) + 620}:"
        )


async def test_without_ice_settings_the_list_is_empty(autojump_clock: Any) -> None:
    async with rooms(IceServers()) as system:
        _, data = await session_event(system)
        assert data["ice_servers"] == []


async def test_fresh_ice_servers_need_the_sessions_token(autojump_clock: Any) -> None:
    async with rooms() as system:
        room = system.get("rooms", "r")
        joined, data = await session_event(system)
        sid = joined.session_id
        await trio.sleep(20)
        reply = await room.ask(GetIceServers(sid, data["token"]))
        assert isinstance(reply, IceConfig) and reply.ttl == 600
        assert reply.ice_servers[1]["username"] == f"{int(EPOCH) + 620}:{sid}"
        for wrong in (GetIceServers(sid, "token-2"), GetIceServers("no-such-session", "token-1")):
            refused = await room.ask(wrong)
            assert refused == Refused(403, "unknown sender or wrong token")
        assert data["token"] not in repr(GetIceServers(sid, data["token"]))
        assert SECRET not in repr(reply)


def test_authenticated_is_read_only_and_ends_with_the_grace_period() -> None:
    state = RoomState("r", RoomConfig(grace=30.0))
    result = state.connect(
        EPOCH,
        session_id=None,
        token=None,
        last_event_id=None,
        fresh=FreshSession("sid-1", "tok-1", 1),
    )
    state.take_writes()
    assert state.authenticated(EPOCH, "sid-1", "tok-1")
    assert not state.authenticated(EPOCH, "sid-1", "tok-2")
    assert not state.authenticated(EPOCH, "sid-2", "tok-1")
    state.disconnected(EPOCH + 1, "sid-1", 0)
    state.take_writes()
    assert state.authenticated(EPOCH + 30.9, "sid-1", "tok-1")  # in its grace period
    assert not state.authenticated(EPOCH + 31, "sid-1", "tok-1")  # expired, not yet removed
    assert state.take_writes() == ({}, set()) and state.roster() == [result.session_id]
