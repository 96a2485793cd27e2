"""Malformed HTTP and JSON against a real server: each gets a clear 4xx (or, where HTTP
leaves nothing else, a closed connection), nothing bad reaches a room, and the server
stays healthy afterwards (``/healthz`` on a fresh connection after every attack).

What tests/integration/test_http.py and test_signal.py already cover is not repeated
here (a room of invalid UTF-8, bodies that are not JSON objects, Content-Length shorter
or longer than the body, a few pipelined requests, chunked bodies): see
docs/reliability.md for the whole table.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from typing import Any

import httpx
import pytest
import trio

from roomkeeper.http import parsing
from roomkeeper.testing import serve_async

from .conftest import (
    Peer,
    RawConnection,
    RawResponse,
    ServerProcess,
    assert_error,
    join,
    new_room,
    request_bytes,
    send_ok,
    start_shared,
    sync,
)

# Per-address limits well out of the way: these tests open many sessions from 127.0.0.1.
ROOMY = {
    "new_sessions_per_minute": "100000",
    "new_sessions_burst": "10000",
    "streams_per_address": "10000",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    running = start_shared(tmp_path_factory.mktemp("abuse"), **ROOMY)
    yield running
    running.kill()


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with short timeouts for requests and idle connections (1 s each)."""
    running = start_shared(
        tmp_path_factory.mktemp("strict"), keep_alive_timeout="1", body_timeout="1", **ROOMY
    )
    yield running
    running.kill()


@pytest.fixture
async def pair(
    client: httpx.AsyncClient, server: ServerProcess
) -> AsyncIterator[tuple[Peer, Peer]]:
    room = new_room()
    async with join(client, server.url, room) as a, join(client, server.url, room) as b:
        await a.stream.next()  # b's arrival
        yield a, b


async def healthy(server: ServerProcess) -> None:
    """The server answers /healthz on a new connection at once."""
    async with await RawConnection.open(server) as conn:
        await conn.send(request_bytes("GET", "/healthz"))
        response = await conn.response(wait=3)
    assert (response.status, response.json()) == (200, {"status": "ok"})


async def exchange(server: ServerProcess, data: bytes, wait: float = 5) -> tuple[bytes, bool]:
    """Send ``data`` on a new connection; everything the server sends back within
    ``wait`` seconds, and whether it closed the connection."""
    async with await RawConnection.open(server) as conn:
        with suppress(trio.BrokenResourceError):  # refused and closed while still sending
            await conn.send(data)
        closed = await conn.closed_within(wait)
        return conn.buffer, closed


def refused_431(raw: bytes, closed: bool) -> bool:
    """431 and a closed connection; or just a reset, when the server closed while the
    client was still sending (the kernel then drops the answer the client had not read)."""
    return closed and (raw == b"" or status_of(raw) == 431)


async def one(server: ServerProcess | str, data: bytes) -> RawResponse:
    async with await RawConnection.open(server) as conn:
        await conn.send(data)
        return await conn.response()


def status_of(raw: bytes) -> int:
    assert raw.startswith(b"HTTP/1.1 "), raw[:100]
    return int(raw.split(b" ", 2)[1])


def body_of(a: Peer, b: Peer, signal: Any = None) -> dict[str, Any]:
    return {
        "sender": a.session_id,
        "to": b.session_id,
        "token": a.token,
        "signal": {"n": 1} if signal is None else signal,
    }


def json_error(response: RawResponse, status: int) -> str:
    assert response.status == status, (response.status, response.body[:200])
    assert (response.header("content-type") or "").startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and body["error"]
    return str(body["error"])


# --- invalid UTF-8 ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "/api/connect?room=r&session_id=%FF",
        "/api/connect?room=r&token=%C3%28",
        "/api/connect?room=r&last_event_id=%80",
        "/api/connect?room=r&%FF=1",
        "/api/signal?room=r&other=%ED%A0%80",  # an encoded surrogate half
    ],
)
async def test_invalid_utf8_anywhere_in_the_query_is_400(
    server: ServerProcess, target: str
) -> None:
    method, body = ("POST", b"{}") if "signal" in target else ("GET", None)
    json_error(await one(server, request_bytes(method, target, body=body)), 400)
    await healthy(server)


