"""The server's life: graceful shutdown (bye shutdown on every stream, exit 0), restarts on
the same SQLite file after SIGTERM and after SIGKILL (sessions resume, ids keep growing,
queued signals survive, grace periods still end), and rooms hibernating under live streams."""

from __future__ import annotations

import signal
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
import trio

from .conftest import (
    HEARTBEAT,
    Event,
    Peer,
    ServerFactory,
    ServerProcess,
    assert_error,
    join,
    new_room,
    send,
    send_ok,
    sync,
)

ADMIN_TOKEN = "integration-admin-token-0123456789"


async def _stop(server: ServerProcess, sig: int = signal.SIGTERM) -> int:
    return await trio.to_thread.run_sync(server.stop, sig)


async def _exit_status(server: ServerProcess) -> int:
    assert server.proc is not None
    return await trio.to_thread.run_sync(server.proc.wait, 15)


def own_client() -> httpx.AsyncClient:
    """A client of its own for a server that is to be stopped (its keep-alive
    connections end with the server)."""
    return httpx.AsyncClient(timeout=10)


async def _byes(peers: list[Peer]) -> None:
    """Every stream's last event is ``bye shutdown``, and it ends right after."""
    with trio.fail_after(5):
        for peer in peers:
            rest = _not_heartbeats(await peer.stream.expect_end())
            assert rest, "the stream ended without bye"
            assert (rest[-1].event, rest[-1].data) == ("bye", {"reason": "shutdown"})
            assert all(e.event in ("roster", "signal") for e in rest[:-1]), rest


async def _start(server: ServerProcess) -> None:
    await trio.to_thread.run_sync(server.start)


def _not_heartbeats(events: list[Event]) -> list[Event]:
    return [e for e in events if e.event != "heartbeat"]


# --- graceful shutdown ----------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_shutdown_ends_every_stream_with_bye(server_factory: ServerFactory, sig: int) -> None:
    server = server_factory(storage="memory")
    assert server.proc is not None
    async with own_client() as client, AsyncExitStack() as stack:
        peers: list[Peer] = []
        for room in (new_room(), new_room(), new_room()):
            for _ in range(2):
                peers.append(await stack.enter_async_context(join(client, server.url, room)))
        await send_ok(client, server.url, peers[0], peers[1], {"last": "words"})
        server.proc.send_signal(sig)
        await _byes(peers)  # promptly, while the process is still stopping
    assert await _exit_status(server) == 0


# --- restarts -------------------------------------------------------------------------------------


async def test_restart_after_sigterm_resumes_sessions(
    client: httpx.AsyncClient, server_factory: ServerFactory
) -> None:
    server = server_factory(grace="5")
    assert server.proc is not None
    room = new_room()
    async with (
        own_client() as old,
        join(old, server.url, room) as a,
        join(old, server.url, room) as b,
    ):
        await a.stream.next()
        await send_ok(old, server.url, a, b, {"n": 1}, id="before-restart")
        first = await b.stream.next()
        server.proc.send_signal(signal.SIGTERM)
        await _byes([a, b])
    assert await _exit_status(server) == 0
    await _start(server)
    base = server.url
    # a comes back as a browser's EventSource does after a clean end: the same URL, and
    # Last-Event-ID of the last event it saw (the bye).
    async with join(client, base, room, headers={"Last-Event-ID": str(a.stream.last_id)}) as a2:
        assert a2.resumed and a2.session_id == a.session_id and a2.token == a.token
        assert a2.roster == [a.session_id, b.session_id]
        assert a2.first[0].id > a.stream.last_id
        # Last-Event-ID replay works across the restart: the history was saved.
        headers = {"Last-Event-ID": str(first.id - 1)}
        params = {"session_id": b.session_id, "token": b.token}
        async with join(client, base, room, headers=headers, **params) as b2:
            assert b2.resumed and b2.session_id == b.session_id
            assert b2.roster == [a.session_id, b.session_id]
            assert b2.first[0].id > b.stream.last_id
            replayed = await b2.stream.next()
            assert replayed.data == {"from": a.session_id, "signal": {"n": 1}}
            # A signal right after the restart is delivered; a retried id is still known.
            await send_ok(client, base, a2, b2, {"n": 2})
            await send_ok(client, base, a2, b2, {"n": 1}, id="before-restart")
            assert [e.data["signal"] for e in await sync(client, b2)] == [{"n": 2}]
            assert await sync(client, a2) == []  # b's return changed no roster


