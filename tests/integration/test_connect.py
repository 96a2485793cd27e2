"""GET /api/connect: room names, the stream's headers and framing, the session and roster
events, heartbeats and event ids."""

from __future__ import annotations

import json
import re
import uuid
from contextlib import AsyncExitStack

import httpx
import pytest
import trio

from .conftest import (
    HEARTBEAT,
    STREAM_TIMEOUT,
    RawConnection,
    RawResponse,
    ServerProcess,
    assert_error,
    connect_refused,
    join,
    new_room,
    request_bytes,
    send_ok,
    sync,
    wall_ms,
)

FRONT_DOOR = pytest.mark.single_process(
    "HTTP framing and connection handling are nginx's in front of a cluster (docs/scaling.md)"
)

# --- room names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [{}, {"room": ""}, {"other": "x"}, {"ROOM": "x"}],
    ids=["missing", "empty", "other-param", "wrong-case"],
)
async def test_room_missing_or_empty_is_400(
    client: httpx.AsyncClient, base: str, query: dict[str, str]
) -> None:
    assert_error(await connect_refused(client, base, query), 400)


async def test_room_given_without_value_is_400(shared_server: ServerProcess) -> None:
    response = await _raw_get(shared_server, "/api/connect?room")
    assert response.status == 400
    assert response.header("content-type") == "application/json"
    assert "error" in response.json()


@pytest.mark.parametrize(
    "name",
    ["a" * 256, "é" * 128, "€" * 85 + "a", "😀" * 64],
    ids=["256-ascii", "256-bytes-2byte", "256-bytes-3byte", "256-bytes-4byte"],
)
async def test_room_of_256_utf8_bytes_is_accepted(
    client: httpx.AsyncClient, base: str, name: str
) -> None:
    assert len(name.encode()) == 256
    async with join(client, base, name) as peer:
        assert peer.first[0].data["room"] == name


@pytest.mark.parametrize(
    "name",
    ["a" * 257, "é" * 129, "€" * 86, "😀" * 64 + "a", "a" * 5000],
    ids=["257-ascii", "258-bytes-2byte", "258-bytes-86-chars", "257-bytes-4byte", "5000"],
)
async def test_room_over_256_utf8_bytes_is_400(
    client: httpx.AsyncClient, base: str, name: str
) -> None:
    assert len(name.encode()) > 256
    assert_error(await connect_refused(client, base, {"room": name}), 400)


@pytest.mark.parametrize(
    "escape", ["%FF", "%C3%28", "%ED%A0%80", "%C0%AF", "ok%80"], ids=lambda e: e
)
async def test_room_invalid_utf8_after_percent_decoding_is_400(
    shared_server: ServerProcess, escape: str
) -> None:
    response = await _raw_get(shared_server, f"/api/connect?room={escape}")
    assert response.status == 400, response
    assert response.header("content-type") == "application/json"
    assert response.header("access-control-allow-origin") == "*"
    assert set(response.json()) == {"error"}


@pytest.mark.parametrize(
    ("target_room", "expected"),
    [("%E2%82%AC%20x", "€ x"), ("a+b", "a b"), ("caf%C3%A9", "café"), ("%zz", "%zz")],
    ids=["percent-utf8", "plus-is-space", "mixed", "bad-escape-stays"],
)
async def test_room_name_is_percent_decoded(
    shared_server: ServerProcess, target_room: str, expected: str
) -> None:
    async with await RawConnection.open(shared_server) as conn:
        await conn.send(request_bytes("GET", f"/api/connect?room={target_room}"))
        with trio.fail_after(5):
            while (
                b"event: session" not in conn.buffer
                or b"\n\n" not in conn.buffer.split(b"event: session", 1)[1]
            ):
                assert await conn._fill()
        data = conn.buffer.split(b"event: session\ndata: ", 1)[1].split(b"\n", 1)[0]
        assert json.loads(data)["room"] == expected


async def test_rooms_are_separate(client: httpx.AsyncClient, base: str) -> None:
    room = new_room()
    async with join(client, base, room) as a, join(client, base, room + "x") as b:
        assert a.roster == [a.session_id]
        assert b.roster == [b.session_id]
        assert await sync(client, a) == []


# --- the stream's headers and framing ------------------------------------------------------