@pytest.mark.parametrize(
    "target", [b"/api/connect?room=\xff\xfe", "/api/connect?room=caf\u00e9".encode()]
)
async def test_raw_bytes_in_the_request_target_are_400_and_close(
    server: ServerProcess, target: bytes
) -> None:
    """HTTP allows only visible ASCII in a request target: h11 refuses it before the app."""
    raw, closed = await exchange(server, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(raw) == 400 and closed
    await healthy(server)


async def test_invalid_utf8_in_a_leave_body_is_400(
    client: httpx.AsyncClient, server: ServerProcess, pair: tuple[Peer, Peer]
) -> None:
    a, b = pair
    body = b'{"sender": "%b", "token": "%b", "x": "\xff"}' % (
        a.session_id.encode(),
        a.token.encode(),
    )
    response = await client.post(f"{server.url}/api/leave", params={"room": a.room}, content=body)
    assert_error(response, 400)
    assert await sync(client, b) == []  # no roster change: a did not leave
    assert await sync(client, a) == []  # and a's stream goes on
    await healthy(server)


# --- JSON bombs and edge values -----------------------------------------------------------------


def _signal_with(a: Peer, b: Peer, signal_text: bytes) -> bytes:
    return b'{"sender": "%b", "to": "%b", "token": "%b", "signal": %b}' % (
        a.session_id.encode(),
        b.session_id.encode(),
        a.token.encode(),
        signal_text,
    )


DEPTH_BOMBS = {
    "arrays-50k": b"[" * 50_000 + b"]" * 50_000,
    "objects-10k": b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
    "unclosed-100k": b"[" * 100_000,
    "signal-65-levels": None,  # made below: one level over the limit, inside a real signal
}


@pytest.mark.parametrize("name", list(DEPTH_BOMBS))
async def test_depth_bombs_are_400(
    client: httpx.AsyncClient, server: ServerProcess, pair: tuple[Peer, Peer], name: str
) -> None:
    a, b = pair
    content = DEPTH_BOMBS[name]
    if content is None:  # body level 1, signal level 2: 63 more make 65
        content = _signal_with(a, b, b'{"x":' * 63 + b"{}" + b"}" * 63)
    response = await client.post(
        f"{server.url}/api/signal", params={"room": a.room}, content=content
    )
    error = assert_error(response, 400)["error"]
    assert "depth limit" in error or "deeper than 64" in error
    assert await sync(client, b) == []
    await healthy(server)


async def test_the_deepest_accepted_signal_arrives(
    client: httpx.AsyncClient, server: ServerProcess, pair: tuple[Peer, Peer]
) -> None:
    a, b = pair
    signal = b'{"x":' * 62 + b"{}" + b"}" * 62  # 64 levels with the body
    response = await client.post(
        f"{server.url}/api/signal", params={"room": a.room}, content=_signal_with(a, b, signal)
    )
    assert response.status_code == 200, response.text
    (event,) = await sync(client, b)
    assert event.data["signal"] == json.loads(signal)


HUGE_NUMBERS: list[tuple[str, bytes, int]] = [
    # id, signal text, status
    ("int-300-digits", b'{"n": ' + b"9" * 300 + b"}", 200),
    ("int-309-digits", b'{"n": ' + b"9" * 309 + b"}", 400),  # beyond the float range
    ("int-5000-digits", b'{"n": ' + b"1" * 5000 + b"}", 400),  # past Python's str->int limit
    ("float-1e308", b'{"n": 1e308}', 200),
    ("float-1e309", b'{"n": 1e309}', 400),
    ("float-1e-400", b'{"n": 1e-400}', 200),  # underflows to 0.0, as every parser does
    ("minus-zero", b'{"n": -0}', 200),
    ("exponent-99999", b'{"n": 1e99999}', 400),
    ("mixed", b'{"f": 0.5, "big": ' + b"7" * 100 + b"}", 200),
]


@pytest.mark.parametrize(
    ("text", "status"), [h[1:] for h in HUGE_NUMBERS], ids=[h[0] for h in HUGE_NUMBERS]
)
async def test_huge_numbers(
    client: httpx.AsyncClient,
    server: ServerProcess,
    pair: tuple[Peer, Peer],
    text: bytes,
    status: int,
) -> None:
    a, b = pair
    response = await client.post(
        f"{server.url}/api/signal", params={"room": a.room}, content=_signal_with(a, b, text)
    )
    if status != 200:
        assert_error(response, status)
        assert await sync(client, b) == []
        return
    assert response.status_code == 200, response.text
    (event,) = await sync(client, b)
    assert event.data["signal"] == json.loads(text)
    for token in text.split():  # integers arrive digit for digit
        digits = token.strip(b"{}, ").decode()
        if digits.isdigit():
            assert digits in event.raw_data


async def test_duplicate_keys_last_one_wins_and_cannot_smuggle_a_token(
    client: httpx.AsyncClient, server: ServerProcess, pair: tuple[Peer, Peer]
) -> None:
    """Every JSON reader here keeps the last of duplicate keys (as orjson and the stdlib
    do): a right token followed by a wrong one is a wrong token, and so on."""
    a, b = pair
    url = f"{server.url}/api/signal"
    q = {"room": a.room}
    forged = str(uuid.uuid4())

    def text(*pairs: tuple[str, str]) -> bytes:
        return ("{" + ", ".join(f'"{k}": {v}' for k, v in pairs) + "}").encode()

    sender, to = f'"{a.session_id}"', f'"{b.session_id}"'
    right, wrong = f'"{a.token}"', f'"{forged}"'
    signal = '{"n": 1}'
    refused = text(
        ("sender", sender), ("to", to), ("token", right), ("token", wrong), ("signal", signal)
    )
    assert_error(await client.post(url, params=q, content=refused), 403)
    as_b = text(
        ("sender", sender),
        ("to", to),
        ("token", right),
        ("sender", f'"{b.session_id}"'),
        ("signal", signal),
    )
    assert_error(await client.post(url, params=q, content=as_b), 403)
    accepted = text(
        ("sender", sender),
        ("to", f'"{a.session_id}"'),
        ("token", wrong),
        ("token", right),
        ("signal", '{"n": "first"}'),
        ("to", to),
        ("signal", '{"n": "last"}'),
    )
    response = await client.post(url, params=q, content=accepted)
    assert response.status_code == 200, response.text
    assert [e.data["signal"] for e in await sync(client, b)] == [{"n": "last"}]


async def test_duplicate_query_parameters_first_one_wins(
    client: httpx.AsyncClient, server: ServerProcess, pair: tuple[Peer, Peer]
) -> None:
    a, b = pair
    other = new_room()
    url = f"{server.url}/api/signal?room={a.room}&room={other}"
    response = await client.post(url, json=body_of(a, b))
    assert response.status_code == 200, response.text
    url = f"{server.url}/api/signal?room={other}&room={a.room}"
    assert_error(await client.post(url, json=body_of(a, b)), 403)
    assert len(await sync(client, b)) == 1


# --- framing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"Content-Length": "2", "Transfer-Encoding": "chunked"}, b"2\r\n{}\r\n0\r\n\r\n"),
        ({"Transfer-Encoding": "chunked", "Content-Length": "200"}, b"2\r\n{}\r\n0\r\n\r\n"),
    ],
    ids=["cl-then-te", "te-then-cl"],
)
async def test_content_length_with_transfer_encoding_is_400_and_closes(
    server: ServerProcess, headers: dict[str, str], body: bytes
) -> None:
    """Both framings in one request is how request smuggling starts (RFC 9112 6.3): it is
    refused, and the connection is closed so that nothing after it is read as a request."""
    data = request_bytes("POST", "/api/signal?room=r", headers=headers, body=body)
    raw, closed = await exchange(server, data, wait=3)
    assert status_of(raw) == 400 and b"Transfer-Encoding together" in raw and closed
    assert b"connection: close" in raw.lower()
    await healthy(server)


