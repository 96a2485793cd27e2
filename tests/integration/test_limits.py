"""Slow and greedy clients against a real server: a stream nobody reads, thousands of
streams, per-address budgets of new sessions and open streams (429 with Retry-After),
the room size cap (409), and admission tickets (403). See docs/reliability.md."""

from __future__ import annotations

import json
import re
import resource
import socket
import time
import uuid
from contextlib import AsyncExitStack
from typing import Any

import attrs
import httpx
import pytest
import trio

from roomkeeper.http.limits import mint_ticket

from .conftest import (
    RawConnection,
    ServerFactory,
    ServerProcess,
    assert_error,
    connect_refused,
    join,
    leave,
    new_room,
    request_bytes,
    send,
    send_ok,
    sync,
)

ADMIN = "limits-admin-token-" + uuid.uuid4().hex
ROOMY = {
    "new_sessions_per_minute": "1000000",
    "new_sessions_burst": "100000",
    "streams_per_address": "100000",
}


def rss_mib(server: ServerProcess) -> float:
    assert server.proc is not None
    status = open(f"/proc/{server.proc.pid}/status").read()  # noqa: SIM115
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match is not None
    return int(match.group(1)) / 1024


async def sessions(client: httpx.AsyncClient, server: ServerProcess, room: str) -> list[Any]:
    response = await client.get(
        f"{server.url}/admin/rooms/{room}", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert response.status_code == 200, response.text
    return list(response.json()["view"]["sessions"])


# --- a raw event stream, read only when asked ---------------------------------------------------


@attrs.define
class RawStream:
    conn: RawConnection
    session_id: str
    token: str
    events: list[tuple[int, str, Any]] = attrs.Factory(list)

    def parse(self) -> None:
        """Take the complete events out of the connection's buffer."""
        *frames, rest = self.conn.buffer.split(b"\n\n")
        self.conn.buffer = rest
        for frame in frames:
            fields = dict(
                line.split(": ", 1) for line in frame.decode().splitlines() if ": " in line
            )
            if "event" in fields:
                self.events.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))

    @property
    def last_id(self) -> int:
        return self.events[-1][0]


async def open_raw(
    server: ServerProcess,
    room: str,
    *,
    rcvbuf: int | None = None,
    query: str = "",
    headers: dict[str, str] | None = None,
) -> RawStream:
    """A stream on a connection of our own; ``rcvbuf`` shrinks its receive buffer."""
    sock = trio.socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await sock.connect((server.host, server.port))
    conn = RawConnection(trio.SocketStream(sock))
    await conn.send(request_bytes("GET", f"/api/connect?room={room}{query}", headers=headers))
    with trio.fail_after(5):
        while b"event: roster" not in conn.buffer:
            assert await conn._fill(), conn.buffer
    head, _, conn.buffer = conn.buffer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    conn.buffer = b"\n\n".join(  # drop the chunk-size lines of the chunked body
        line for line in conn.buffer.split(b"\r\n") if not re.fullmatch(rb"[0-9a-f]+", line)
    )
    stream = RawStream(conn, "", "")
    stream.parse()
    session = next(data for _, event, data in stream.events if event == "session")
    stream.session_id, stream.token = session["session_id"], session["token"]
    return stream


# --- a stream nobody reads ---------------------------------------------------------------------


