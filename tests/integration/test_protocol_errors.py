"""What h11 refuses before any route sees it, on a real server: the protocol's JSON error
with the server's CORS headers, as every other answer (docs/protocol.md, "Limits").

Not in tests/cluster's pass: behind nginx, nginx answers malformed HTTP itself.
"""

from __future__ import annotations

from collections.abc import Iterator

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest
import trio

from .conftest import RawConnection, RawResponse, ServerProcess, request_bytes, start_shared

LISTED = "https://app.example"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    running = start_shared(tmp_path_factory.mktemp("protocol-errors"))
    yield running
    running.kill()


@pytest.fixture(scope="module")
def listed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server that allows one origin (``--cors-origins``)."""
    running = start_shared(tmp_path_factory.mktemp("protocol-errors-cors"), cors_origins=LISTED)
    yield running
    running.kill()


async def refused(server: ServerProcess, data: bytes, *, head: bool = False) -> RawResponse:
    """The answer to ``data`` sent on a new connection, which must then close."""
    async with await RawConnection.open(server) as conn:
        await conn.send(data)
        response = await conn.response(head=head)
        assert await conn.closed_within(5), conn.buffer[:200]
    assert response.header("connection") == "close"
    assert response.header("content-type") == "application/json"
    assert response.header("x-request-id")
    assert response.header("date")  # Hypercorn's own response headers are kept
    return response


def error(response: RawResponse) -> str:
    assert int(response.header("content-length") or -1) == len(response.body)
    body = response.json()
    assert set(body) == {"error"}
    return str(body["error"])


async def test_a_malformed_request_line_is_a_json_400_that_any_origin_may_read(
    server: ServerProcess,
) -> None:
    response = await refused(server, b"GET /healthz HTTP/1.1 extra\r\nHost: x\r\n\r\n")
    assert response.status == 400
    assert error(response) == "Bad Request: malformed request line"
    assert response.header("access-control-allow-origin") == "*"
    assert response.header("access-control-expose-headers") == "Retry-After, X-Request-Id"


async def test_a_head_over_64_kib_is_a_json_431(server: ServerProcess) -> None:
    """80 kB of a head with no end: once all of it is in, more than 64 KiB waits
    incomplete. (The client sends nothing after it, so the close resets nothing.)"""
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 80_000
    response = await refused(server, head)
    assert response.status == 431
    assert error(response) == (
        "Request Header Fields Too Large: request line and headers over 65536 bytes"
    )
    assert response.header("access-control-allow-origin") == "*"


async def test_a_transfer_coding_other_than_chunked_is_a_json_501(server: ServerProcess) -> None:
    data = b"POST /api/signal?room=r HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"
    response = await refused(server, data)
    assert response.status == 501
    assert error(response) == "Not Implemented: only Transfer-Encoding: chunked is supported"


async def test_the_refused_bytes_are_never_echoed(server: ServerProcess) -> None:
    """h11's message quotes the bad line (with a token in its query, say): the answer
    says what was wrong in its own words."""
    token = "0f8fad5b-d9cb-469f-a165-70867728950e"
    response = await refused(server, f"GET /api/connect?token={token} HTTP/1.1 x\r\n\r\n".encode())
    assert response.status == 400 and token.encode() not in response.body


async def test_with_a_list_of_origins_an_unparsed_request_allows_none(
    listed: ServerProcess,
) -> None:
    """The request could not be parsed, so its Origin is not known: no origin is allowed
    (the answer varies by Origin, as every answer of such a server)."""
    data = f"GET /healthz HTTP/1.1 extra\r\nHost: x\r\nOrigin: {LISTED}\r\n\r\n".encode()
    response = await refused(listed, data)
    assert response.status == 400
    assert error(response) == "Bad Request: malformed request line"
    assert response.header("access-control-allow-origin") is None
    assert response.header("vary") == "Origin"


async def test_with_a_list_of_origins_a_refused_body_allows_the_listed_origin(
    listed: ServerProcess,
) -> None:
    """A chunked body that is not chunked: the head was parsed, so its Origin (and
    X-Request-Id) is known and, listed, allowed. (Head and bad chunk in one write: h11
    refuses the chunk before the route's own answer, a 411, is sent; that answer is then
    dropped.)"""
    data = request_bytes(
        "POST",
        "/api/signal?room=r",
        headers={"Origin": LISTED, "Transfer-Encoding": "chunked", "X-Request-Id": "lb-7"},
        body=b"not-hex\r\n",
        content_length=False,
    )
    response = await refused(listed, data)
    assert response.status == 400
    assert error(response) == "Bad Request: malformed chunked body"
    assert response.header("access-control-allow-origin") == LISTED
    assert response.header("vary") == "Origin"
    assert response.header("x-request-id") == "lb-7"  # as any answer to a parsed head


async def test_a_refused_head_request_gets_no_body(server: ServerProcess) -> None:
    data = request_bytes(
        "HEAD",
        "/healthz",
        headers={"Transfer-Encoding": "chunked"},
        body=b"not-hex\r\n",
        content_length=False,
    )
    async with await RawConnection.open(server) as conn:
        await conn.send(data)
        response = await conn.response(head=True)
        assert await conn.closed_within(5)
        assert conn.buffer == b""  # no body after the head
    assert response.status == 400
    assert response.header("content-type") == "application/json"
    assert int(response.header("content-length") or 0) > 0  # the GET's would-be length


# --- WebSocket handshakes to the API's routes -------------------------------------------


def handshake(target: str, headers: dict[str, str] | None = None) -> bytes:
    return request_bytes(
        "GET",
        target,
        headers={
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
            **(headers or {}),
        },
    )


async def handshake_answer(server: ServerProcess, data: bytes) -> RawResponse:
    """The answer to the handshake ``data``, after which the connection closes (the
    server does not go back to HTTP after a handshake), as the answer says."""
    async with await RawConnection.open(server) as conn:
        await conn.send(data)
        response = await conn.response()
        assert await conn.closed_within(5)
    assert response.header("connection") == "close"
    assert response.header("content-type") == "application/json"
    assert response.header("access-control-expose-headers") == "Retry-After, X-Request-Id"
    assert response.header("upgrade") is None
    return response


async def test_a_websocket_handshake_to_the_event_stream_is_a_json_400_naming_its_transport(
    listed: ServerProcess,
) -> None:
    data = handshake("/api/connect?room=ws-refused", {"Origin": LISTED, "X-Request-Id": "ws-1"})
    response = await handshake_answer(listed, data)
    assert response.status == 400
    assert error(response) == (
        "Bad Request: /api/connect is an event stream (text/event-stream on a plain GET), "
        "not a WebSocket"
    )
    assert response.header("access-control-allow-origin") == LISTED
    assert response.header("x-request-id") == "ws-1"


async def test_a_websocket_handshake_to_a_post_route_is_the_405_a_get_gets(
    server: ServerProcess,
) -> None:
    for path in ("/api/signal", "/api/leave"):
        response = await handshake_answer(server, handshake(f"{path}?room=ws-refused"))
        assert response.status == 405
        assert response.header("allow") == "OPTIONS, POST"
        assert error(response).startswith("Method Not Allowed")
        assert response.header("access-control-allow-origin") == "*"
        assert response.header("x-request-id")


# --- HTTP/2: refused with frames, no answer --------------------------------------------------

H2_REQUEST = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":authority", b"roomkeeper.test"),
    (b":path", b"/healthz"),
]


async def received(stream: trio.SocketStream) -> bytes:
    try:
        return await stream.receive_some(65536)
    except trio.BrokenResourceError:  # reset by the server
        return b""


async def h2_exchange(
    server: ServerProcess, headers: list[tuple[bytes, bytes]], *, until_closed: bool = True
) -> list[object]:
    """Send one HTTP/2 request (prior knowledge, headers as given, unchecked) on a new
    connection; the events received until the server closes it (or, ``until_closed``
    false, until the answer's headers)."""
    config = h2.config.H2Configuration(
        client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
    )
    conn = h2.connection.H2Connection(config)
    conn.initiate_connection()
    conn.send_headers(1, headers, end_stream=True)
    events: list[object] = []
    async with await trio.open_tcp_stream(server.host, server.port) as stream:
        await stream.send_all(conn.data_to_send())
        with trio.fail_after(5):
            while data := await received(stream):
                events += conn.receive_data(data)
                if not until_closed and any(
                    isinstance(e, h2.events.ResponseReceived) for e in events
                ):
                    break
    return events


def goaway(events: list[object]) -> h2.errors.ErrorCodes | None:
    codes = [e.error_code for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    return codes[0] if codes else None


async def test_http2_works_here(server: ServerProcess) -> None:
    """The server speaks HTTP/2 in cleartext, so what it refuses there matters."""
    events = await h2_exchange(server, H2_REQUEST, until_closed=False)
    answers = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
    assert dict(answers[0].headers)[b":status"] == b"200"


async def test_http2_refuses_a_header_list_over_64_kib_with_goaway(server: ServerProcess) -> None:
    events = await h2_exchange(server, [*H2_REQUEST, (b"x-big", b"a" * 70_000)])
    assert goaway(events) == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert not any(isinstance(e, h2.events.ResponseReceived) for e in events)


async def test_http2_refuses_a_malformed_header_block_with_goaway(server: ServerProcess) -> None:
    events = await h2_exchange(server, [*H2_REQUEST, (b"Upper-Case", b"x")])
    assert goaway(events) == h2.errors.ErrorCodes.PROTOCOL_ERROR


async def test_http2_with_raw_bytes_in_the_path_is_closed_and_the_server_lives_on(
    server: ServerProcess,
) -> None:
    events = await h2_exchange(server, [*H2_REQUEST[:3], (b":path", b"/\xff")])
    assert goaway(events) is None
    assert not any(isinstance(e, h2.events.ResponseReceived) for e in events)
    async with await RawConnection.open(server) as conn:
        await conn.send(request_bytes("GET", "/healthz"))
        assert (await conn.response()).status == 200