@pytest.mark.parametrize(
    "lengths",
    [["2", "3"], ["+2"], ["2, 2, 3"], ["0x2"], ["9" * 1000]],
    ids=["two-values", "plus-sign", "list", "hex", "1000-digits"],
)
async def test_bad_content_lengths_are_refused(server: ServerProcess, lengths: list[str]) -> None:
    head = "POST /api/signal?room=r HTTP/1.1\r\nHost: x\r\n"
    head += "".join(f"Content-Length: {n}\r\n" for n in lengths)
    raw, _ = await exchange(server, head.encode() + b"\r\n{}x", wait=2)
    assert status_of(raw) in (400, 413)
    await healthy(server)


async def test_a_flood_of_pipelined_requests_is_answered_in_order(
    client: httpx.AsyncClient, server: ServerProcess, pair: tuple[Peer, Peer]
) -> None:
    """300 requests in one write, alternating good signals, refused bodies and health
    checks: each is answered, in order, and each good signal arrives once."""
    a, b = pair
    target = f"/api/signal?room={a.room}"
    data = b""
    for n in range(100):
        data += request_bytes("POST", target, body=json.dumps(body_of(a, b, {"n": n})).encode())
        data += request_bytes("POST", target, body=b"[]")
        data += request_bytes("GET", "/healthz")
    async with await RawConnection.open(server) as conn:
        await conn.send(data)
        statuses = [(await conn.response(wait=10)).status for _ in range(300)]
    assert statuses == [200, 400, 200] * 100
    assert [e.data["signal"]["n"] for e in await sync(client, b)] == list(range(100))


