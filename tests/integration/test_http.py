"""HTTP around the API: CORS on every answer and preflights, configured origins, unknown
paths and methods, /healthz and /openapi.json, and raw HTTP/1.1 edge cases (pipelining,
lying or missing Content-Length, bodies refused before they are read, HTTP/1.0)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from functools import partial
from typing import Any

import h2.config
import h2.connection
import h2.events
import httpx
import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from roomkeeper.testing import serve_async

from .conftest import (
    STREAM_TIMEOUT,
    RawConnection,
    ServerFactory,
    ServerProcess,
    assert_error,
    join,
    new_room,
    request_bytes,
    send_ok,
    start_shared,
    sync,
)

FRONT_DOOR = pytest.mark.single_process(
    "HTTP framing and connection handling are nginx's in front of a cluster (docs/scaling.md)"
)

ORIGIN = "https://page.example"

# --- CORS with the default "*" ----------------------------------------------------------------

REQUESTS: list[tuple[str, str, str, dict[str, Any], Any, int]] = [
    # id, method, path, params, json body (None: no body), status
    ("healthz", "GET", "/healthz", {}, None, 200),
    ("openapi", "GET", "/openapi.json", {}, None, 200),
    ("connect-400", "GET", "/api/connect", {}, None, 400),
    ("connect-403", "GET", "/api/connect", {"session_id": "SID", "token": "x"}, None, 403),
    ("signal-400", "POST", "/api/signal", {"room": "r"}, [], 400),
    ("signal-403", "POST", "/api/signal", {"room": "r"}, "FORGED", 403),
    ("leave-403", "POST", "/api/leave", {"room": "r"}, "FORGED", 403),
    ("leave-413", "POST", "/api/leave", {"room": "r"}, "BIG", 413),
    ("unknown-path-404", "GET", "/nope", {}, None, 404),
    ("wrong-method-405", "PUT", "/api/signal", {}, None, 405),
]


@pytest.mark.parametrize("origin", [None, ORIGIN], ids=["no-origin", "origin"])
@pytest.mark.parametrize(
    ("method", "path", "params", "body", "status"),
    [r[1:] for r in REQUESTS],
    ids=[r[0] for r in REQUESTS],
)
async def test_every_answer_allows_any_origin(
    client: httpx.AsyncClient,
    base: str,
    room: str,
    origin: str | None,
    method: str,
    path: str,
    params: dict[str, Any],
    body: Any,
    status: int,
) -> None:
    headers = {"Origin": origin} if origin else {}
    kw: dict[str, Any] = {}
    if body == "FORGED":
        body = {"sender": str(uuid.uuid4()), "to": str(uuid.uuid4()), "token": str(uuid.uuid4())}
        body["signal"] = {}
    if body == "BIG":
        kw["content"] = b" " * 102_401
    elif body is not None:
        kw["json"] = body
    if "session_id" in params:
        async with join(client, base, room) as peer:
            params = {"room": room, "session_id": peer.session_id, "token": str(uuid.uuid4())}
            response = await client.request(
                method, base + path, params=params, headers=headers, **kw
            )
    else:
        response = await client.request(method, base + path, params=params, headers=headers, **kw)
    assert response.status_code == status, response.text
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["content-type"].split(";")[0] == "application/json"
    if status >= 400:
        assert_error(response, status)


@pytest.mark.parametrize("origin", [None, ORIGIN], ids=["no-origin", "origin"])
async def test_event_stream_allows_any_origin(
    client: httpx.AsyncClient, base: str, room: str, origin: str | None
) -> None:
    headers = {"Origin": origin} if origin else None
    async with join(client, base, room, headers=headers) as peer:
        assert peer.stream.headers["access-control-allow-origin"] == "*"


async def test_411_allows_any_origin(shared_server: ServerProcess) -> None:
    response = await _raw(
        shared_server,
        request_bytes("POST", "/api/signal?room=r", headers={"Origin": ORIGIN}),
    )
    assert response.status == 411
    assert response.header("access-control-allow-origin") == "*"


NAMED_HEADERS = ["content-type", "authorization", "x-token", "x-session-id", "last-event-id"]


@pytest.mark.parametrize(
    ("path", "method"),
    [("/api/connect", "GET"), ("/api/signal", "POST"), ("/api/leave", "POST")],
)
@pytest.mark.parametrize("origin", [None, ORIGIN], ids=["no-origin", "origin"])
@pytest.mark.parametrize(
    "requested", [None, "content-type", "authorization, x-token, x-custom"], ids=repr
)
async def test_preflight(
    client: httpx.AsyncClient,
    base: str,
    path: str,
    method: str,
    origin: str | None,
    requested: str | None,
) -> None:
    headers = {"Access-Control-Request-Method": method}
    if origin:
        headers["Origin"] = origin
    if requested:
        headers["Access-Control-Request-Headers"] = requested
    response = await client.options(base + path, params={"room": "r"}, headers=headers)
    assert response.status_code in (200, 204)
    assert response.headers["access-control-allow-origin"] == "*"
    allowed = [
        h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")
    ]
    for name in NAMED_HEADERS:
        assert name in allowed  # by name: "*" would not cover Authorization
    methods = [m.strip() for m in response.headers["access-control-allow-methods"].split(",")]
    assert method in methods
    for name in (requested or "").split(","):
        if name.strip():
            assert name.strip().lower() in allowed


# --- a configured list of origins ---------------------------------------------------------------

LISTED = "https://a.example"
ALSO_LISTED = "https://b.example:8443"


@pytest.fixture(scope="module")
def cors_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_shared(tmp_path_factory.mktemp("cors"), cors_origins=f"{LISTED},{ALSO_LISTED}")
    yield server
    server.kill()


def _vary(response: httpx.Response) -> list[str]:
    return [v.strip().lower() for v in response.headers.get("vary", "").split(",")]


@pytest.mark.parametrize("origin", [LISTED, ALSO_LISTED])
async def test_listed_origin_is_echoed_with_vary(
    client: httpx.AsyncClient, cors_server: ServerProcess, origin: str
) -> None:
    base = cors_server.url
    headers = {"Origin": origin}
    for response in (
        await client.get(f"{base}/healthz", headers=headers),
        await client.get(f"{base}/api/connect", headers=headers),  # 400
        await client.post(f"{base}/api/signal", params={"room": "r"}, json=[], headers=headers),
        await client.get(f"{base}/nope", headers=headers),
    ):
        assert response.headers["access-control-allow-origin"] == origin
        assert "origin" in _vary(response)
    async with join(client, base, new_room(), headers=headers) as peer:
        assert peer.stream.headers["access-control-allow-origin"] == origin
        assert "origin" in [v.strip().lower() for v in peer.stream.headers["vary"].split(",")]
    preflight = await client.options(
        f"{base}/api/signal",
        headers={**headers, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code in (200, 204)
    assert preflight.headers["access-control-allow-origin"] == origin
    assert "origin" in _vary(preflight)
    allowed = preflight.headers["access-control-allow-headers"].lower()
    for name in NAMED_HEADERS:
        assert name in [h.strip() for h in allowed.split(",")]


@pytest.mark.parametrize("mode", ["listed", "any"])
@pytest.mark.parametrize("origin", [LISTED, "https://evil.example", None], ids=repr)
@pytest.mark.parametrize("path", ["/api/connect", "/api/signal", "/api/leave"])
async def test_a_preflight_varies_by_origin_and_requested_headers(
    client: httpx.AsyncClient,
    cors_server: ServerProcess,
    base: str,
    mode: str,
    origin: str | None,
    path: str,
) -> None:
    """A preflight's answer depends on the headers it asks for (and, with a list of
    origins, on its origin): its Vary names both, whatever CORS adds to every answer, so a
    cache never serves one preflight's answer to another."""
    url = cors_server.url if mode == "listed" else base
    headers = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-a"}
    if origin:
        headers["Origin"] = origin
    response = await client.options(url + path, params={"room": "r"}, headers=headers)
    assert response.status_code == 204
    vary = _vary(response)
    assert "access-control-request-headers" in vary
    assert len(vary) == len(set(vary)), vary  # each name once
    if mode == "listed":
        assert "origin" in vary
    assert len(response.headers.get_list("vary")) == 1