async def test_restart_after_sigkill_resumes_sessions(
    client: httpx.AsyncClient, server_factory: ServerFactory
) -> None:
    server = server_factory(grace="5")
    room = new_room()
    async with join(client, server.url, room) as a:
        async with join(client, server.url, room) as b:
            await a.stream.next()
            await send_ok(client, server.url, a, b, {"n": 0})
            await b.stream.next()
        await trio.sleep(1.0)  # b's drop is noticed: what follows is queued, durably
        await send_ok(client, server.url, a, b, {"n": 1})
        await send_ok(client, server.url, a, b, {"n": 2})
        assert await _stop(server, signal.SIGKILL) == -signal.SIGKILL
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, EOFError)):
            await a.stream.expect_end()
    await _start(server)
    base = server.url
    async with (
        join(client, base, room, session_id=a.session_id, token=a.token) as a2,
        join(client, base, room, session_id=b.session_id, token=b.token) as b2,
    ):
        for before, after in ((a, a2), (b, b2)):
            assert after.resumed and after.session_id == before.session_id
            assert after.roster == [a.session_id, b.session_id]
            assert after.first[0].id > before.stream.last_id
        queued = [await b2.stream.next() for _ in range(2)]
        assert [e.data["signal"] for e in queued] == [{"n": 1}, {"n": 2}]
        await send_ok(client, base, a2, b2, {"n": 3})
        await send_ok(client, base, b2, a2, {"n": "back"})
        assert [e.data["signal"] for e in await sync(client, b2)] == [{"n": 3}]
        assert [e.data["signal"] for e in await sync(client, a2)] == [{"n": "back"}]


async def test_grace_period_still_ends_after_a_restart(
    client: httpx.AsyncClient, server_factory: ServerFactory
) -> None:
    server = server_factory()  # grace 2 s
    room = new_room()
    async with join(client, server.url, room) as a:
        async with join(client, server.url, room) as b:
            await a.stream.next()
        await trio.sleep(1.0)  # b's drop is noticed; its grace period runs
        assert await _stop(server, signal.SIGKILL) == -signal.SIGKILL
    await _start(server)
    base = server.url
    async with join(client, base, room, session_id=a.session_id, token=a.token) as a2:
        assert a2.resumed
        roster = a2.roster
        with trio.fail_after(6):
            while roster != [a.session_id]:
                assert roster == [a.session_id, b.session_id]
                roster = (await a2.stream.next()).data["peers"]
        assert_error(await send(client, base, b, a2, {"x": 1}), 403)
        async with join(client, base, room, session_id=b.session_id, token=b.token) as b2:
            assert not b2.resumed


# --- hibernation under live streams --------------------------------------------------------------