# --- header and URL floods -------------------------------------------------------------------


async def test_many_headers_within_the_limit_are_served(server: ServerProcess) -> None:
    headers = {f"X-Flood-{n}": "1" for n in range(3000)}
    response = await one(server, request_bytes("GET", "/healthz", headers=headers))
    assert response.status == 200
    await healthy(server)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Huge": "a" * 300_000},
        {f"X-Flood-{n}": "b" * 40 for n in range(20_000)},
    ],
    ids=["one-300k-header", "20000-headers"],
)
async def test_header_floods_are_431_and_close(
    server: ServerProcess, headers: dict[str, str]
) -> None:
    """Past what h11 buffers for an incomplete request head (16 KiB beyond one read of
    64 KiB), the answer is 431 and the connection closes: memory per connection stays
    bounded whatever the client sends."""
    raw, closed = await exchange(server, request_bytes("GET", "/healthz", headers=headers))
    assert refused_431(raw, closed)
    await healthy(server)


async def test_a_token_header_of_100k_is_400(
    client: httpx.AsyncClient, server: ServerProcess, pair: tuple[Peer, Peer]
) -> None:
    a, b = pair
    body = body_of(a, b)
    del body["token"]
    response = await client.post(
        f"{server.url}/api/signal",
        params={"room": a.room},
        json=body,
        headers={"Authorization": "Bearer " + "t" * 50_000},
    )
    assert_error(response, 400)
    await healthy(server)