@pytest.mark.single_process("nginx consumes X-Accel-Buffering, which roomkeeper sends for it")
async def test_stream_headers_on_http11(client: httpx.AsyncClient, base: str, room: str) -> None:
    async with join(client, base, room) as peer:
        headers = peer.stream.headers
        assert peer.stream.response.http_version == "HTTP/1.1"
        assert headers["content-type"].split(";")[0].strip() == "text/event-stream"
        assert headers["cache-control"] == "no-cache, no-transform"
        assert headers["x-accel-buffering"] == "no"
        assert headers["connection"].lower() == "keep-alive"
        assert headers["access-control-allow-origin"] == "*"
        assert "content-length" not in headers


@FRONT_DOOR
async def test_stream_headers_on_http2_have_no_connection_header(base: str, room: str) -> None:
    async with (
        httpx.AsyncClient(http1=False, http2=True) as h2,
        join(h2, base, room) as peer,
    ):
        headers = peer.stream.headers
        assert peer.stream.response.http_version == "HTTP/2"
        assert headers["content-type"].split(";")[0].strip() == "text/event-stream"
        assert headers["cache-control"] == "no-cache, no-transform"
        assert headers["x-accel-buffering"] == "no"
        assert "connection" not in headers
        assert headers["access-control-allow-origin"] == "*"


async def test_stream_framing_on_the_wire(client: httpx.AsyncClient, base: str, room: str) -> None:
    """``retry:`` first; each event is exactly ``id``, ``event``, one ``data`` line of JSON."""
    async with client.stream(
        "GET", f"{base}/api/connect", params={"room": room}, timeout=STREAM_TIMEOUT
    ) as response:
        raw = b""
        with trio.fail_after(5):
            async for chunk in response.aiter_bytes():
                raw += chunk
                if b"event: heartbeat" in raw and raw.endswith(b"\n\n"):
                    break
    text = raw.decode("utf-8")
    assert "\r" not in text
    blocks = [
        [line for line in block.split("\n") if line and not line.startswith(":")]
        for block in text.split("\n\n")
    ]
    blocks = [block for block in blocks if block]
    assert re.fullmatch(r"retry: [0-9]+", blocks[0][0]), blocks[0]
    assert len(blocks[0]) == 1
    names = []
    last = 0
    for block in blocks[1:]:
        fields = dict(line.split(": ", 1) for line in block)
        assert len(fields) == len(block) == 3, block
        assert [line.split(":")[0] for line in block] == ["id", "event", "data"]
        assert re.fullmatch(r"[0-9]+", fields["id"])
        assert int(fields["id"]) > last
        last = int(fields["id"])
        json.loads(fields["data"])
        names.append(fields["event"])
    assert names[:2] == ["session", "roster"]
    assert "heartbeat" in names


async def test_session_event(client: httpx.AsyncClient, base: str, room: str) -> None:
    async with join(client, base, room) as a, join(client, base, room) as b:
        for peer in (a, b):
            session = peer.first[0]
            assert peer.stream.retry_first is True
            assert peer.stream.retry is not None and peer.stream.retry > 0
            fields = {"session_id", "token", "room", "resumed", "ice_servers", "max_batch"}
            assert set(session.data) == fields
            assert session.data["ice_servers"] == []  # no --stun-uris or --turn-uris
            assert session.data["room"] == room
            assert session.data["resumed"] is False
            for field in ("session_id", "token"):
                value = session.data[field]
                parsed = uuid.UUID(value)
                assert str(parsed) == value  # canonical lowercase form
                assert parsed.version == 4
                assert parsed.variant == uuid.RFC_4122
            assert session.data["session_id"] != session.data["token"]
        assert len({a.session_id, a.token, b.session_id, b.token}) == 4


async def test_token_is_never_sent_to_peers(
    client: httpx.AsyncClient, base: str, room: str
) -> None:
    async with join(client, base, room) as a, join(client, base, room) as b:
        await send_ok(client, base, b, a, {"hello": 1})
        await sync(client, a)
        for event in a.stream.events[1:]:
            assert b.token not in event.raw_data
        assert b.token not in a.first[1].raw_data


# --- roster ---------------------------------------------------------------------------------