@pytest.mark.parametrize(
    "origin",
    [None, "https://evil.example", "https://a.example.evil.example", "http://a.example", "null"],
    ids=repr,
)
async def test_unlisted_origin_is_not_allowed(
    client: httpx.AsyncClient, cors_server: ServerProcess, origin: str | None
) -> None:
    base = cors_server.url
    headers = {"Origin": origin} if origin else {}
    for response in (
        await client.get(f"{base}/healthz", headers=headers),
        await client.get(f"{base}/api/connect", headers=headers),
        await client.options(
            f"{base}/api/signal", headers={**headers, "Access-Control-Request-Method": "POST"}
        ),
    ):
        assert "access-control-allow-origin" not in response.headers
        assert "origin" in _vary(response)
    async with join(client, base, new_room(), headers=headers) as peer:
        assert "access-control-allow-origin" not in peer.stream.headers


# --- paths and methods --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("POST", "/api/nope"),
        ("GET", "/api/connect/extra"),
        ("GET", "/api"),
        ("OPTIONS", "/api/nope"),
        ("GET", "/API/CONNECT"),
    ],
)
async def test_unknown_path_is_404(
    client: httpx.AsyncClient, base: str, method: str, path: str
) -> None:
    assert_error(await client.request(method, base + path, params={"room": "r"}), 404)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/api/signal", "POST"),
        ("PUT", "/api/signal", "POST"),
        ("DELETE", "/api/leave", "POST"),
        ("GET", "/api/leave", "POST"),
        ("POST", "/api/connect", "GET"),
        ("PATCH", "/api/connect", "GET"),
        ("POST", "/healthz", "GET"),
        ("DELETE", "/openapi.json", "GET"),
    ],
)
async def test_wrong_method_is_405_with_allow(
    client: httpx.AsyncClient, base: str, method: str, path: str, allowed: str
) -> None:
    response = await client.request(method, base + path, params={"room": "r"})
    assert_error(response, 405)
    allow = [m.strip() for m in response.headers["allow"].split(",")]
    assert allowed in allow
    assert method not in allow