@pytest.mark.parametrize(
    ("length", "status"), [(5_000, 400), (40_000, 400), (300_000, 431)], ids=["5k", "40k", "300k"]
)
@pytest.mark.parametrize("pieces", [1, 2], ids=["one-write", "two-writes"])
async def test_very_long_urls_and_room_names(
    server: ServerProcess, length: int, status: int, pieces: int
) -> None:
    """A request head of up to 64 KiB is read whole, however it arrives; past 128 KiB it
    is 431. (The 40k case once failed under load: h11 refused an incomplete head over
    16 KiB, so a 40 kB head got 431 when it came in two reads and 400 in one. Two writes,
    a moment apart, make two reads.)"""
    data = request_bytes("GET", "/api/connect?room=" + "r" * length)
    async with await RawConnection.open(server) as conn:
        with suppress(trio.BrokenResourceError):  # refused and closed while still sending
            for n in range(pieces):
                await conn.send(data[n * len(data) // pieces : (n + 1) * len(data) // pieces])
                if n + 1 < pieces:
                    await trio.sleep(0.1)
        if status == 431:
            closed = await conn.closed_within(2)
            assert refused_431(conn.buffer, closed)
        else:
            assert "longer than 256" in json_error(await conn.response(), 400)
    await healthy(server)


async def test_a_long_query_of_many_parameters_is_parsed_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A query string of 5,000 parameters is decoded once per request, not again by the
    access log or the admin view's activity tracking (which used to parse it anew to find
    the room): counted at the decoding of each key and value, on an embedded server with
    both on."""
    query = "&".join(f"p{n}=v" for n in range(5000))
    decoded = 0
    decode = parsing._decode

    def counting(raw: bytes) -> str:
        nonlocal decoded
        decoded += 1
        return decode(raw)

    monkeypatch.setattr(parsing, "_decode", counting)
    caplog.set_level(logging.DEBUG, "roomkeeper.access")  # the log line names the room
    async with serve_async(admin_token="parsed-once-" + uuid.uuid4().hex) as server:
        for method, target, status in (
            ("GET", f"/api/connect?{query}&room=", 400),
            ("GET", f"/api/connect?{query}&room=r&session_id=nope", 400),
            ("POST", f"/api/signal?{query}&room=", 400),
            ("POST", f"/api/leave?{query}&room=r", 403),
        ):
            body = None if method == "GET" else json.dumps(_stranger()).encode()
            decoded = 0
            parsing.parse_query(target.partition("?")[2].encode())
            once, decoded = decoded, 0
            assert once >= 2 * 5001
            response = await one(server.url, request_bytes(method, target, body=body))
            json_error(response, status)
            assert decoded == once, (target[-40:], decoded, once)
        assert any("/api/" in r.getMessage() for r in caplog.records)  # the log was on


def _stranger() -> dict[str, Any]:
    sender = str(uuid.uuid4())
    return {"sender": sender, "to": sender, "token": str(uuid.uuid4()), "signal": {}}


# --- slow clients ----------------------------------------------------------------------------


async def _dribble(conn: RawConnection, data: bytes, every: float, until: float) -> int:
    """Send ``data`` a byte at a time; how many bytes went before the server closed."""
    sent = 0
    with trio.move_on_after(until):
        for byte in data:
            try:
                await conn.send(bytes([byte]))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return sent
            sent += 1
            await trio.sleep(every)
    return sent


async def test_slowloris_headers_are_cut_off(strict: ServerProcess) -> None:
    """Headers sent a byte at a time must all be in within --keep-alive-timeout (1 s
    here), on a fresh connection and on one that has served a request already; the
    server answers everyone else meanwhile."""
    head = request_bytes("GET", "/healthz", headers={"X-Padding": "p" * 200})
    for warm in (False, True):
        async with await RawConnection.open(strict) as conn:
            if warm:
                await conn.send(request_bytes("GET", "/healthz"))
                assert (await conn.response()).status == 200
            started = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_dribble, conn, head, 0.05, 4.0)
                await healthy(strict)
                assert await conn.closed_within(4), "the slow connection was not closed"
                nursery.cancel_scope.cancel()
            took = trio.current_time() - started
            assert 0.8 < took < 4, took
            assert b"200" not in conn.buffer


async def test_idle_connections_are_closed(strict: ServerProcess) -> None:
    """Connections that send nothing, or stop after a request, are closed after
    --keep-alive-timeout: a pile of them costs nothing for long."""
    conns = [await RawConnection.open(strict) for _ in range(200)]
    try:
        for conn in conns[:100]:
            await conn.send(request_bytes("GET", "/healthz"))
        started = trio.current_time()
        await healthy(strict)
        for conn in conns:
            assert await conn.closed_within(3)
        assert trio.current_time() - started < 5
    finally:
        for conn in conns:
            await conn.stream.aclose()


async def test_a_body_sent_a_byte_at_a_time_is_408_and_closed(
    client: httpx.AsyncClient, strict: ServerProcess
) -> None:
    room = new_room()
    async with join(client, strict.url, room) as a, join(client, strict.url, room) as b:
        body = json.dumps(body_of(a, b)).encode()
        head = request_bytes(
            "POST", f"/api/signal?room={room}", headers={"Content-Length": str(len(body))}
        )
        async with await RawConnection.open(strict) as conn:
            await conn.send(head)
            started = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_dribble, conn, body, 0.05, 4.0)
                response = await conn.response(wait=4)
                nursery.cancel_scope.cancel()
            assert 0.8 < trio.current_time() - started < 4
            assert "Timeout" in json_error(response, 408)
            assert (response.header("connection") or "").lower() == "close"
            assert await conn.closed_within(2)
        await send_ok(client, strict.url, a, b, {"after": "slow"})
        assert [e.data["signal"] for e in await sync(client, b)] == [{"after": "slow"}]
    await healthy(strict)


async def test_a_half_sent_body_then_silence_is_408(strict: ServerProcess) -> None:
    data = request_bytes("POST", "/api/signal?room=r", headers={"Content-Length": "100"}, body=b"{")
    async with await RawConnection.open(strict) as conn:
        await conn.send(data)
        json_error(await conn.response(wait=3), 408)
    await healthy(strict)


async def test_a_tls_handshake_or_garbage_is_400_and_closes(server: ServerProcess) -> None:
    hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) * 4
    raw, closed = await exchange(server, hello)
    assert status_of(raw) == 400 and closed
    raw, closed = await exchange(server, b"\x00" * 10_000)
    assert closed
    await healthy(server)