async def test_a_client_that_never_reads_is_cut_off_and_loses_nothing(
    client: httpx.AsyncClient, server_factory: ServerFactory
) -> None:
    """A stream whose client stops reading: the server holds at most --stream-buffer of
    events for it, then ends the stream (the session goes into its grace period and later
    signals queue, then 503); the kernel cuts the connection --send-timeout after its
    data stopped being taken. The client resumes with Last-Event-ID and gets every
    signal that was answered 200, once. Server memory stays bounded (a sanity check)."""
    server = server_factory(
        storage="memory",
        stream_buffer="65536",
        send_timeout="2",
        queue_limit="8",
        grace="30",
        rate_burst="100000",
        rate_refill="100000",
        streams_per_address="2",
        admin_token=ADMIN,
    )
    room = new_room()
    victim = await open_raw(server, room, rcvbuf=4096)
    payload = "x" * 30_000
    accepted: list[int] = []
    async with join(client, server.url, room) as sender:
        before = rss_mib(server)
        for n in range(1000):
            response = await send(
                client, server.url, sender, victim.session_id, {"n": n, "p": payload}
            )
            if response.status_code == 503:
                break
            assert response.status_code == 200, response.text
            accepted.append(n)
        assert response.status_code == 503 and "queue is full" in response.text
        assert 8 < len(accepted) < 1000
        grown = rss_mib(server) - before
        assert grown < 64, f"server RSS grew by {grown:.0f} MiB"
        (state,) = [
            s for s in await sessions(client, server, room) if s["session_id"] == victim.session_id
        ]
        assert not state["connected"] and state["queued"] == 8

        # The stuck connection still counts against its address until the kernel cuts it.
        refused = await connect_refused(client, server.url, {"room": new_room()})
        assert_error(refused, 429)
        started = trio.current_time()
        with trio.fail_after(10):
            while await victim.conn._fill():  # read what the kernel still holds, to the cut
                victim.parse()
        cut_after = trio.current_time() - started
        victim.parse()
        assert cut_after < 8, cut_after
        async with join(client, server.url, new_room()):  # the slot is free again
            pass

        # Resume: what was read, then the replay of the rest and the queue: all, once.
        seen = [d["signal"]["n"] for _, e, d in victim.events if e == "signal"]
        last = victim.last_id
        params = {"session_id": victim.session_id, "token": victim.token}
        async with join(
            client, server.url, room, headers={"Last-Event-ID": str(last)}, **params
        ) as back:
            assert back.resumed
            rest = [e.data["signal"]["n"] for e in await sync(client, back)]
        assert seen + rest == accepted, (len(seen), len(rest), len(accepted))


async def test_sigterm_is_not_held_up_by_a_client_that_never_reads(
    client: httpx.AsyncClient, server_factory: ServerFactory
) -> None:
    """Hypercorn writes with cancellation shielded: without --send-timeout a client that
    never reads held a graceful stop for ever."""
    server = server_factory(
        storage="memory",
        send_timeout="2",
        queue_limit="4",
        rate_burst="100000",
        rate_refill="100000",
    )
    room = new_room()
    victim = await open_raw(server, room, rcvbuf=4096)
    async with join(client, server.url, room) as sender:
        for _ in range(2000):
            response = await send(
                client, server.url, sender, victim.session_id, {"p": "y" * 60_000}
            )
            if response.status_code == 503:
                break
        assert response.status_code == 503
    started = time.monotonic()
    assert await trio.to_thread.run_sync(server.stop) == 0
    assert time.monotonic() - started < 10
    await victim.conn.stream.aclose()


# --- many streams ------------------------------------------------------------------------------