async def _live(client: httpx.AsyncClient, server: ServerProcess, room: str) -> bool:
    """Whether ``room``'s actor is in memory, from the admin list (which wakes nothing)."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    after = ""
    while True:
        response = await client.get(
            f"{server.url}/admin/rooms", params={"after": after}, headers=headers
        )
        assert response.status_code == 200, response.text
        page: dict[str, Any] = response.json()
        for entry in page["actors"]:
            if entry["name"] == room:
                return bool(entry["live"])
        if page["next"] is None:
            raise AssertionError(f"room {room} is not listed")
        after = page["next"]


async def _hibernated(client: httpx.AsyncClient, server: ServerProcess, room: str) -> None:
    """Poll the admin view until the room is out of memory (polling a remote server: no
    event to wait on)."""
    with trio.fail_after(6):
        while await _live(client, server, room):  # noqa: ASYNC110
            await trio.sleep(0.1)


async def _quiet(peers: list[Peer], seconds: float) -> None:
    """Read ``peers``' streams for ``seconds``: heartbeats must keep coming, nothing else.
    (Reads are never cancelled: httpx closes a connection whose read was cancelled.)"""
    deadline = trio.current_time() + seconds
    counts = [0] * len(peers)

    async def read(index: int) -> None:
        while trio.current_time() < deadline:
            event = await peers[index].stream.next(skip_heartbeats=False)
            assert event.event == "heartbeat", event
            counts[index] += 1

    async with trio.open_nursery() as nursery:
        for index in range(len(peers)):
            nursery.start_soon(read, index)
    assert all(count >= int(seconds / HEARTBEAT) for count in counts), counts


async def test_room_hibernates_under_live_streams(
    client: httpx.AsyncClient, server_factory: ServerFactory
) -> None:
    server = server_factory(admin_token=ADMIN_TOKEN, hibernate_after="0.5")  # SQLite
    base = server.url
    room = new_room()
    async with join(client, base, room) as a, join(client, base, room) as b:
        await a.stream.next()
        await send_ok(client, base, a, b, {"n": 1}, id="first")
        first = await b.stream.next()
        assert await _live(client, server, room)

        # Quiet: the room leaves memory; the streams stay, with heartbeats, and keep it asleep.
        await _hibernated(client, server, room)
        await _quiet([a, b], 2 * HEARTBEAT + 0.2)
        assert not await _live(client, server, room)

        # A signal wakes it and is delivered; what it knew survived (the id, the roster).
        await send_ok(client, base, a, b, {"n": 2})
        await send_ok(client, base, a, b, {"n": 1}, id="first")
        assert [e.data["signal"] for e in await sync(client, b)] == [{"n": 2}]
        assert await _live(client, server, room)

        # Asleep again: the replay history survived too.
        await _hibernated(client, server, room)
        params = {"session_id": b.session_id, "token": b.token}
        headers = {"Last-Event-ID": str(first.id)}
        seen_after = [e.data for e in b.stream.events if e.event == "signal" and e.id > first.id]
        assert seen_after[0]["signal"] == {"n": 2}  # then the marker of sync()
        async with join(client, base, room, headers=headers, **params) as b2:
            assert b2.resumed and b2.roster == [a.session_id, b.session_id]
            assert [e.data for e in await sync(client, b2)] == seen_after
            assert (await b.stream.next()).data == {"reason": "replaced"}

            # Asleep again, and b's stream drops: the room wakes for it, and the end of the
            # grace period (an alarm, maybe while asleep once more) reaches a.
            await _hibernated(client, server, room)
        with trio.fail_after(8):
            roster = await a.stream.next()
        assert roster.data == {"peers": [a.session_id]}


# --- state that lives only in memory --------------------------------------------------------------


async def test_rate_limit_survives_hibernation(
    client: httpx.AsyncClient, server_factory: ServerFactory
) -> None:
    server = server_factory(
        storage="memory",
        admin_token=ADMIN_TOKEN,
        hibernate_after="0.5",
        rate_burst="2",
        rate_refill="0.05",  # one signal every 20 s once the burst is spent
    )
    base = server.url
    room = new_room()
    async with join(client, base, room) as a, join(client, base, room) as b:
        await send_ok(client, base, a, b, {"n": 1})
        await send_ok(client, base, a, b, {"n": 2})
        limited = await send(client, base, a, b, {"n": 3})
        assert_error(limited, 429)
        assert int(limited.headers["retry-after"]) >= 15
        await _hibernated(client, server, room)  # a second or so later
        assert_error(await send(client, base, a, b, {"n": 4}), 429)


async def test_retried_id_after_a_crash_is_not_delivered_twice(
    client: httpx.AsyncClient, server_factory: ServerFactory
) -> None:
    """The reason to retry: the server died before the client saw its answer."""
    server = server_factory(grace="5")
    room = new_room()
    async with join(client, server.url, room) as a:
        async with join(client, server.url, room) as b:
            await a.stream.next()
        await trio.sleep(1.0)  # b's drop is noticed: the signal is queued, durably
        await send_ok(client, server.url, a, b, {"offer": 1}, id="offer-1")
        assert await _stop(server, signal.SIGKILL) == -signal.SIGKILL
    await _start(server)
    base = server.url
    async with join(client, base, room, session_id=a.session_id, token=a.token) as a2:
        await send_ok(client, base, a2, b, {"offer": 1}, id="offer-1")  # the retry
        async with join(client, base, room, session_id=b.session_id, token=b.token) as b2:
            assert b2.resumed
            got = [e.data["signal"] for e in await sync(client, b2)]
            assert got == [{"offer": 1}]