async def test_healthz(client: httpx.AsyncClient, base: str) -> None:
    response = await client.get(f"{base}/healthz")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "ok"}


async def test_openapi_document(client: httpx.AsyncClient, base: str) -> None:
    response = await client.get(f"{base}/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document = json.loads(response.content)
    assert str(document["openapi"]).startswith("3.")
    paths = document["paths"]
    assert "get" in paths["/api/connect"]
    assert "post" in paths["/api/signal"]
    assert "post" in paths["/api/leave"]
    signal_body = paths["/api/signal"]["post"]["requestBody"]["content"]["application/json"]
    assert {"sender", "to", "token", "signal"} <= set(signal_body["schema"]["required"])
    for status in ("200", "400", "403", "411", "413", "429"):
        assert status in paths["/api/signal"]["post"]["responses"]


# --- raw HTTP/1.1 -------------------------------------------------------------------------------


async def _raw(server: ServerProcess, data: bytes) -> Any:
    async with await RawConnection.open(server) as conn:
        await conn.send(data)
        return await conn.response()


def _signal_body(frm: Any, to: Any, signal: Any) -> bytes:
    body = {"sender": frm.session_id, "to": to.session_id, "token": frm.token, "signal": signal}
    return json.dumps(body).encode()


async def test_pipelined_requests_are_answered_in_order(
    client: httpx.AsyncClient, shared_server: ServerProcess, room: str
) -> None:
    base = shared_server.url
    async with join(client, base, room) as a, join(client, base, room) as b:
        target = f"/api/signal?room={room}"
        async with await RawConnection.open(shared_server) as conn:
            await conn.send(
                request_bytes("GET", "/healthz")
                + request_bytes("POST", target, body=_signal_body(a, b, {"n": 1}))
                + request_bytes("POST", target, body=b"[]")
                + request_bytes("POST", target, body=_signal_body(a, b, {"n": 2}))
                + request_bytes("GET", "/openapi.json")
            )
            statuses = [(await conn.response()).status for _ in range(5)]
        assert statuses == [200, 200, 400, 200, 200]
        events = await sync(client, b)
        assert [e.data["signal"] for e in events] == [{"n": 1}, {"n": 2}]


async def test_body_longer_than_content_length(
    client: httpx.AsyncClient, shared_server: ServerProcess, room: str
) -> None:
    """Only Content-Length bytes are the body: a cut JSON object is a 400, and the rest is
    not taken for a signal."""
    base = shared_server.url
    async with join(client, base, room) as a, join(client, base, room) as b:
        body = _signal_body(a, b, {"n": 1})
        async with await RawConnection.open(shared_server) as conn:
            await conn.send(
                request_bytes(
                    "POST",
                    f"/api/signal?room={room}",
                    headers={"Content-Length": str(len(body) - 10)},
                    body=body,
                )
            )
            response = await conn.response()
        assert response.status == 400
        assert await sync(client, b) == []


async def test_body_shorter_than_content_length_then_eof(
    client: httpx.AsyncClient, shared_server: ServerProcess, room: str
) -> None:
    """A complete JSON object, but fewer bytes than announced: not a signal."""
    base = shared_server.url
    async with join(client, base, room) as a, join(client, base, room) as b:
        body = _signal_body(a, b, {"n": 1})
        async with await RawConnection.open(shared_server) as conn:
            await conn.send(
                request_bytes(
                    "POST",
                    f"/api/signal?room={room}",
                    headers={"Content-Length": str(len(body) + 10)},
                    body=body,
                )
            )
            await conn.stream.send_eof()
            with trio.move_on_after(3):
                while await conn._fill():
                    pass
        assert b" 200 " not in conn.buffer.split(b"\r\n", 1)[0]
        assert await sync(client, b) == []
        assert (await client.get(f"{base}/healthz")).status_code == 200


async def test_body_arriving_in_pieces_is_waited_for(
    client: httpx.AsyncClient, shared_server: ServerProcess, room: str
) -> None:
    base = shared_server.url
    async with join(client, base, room) as a, join(client, base, room) as b:
        body = _signal_body(a, b, {"n": "slow"})
        async with await RawConnection.open(shared_server) as conn:
            await conn.send(request_bytes("POST", f"/api/signal?room={room}", body=body)[:-20])
            await trio.sleep(0.3)
            assert conn.buffer == b""
            await conn.send(body[-20:])
            response = await conn.response()
        assert response.status == 200
        assert [e.data["signal"] for e in await sync(client, b)] == [{"n": "slow"}]


async def test_body_without_content_length_is_411(
    client: httpx.AsyncClient, shared_server: ServerProcess, room: str
) -> None:
    """Without Content-Length (or chunked) HTTP/1.1 says the request has no body: the bytes
    that follow are not a signal, and the answer is 411."""
    base = shared_server.url
    async with join(client, base, room) as a, join(client, base, room) as b:
        response = await _raw(
            shared_server,
            request_bytes(
                "POST",
                f"/api/signal?room={room}",
                body=_signal_body(a, b, {"n": 1}),
                content_length=False,
            ),
        )
        assert response.status == 411
        assert await sync(client, b) == []


@pytest.mark.parametrize(
    "refused",
    [
        request_bytes("POST", "/api/signal", body=b'{"sender": "x"}'),
        request_bytes("POST", "/api/leave?room=", body=b"{}"),
        request_bytes("POST", "/api/signal?room=%FF", body=b"{}"),
    ],
    ids=["no-room", "empty-room", "bad-utf8-room"],
)
async def test_connection_stays_usable_after_a_refused_post(
    shared_server: ServerProcess, refused: bytes
) -> None:
    """A POST refused for its room still has its body read: the next request on the same
    keep-alive connection is answered (it used to hang now and then)."""
    for _ in range(10):
        async with await RawConnection.open(shared_server) as conn:
            await conn.send(refused + request_bytes("GET", "/healthz"))
            assert (await conn.response(wait=2)).status == 400
            assert (await conn.response(wait=2)).status == 200


@FRONT_DOOR
@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({"Content-Length": "200000"}, b"", 413),
        ({"Transfer-Encoding": "chunked"}, b"2\r\n{}\r\n0\r\n\r\n", 411),
    ],
    ids=["413", "411"],
)
async def test_post_refused_from_its_headers_closes_the_connection(
    shared_server: ServerProcess, headers: dict[str, str], body: bytes, status: int
) -> None:
    """The answer comes at once, from the headers; the body is read and dropped (here it
    never comes, as a client that waits for the answer might do), and the connection
    cannot carry another request."""
    async with await RawConnection.open(shared_server) as conn:
        await conn.send(
            request_bytes(
                "POST", "/api/signal?room=r", headers=headers, body=body, content_length=False
            )
        )
        response = await conn.response(wait=2)
    assert response.status == status
    assert (response.header("connection") or "").lower() == "close"