def _enough_files(needed: int) -> None:
    """Raise this process's open-file limit (a server started after inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


async def _open_many(
    server: ServerProcess, rooms: list[str], streams: list[RawStream], refused: list[int]
) -> None:
    limiter = trio.CapacityLimiter(100)

    async def one(room: str) -> None:
        async with limiter:
            conn = await RawConnection.open(server)
            await conn.send(request_bytes("GET", f"/api/connect?room={room}"))
            with trio.fail_after(30):
                while b"\r\n\r\n" not in conn.buffer:
                    assert await conn._fill()
            if conn.buffer.startswith(b"HTTP/1.1 200"):
                with trio.fail_after(30):
                    while b"event: roster" not in conn.buffer:
                        assert await conn._fill()
                streams.append(RawStream(conn, "", ""))
            else:
                refused.append(int(conn.buffer.split(b" ", 2)[1]))
                await conn.stream.aclose()

    async with trio.open_nursery() as nursery:
        for room in rooms:
            nursery.start_soon(one, room)


async def test_two_thousand_connects_to_one_room_fill_it_and_no_more(
    client: httpx.AsyncClient, server_factory: ServerFactory
) -> None:
    """Every join sends the whole roster to every stream of the room: O(n^2) bytes per
    join, O(n^3) to fill a room (measured: 100 peers 13 MB, 200 106 MB, 400 842 MB and
    20 s). --max-peers (64) bounds it: of 2,000 concurrent connects, 64 get a stream and
    the rest a 409 at once; the room and the server carry on."""
    _enough_files(8192)
    server = server_factory(storage="memory", admin_token=ADMIN, **ROOMY)
    room = new_room()
    before = rss_mib(server)
    streams: list[RawStream] = []
    refused: list[int] = []
    try:
        await _open_many(server, [room] * 2000, streams, refused)
        assert len(streams) == 64 and refused == [409] * 1936
        assert rss_mib(server) - before < 64
        async with join(client, server.url, new_room()) as other:
            await send_ok(client, server.url, other, other, {"still": "fine"})
        assert len(await sessions(client, server, room)) == 64
    finally:
        for stream in streams:
            await stream.conn.stream.aclose()


async def test_two_thousand_open_streams(
    client: httpx.AsyncClient, server_factory: ServerFactory
) -> None:
    """2,000 streams held open at once (20 in each of 100 rooms): each costs the server
    tens of KiB, and a room among them still answers at once."""
    _enough_files(8192)
    server = server_factory(storage="memory", heartbeat="5", **ROOMY)
    rooms = [new_room() for _ in range(100)]
    before = rss_mib(server)
    streams: list[RawStream] = []
    refused: list[int] = []
    try:
        await _open_many(server, rooms * 20, streams, refused)
        assert len(streams) == 2000 and refused == []
        per_stream_kib = (rss_mib(server) - before) * 1024 / 2000
        assert per_stream_kib < 150, per_stream_kib
        async with join(client, server.url, rooms[0]) as late:
            assert len(late.roster) == 21
            started = trio.current_time()
            await send_ok(client, server.url, late, late, {"n": 1})
            assert trio.current_time() - started < 1
    finally:
        for stream in streams:
            await stream.conn.stream.aclose()


# --- per-address budgets -------------------------------------------------------------------------


def via(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": f"6.6.6.6, {address}"}  # the client's own claim comes first


async def test_new_sessions_per_address_are_limited_resuming_is_not(
    client: httpx.AsyncClient, server_factory: ServerFactory
) -> None:
    server = server_factory(
        storage="memory", new_sessions_burst="3", new_sessions_per_minute="60", trust_proxy="1"
    )
    room = new_room()
    async with AsyncExitStack() as stack:
        peers = [
            await stack.enter_async_context(
                join(client, server.url, room, headers=via("203.0.113.1"))
            )
            for _ in range(3)
        ]
        response = await connect_refused(client, server.url, {"room": room}, via("203.0.113.1"))
        error = assert_error(response, 429)["error"]
        assert "new sessions" in error and response.headers["Retry-After"] == "1"
        # Another address has its own budget; the peer's own address is a third.
        async with join(client, server.url, room, headers=via("203.0.113.2")):
            pass
        async with join(client, server.url, room):
            pass
        # Resuming needs no budget: by token, and by Last-Event-ID alone.
        first = peers[0]
        params = {"session_id": first.session_id, "token": first.token}
        async with join(client, server.url, room, headers=via("203.0.113.1"), **params) as again:
            assert again.resumed
        headers = {**via("203.0.113.1"), "Last-Event-ID": str(peers[1].stream.last_id)}
        async with join(client, server.url, room, headers=headers) as again:
            assert again.resumed and again.session_id == peers[1].session_id
        # An unknown session id is a new session, and pays.
        unknown = {"session_id": str(uuid.uuid4()), "token": str(uuid.uuid4())}
        refused = await connect_refused(
            client, server.url, {"room": room, **unknown}, via("203.0.113.1")
        )
        assert_error(refused, 429)
        await trio.sleep(1.05)
        async with join(client, server.url, room, headers=via("203.0.113.1")) as later:
            assert not later.resumed


async def test_without_trust_proxy_x_forwarded_for_changes_nothing(
    client: httpx.AsyncClient, server_factory: ServerFactory
) -> None:
    server = server_factory(storage="memory", new_sessions_burst="2", new_sessions_per_minute="1")
    room = new_room()
    for n in range(2):
        async with join(client, server.url, room, headers=via(f"203.0.113.{n}")):
            pass
    response = await connect_refused(client, server.url, {"room": room}, via("203.0.113.9"))
    assert_error(response, 429)
    assert 50 <= int(response.headers["Retry-After"]) <= 60  # a minute a session
    assert "--trust-proxy" in server.log()  # the operator is told once


async def test_open_streams_per_address(
    client: httpx.AsyncClient, server_factory: ServerFactory
) -> None:
    server = server_factory(storage="memory", streams_per_address="3")
    room = new_room()
    async with join(client, server.url, room) as a, join(client, server.url, room) as b:
        async with join(client, server.url, room):
            response = await connect_refused(client, server.url, {"room": room})
            assert "streams are open" in assert_error(response, 429)["error"]
            assert response.headers["Retry-After"] == "5"
        # The third stream closed: its slot is free as soon as the server sees it.
        with trio.fail_after(3):
            while True:
                try:
                    async with join(client, server.url, room) as c:
                        await leave(client, server.url, c)
                    break
                except AssertionError:
                    await trio.sleep(0.05)
        # Refused connects take no slot, whatever they were refused for.
        for params in ({"room": ""}, {"room": room, "session_id": a.session_id, "token": b.token}):
            for _ in range(20):
                await connect_refused(client, server.url, params)
        # A stream replacing its session's older one frees the old one's slot.
        for _ in range(5):
            async with join(client, server.url, room, session_id=a.session_id, token=a.token):
                pass
        async with join(client, server.url, room) as d:
            assert not d.resumed


async def test_a_full_room_is_409_and_resuming_still_works(
    client: httpx.AsyncClient, server_factory: ServerFactory
) -> None:
    server = server_factory(storage="memory", max_peers="3", grace="30")
    room = new_room()
    async with join(client, server.url, room) as a, join(client, server.url, room) as b:
        async with join(client, server.url, room) as c:
            pass  # c's stream drops: it keeps its seat in its grace period
        response = await connect_refused(client, server.url, {"room": room})
        assert "full" in assert_error(response, 409)["error"]
        assert "retry-after" not in response.headers
        async with join(client, server.url, room, session_id=c.session_id, token=c.token) as c2:
            assert c2.resumed and c2.roster == [a.session_id, b.session_id, c.session_id]
            async with join(client, server.url, new_room()):
                pass  # other rooms are not affected
            assert (await leave(client, server.url, c2)).status_code == 200
        async with join(client, server.url, room) as d:
            assert d.roster == [a.session_id, b.session_id, d.session_id]


# --- admission tickets ---------------------------------------------------------------------------

SECRET = "admission-secret-" + uuid.uuid4().hex


async def test_admission_tickets(client: httpx.AsyncClient, server_factory: ServerFactory) -> None:
    server = server_factory(storage="memory", admission=f"secret:{SECRET}", grace="30")
    room = new_room()
    for ticket, problem in [
        (None, "required"),
        ("nonsense", "malformed"),
        (mint_ticket(SECRET, "another-room", 60), "not valid"),
        (mint_ticket("not-the-secret-at-all", room, 60), "not valid"),
        (mint_ticket(SECRET, room, -1), "expired"),
    ]:
        params = {"room": room} if ticket is None else {"room": room, "ticket": ticket}
        response = await connect_refused(client, server.url, params)
        assert problem in assert_error(response, 403)["error"]
        if ticket is not None:
            assert ticket not in response.text
    good = mint_ticket(SECRET, room, 3)
    async with join(client, server.url, room, ticket=good) as a:
        # Resuming needs no ticket (an EventSource keeps the URL it started with, so the
        # ticket may have expired by then): by token, and by Last-Event-ID.
        async with join(client, server.url, room, session_id=a.session_id, token=a.token) as a2:
            assert a2.resumed
        async with join(
            client, server.url, room, headers={"Last-Event-ID": str(a2.stream.last_id)}
        ) as a3:
            assert a3.resumed
            await send_ok(client, server.url, a3, a3, {"signals": "need no ticket"})
        await trio.sleep(int(good.split(".")[0]) - time.time() + 0.1)  # expired
        expired = await connect_refused(client, server.url, {"room": room, "ticket": good})
        assert "expired" in assert_error(expired, 403)["error"]
        async with join(
            client, server.url, room, session_id=a.session_id, token=a.token, ticket=good
        ) as a4:
            assert a4.resumed
            assert (await leave(client, server.url, a4)).status_code == 200
    assert SECRET not in server.log()