async def test_roster_in_join_order_sent_to_every_stream(
    client: httpx.AsyncClient, base: str, room: str
) -> None:
    async with AsyncExitStack() as stack:
        peers = []
        for n in range(4):
            peer = await stack.enter_async_context(join(client, base, room))
            peers.append(peer)
            ids = [p.session_id for p in peers]
            assert peer.roster == ids  # join order, yourself included (last)
            for earlier in peers[:-1]:
                event = await earlier.stream.next()
                assert (event.event, event.data) == ("roster", {"peers": ids}), n
        # Nobody gets a roster that did not change.
        for peer in peers:
            assert await sync(client, peer) == []


# --- heartbeats and ids ---------------------------------------------------------------------


async def test_heartbeats_keep_the_stream_from_going_quiet(
    client: httpx.AsyncClient, base: str, room: str
) -> None:
    async with join(client, base, room) as peer:
        start = trio.current_time()
        beats = []
        previous = peer.first[-1].at
        gaps = []
        while trio.current_time() - start < 2 * HEARTBEAT:
            event = await peer.stream.next(skip_heartbeats=False, wait=3 * HEARTBEAT)
            gaps.append(event.at - previous)
            previous = event.at
            assert event.event == "heartbeat"
            beats.append(event)
        assert len(beats) >= 2
        # Never quiet for longer than the interval (plus scheduling slack).
        assert max(gaps) <= HEARTBEAT + 0.5, gaps
        for beat in beats:
            assert set(beat.data) == {"ts"}
            assert isinstance(beat.data["ts"], int)
            assert abs(beat.data["ts"] - wall_ms()) < 10_000


async def test_event_ids_grow_across_a_burst(
    client: httpx.AsyncClient, base: str, room: str
) -> None:
    async with join(client, base, room) as a, join(client, base, room) as b:
        async with trio.open_nursery() as nursery:
            for n in range(40):
                nursery.start_soon(send_ok, client, base, a, b, {"n": n})
        got: set[int] = set()
        while len(got) < 40:
            event = await b.stream.next()
            if event.event == "signal":
                got.add(event.data["signal"]["n"])
        ids = [event.id for event in b.stream.events]
        assert ids == sorted(set(ids))  # strictly growing (also checked on every read)


# --- HEAD must not make a session -----------------------------------------------------------


async def test_head_connect_makes_no_session(
    client: httpx.AsyncClient, base: str, room: str
) -> None:
    response = await client.head(f"{base}/api/connect", params={"room": room})
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == "text/event-stream"
    assert response.content == b""
    async with join(client, base, room) as peer:
        assert peer.roster == [peer.session_id]


async def test_head_connect_leaves_the_connection_usable(shared_server: ServerProcess) -> None:
    async with await RawConnection.open(shared_server) as conn:
        await conn.send(request_bytes("HEAD", f"/api/connect?room={new_room()}"))
        await conn.send(request_bytes("GET", "/healthz"))
        head = await conn.response(head=True)
        assert head.status == 200 and head.body == b""
        health = await conn.response()
        assert health.status == 200 and health.json() == {"status": "ok"}


async def test_head_connect_checks_the_room(client: httpx.AsyncClient, base: str) -> None:
    response = await client.head(f"{base}/api/connect")
    assert response.status_code == 400


async def _raw_get(server: ServerProcess, target: str) -> RawResponse:
    async with await RawConnection.open(server) as conn:
        await conn.send(request_bytes("GET", target))
        return await conn.response()


async def test_concurrent_joins_agree_on_the_roster(
    client: httpx.AsyncClient, base: str, room: str
) -> None:
    async with AsyncExitStack() as stack:
        peers = []

        async def enter() -> None:
            peers.append(await stack.enter_async_context(join(client, base, room)))

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(enter)
        # Each stream's rosters grow one join at a time, in one order shared by all.
        final = max((p.roster for p in peers), key=len)
        assert sorted(final) == sorted(p.session_id for p in peers)
        for peer in peers:
            roster = peer.roster
            assert roster == final[: len(roster)] and roster[-1] == peer.session_id
            while roster != final:
                event = await peer.stream.next()
                assert event.event == "roster"
                assert len(event.data["peers"]) == len(roster) + 1
                roster = event.data["peers"]
                assert roster == final[: len(roster)]
            assert await sync(client, peer) == []