CHUNKED = {"Transfer-Encoding": "chunked"}


@FRONT_DOOR
@pytest.mark.parametrize("path", ["/api/signal", "/api/leave"])
async def test_a_chunked_post_with_a_request_behind_it_gets_its_whole_answer(
    shared_server: ServerProcess, path: str
) -> None:
    """A chunked POST is refused (411) from its headers; whatever follows it on the
    connection, its whole JSON answer arrives before the connection closes."""
    data = request_bytes(
        "POST",
        f"{path}?room=r",
        headers=CHUNKED,
        body=b"2\r\n{}\r\n0\r\n\r\n",
        content_length=False,
    ) + request_bytes("GET", "/healthz")
    for _ in range(10):
        async with await RawConnection.open(shared_server) as conn:
            await conn.send(data)
            response = await conn.response(wait=5)
            assert response.status == 411
            assert "Content-Length" in response.json()["error"]
            assert (response.header("connection") or "").lower() == "close"
            assert await conn.closed_within(5)


@FRONT_DOOR
@pytest.mark.parametrize("path", ["/api/signal", "/api/leave"])
async def test_an_http10_post_with_a_request_behind_it_gets_json(
    shared_server: ServerProcess, path: str
) -> None:
    """HTTP/1.0 carries one request per connection here (h11 does not keep HTTP/1.0
    connections alive, `Connection: keep-alive` or not): what follows is left unread, the
    POST gets its JSON answer, then the connection closes."""
    post = (
        f"POST {path}?room=r HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n"
        "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    ).encode()
    for _ in range(10):
        async with await RawConnection.open(shared_server) as conn:
            await conn.send(post + b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n")
            response = await conn.response(wait=5)
            assert response.status == 400
            assert response.json() == {"error": "sender missing"}
            assert await conn.closed_within(5)
            assert conn.buffer == b""  # and nothing for the request behind it


async def test_http10_stream_does_not_claim_keep_alive(shared_server: ServerProcess) -> None:
    async with await RawConnection.open(shared_server) as conn:
        await conn.send(f"GET /api/connect?room={new_room()} HTTP/1.0\r\n\r\n".encode())
        with trio.fail_after(5):
            while b"event: roster" not in conn.buffer:
                assert await conn._fill()
    head = conn.buffer.split(b"\r\n\r\n", 1)[0].decode().lower()
    assert head.startswith("http/1.1 200") or head.startswith("http/1.0 200")
    assert "text/event-stream" in head
    assert "keep-alive" not in head


async def test_many_requests_on_one_keep_alive_connection(
    client: httpx.AsyncClient, base: str, room: str
) -> None:
    async with (
        httpx.AsyncClient(limits=httpx.Limits(max_connections=1), timeout=STREAM_TIMEOUT) as one,
        join(client, base, room) as a,
        join(client, base, room) as b,
    ):
        for n in range(30):
            await send_ok(one, base, a, b, {"n": n})
            assert_error(await one.post(f"{base}/api/signal", json={}), 400)
        assert [e.data["signal"]["n"] for e in await sync(client, b)] == list(range(30))


@FRONT_DOOR
async def test_signal_and_leave_over_http2(base: str, room: str) -> None:
    async with (
        httpx.AsyncClient(http1=False, http2=True, timeout=10) as h2,
        join(h2, base, room) as a,
        join(h2, base, room) as b,
    ):
        await a.stream.next()
        response = await h2.post(
            f"{base}/api/signal", params={"room": room}, content=_signal_body(a, b, {"h": 2})
        )
        assert response.http_version == "HTTP/2"
        assert response.status_code == 200 and response.json() == {"success": True}
        assert (await b.stream.next()).data["signal"] == {"h": 2}
        # (A body without a length, answered 411 before it is read, is left out here: see
        # test_data_after_an_early_http2_answer_does_not_kill_the_server.)
        response = await h2.post(
            f"{base}/api/leave",
            params={"room": room},
            json={"sender": b.session_id, "token": b.token},
        )
        assert response.status_code == 200
        assert (await b.stream.next()).data == {"reason": "left"}
        assert (await a.stream.next()).data == {"peers": [a.session_id]}


async def _receive(stream: trio.SocketStream) -> bytes:
    try:
        return await stream.receive_some(65536)
    except trio.BrokenResourceError:
        return b""


async def test_data_after_an_early_http2_answer_does_not_kill_the_server(
    client: httpx.AsyncClient, server_factory: ServerFactory
) -> None:
    """An HTTP/2 POST announcing 200 kB is answered 413 from its headers, as the protocol
    says; the client's body then arrives for a stream the server has closed. (httpx does
    this by itself when it posts a large body over HTTP/2.)"""
    server = server_factory(storage="memory")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    stream = await trio.open_tcp_stream(server.host, server.port)
    async with stream:
        conn.initiate_connection()
        conn.send_headers(
            1,
            [
                (":method", "POST"),
                (":path", "/api/signal?room=r"),
                (":scheme", "http"),
                (":authority", "roomkeeper.test"),
                ("content-length", "200000"),
            ],
        )
        await stream.send_all(conn.data_to_send())
        status = None
        with trio.fail_after(5):
            while True:
                for event in conn.receive_data(await stream.receive_some(65536)):
                    if isinstance(event, h2.events.ResponseReceived):
                        status = dict(event.headers)[b":status"]
                    if isinstance(event, h2.events.StreamEnded):
                        break
                else:
                    await stream.send_all(conn.data_to_send())
                    continue
                break
        assert status == b"413"
        conn.send_data(1, b" " * 1000)
        conn.ping(b"after-da")  # acknowledged once the server has handled the DATA
        await stream.send_all(conn.data_to_send())
        with trio.fail_after(5):
            acked = False
            while not acked and (data := await _receive(stream)):
                acked = any(
                    isinstance(e, h2.events.PingAckReceived) for e in conn.receive_data(data)
                )
    try:
        response = await client.get(f"{server.url}/healthz")
    except httpx.TransportError as exc:
        assert server.proc is not None
        exit_status = await trio.to_thread.run_sync(server.proc.wait, 10)
        pytest.fail(f"the server is gone ({exc!r}), exit status {exit_status}")
    assert response.status_code == 200


async def test_a_plain_hypercorn_server_in_the_same_process_keeps_hypercorns_ways() -> None:
    """roomkeeper's guards on Hypercorn act for its own server only. In one process, with
    an embedded roomkeeper running, a plain Hypercorn server answers an HTTP/1.0 POST with
    a request pipelined behind it as Hypercorn does (its empty 400), while roomkeeper
    answers with its JSON."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": message["type"] + ".complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"plain"})

    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = config.errorlog = None
    post = (
        b"POST /api/leave?room=r HTTP/1.0\r\nConnection: keep-alive\r\n"
        b"Content-Length: 2\r\n\r\n{}GET /healthz HTTP/1.0\r\n\r\n"
    )
    async with serve_async() as roomkeeper, trio.open_nursery() as nursery:
        binds = await nursery.start(partial(hypercorn_serve, app, config, mode="asgi"))
        async with await RawConnection.open(binds[0]) as conn:
            await conn.send(post)
            plain = await conn.response()
        async with await RawConnection.open(roomkeeper.url) as conn:
            await conn.send(post)
            ours = await conn.response()
        nursery.cancel_scope.cancel()
    assert (plain.status, plain.body) == (400, b"")  # Hypercorn's own answer, unchanged
    assert (ours.status, ours.json()) == (400, {"error": "sender missing"})
