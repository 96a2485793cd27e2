"""POST /api/signal: every status in the protocol's order (411, 413, 400, 403, 429, 404,
503 is in test_presence, 200), where the token may come from, idempotent ids, and
payloads delivered unchanged."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from functools import partial
from typing import Any

import httpx
import pytest
import trio

from .conftest import (
    Peer,
    RawConnection,
    ServerProcess,
    assert_error,
    join,
    new_room,
    post,
    raw_request,
    request_bytes,
    send,
    send_ok,
    start_shared,
    sync,
)

FRONT_DOOR = pytest.mark.single_process(
    "HTTP framing and connection handling are nginx's in front of a cluster (docs/scaling.md)"
)

MAX_BODY = 102_400


def body_of(frm: Peer, to: Peer | str, signal: Any = None, **extra: Any) -> dict[str, Any]:
    to_id = to if isinstance(to, str) else to.session_id
    body = {"sender": frm.session_id, "to": to_id, "token": frm.token, "signal": signal or {}}
    return {**body, **extra}


async def received(client: httpx.AsyncClient, peer: Peer) -> list[Any]:
    """The signals ``peer`` got (as ``(from, signal)``) before a marker; fails on anything
    else (roster, bye)."""
    events = await sync(client, peer)
    assert all(e.event == "signal" for e in events), events
    return [(e.data["from"], e.data["signal"]) for e in events]


# --- 411 and 413: decided before the body is read -------------------------------------------


@FRONT_DOOR
@pytest.mark.parametrize("path", ["signal", "leave"])
async def test_chunked_body_is_411(shared_server: ServerProcess, path: str) -> None:
    body = b'{"sender": "x"}'
    chunked = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
    response = await raw_request(
        shared_server,
        request_bytes(
            "POST",
            f"/api/{path}?room=r",
            headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
            body=chunked,
            content_length=False,
        ),
    )
    assert response.status == 411
    assert response.header("content-type") == "application/json"
    assert response.header("access-control-allow-origin") == "*"
    assert set(response.json()) == {"error"}


@pytest.mark.parametrize("target", ["/api/signal?room=r", "/api/signal", "/api/leave"])
async def test_no_content_length_is_411_before_anything_else(
    shared_server: ServerProcess, target: str
) -> None:
    """No body and no length; also with no room (411 comes before 400)."""
    response = await raw_request(shared_server, request_bytes("POST", target))
    assert response.status == 411
    assert set(response.json()) == {"error"}


@FRONT_DOOR
@pytest.mark.parametrize("path", ["signal", "leave"])
@pytest.mark.parametrize("length", [MAX_BODY + 1, 200_000, 2**40])
async def test_oversized_content_length_is_413_without_reading_the_body(
    shared_server: ServerProcess, path: str, length: int
) -> None:
    """The request announces a big body and sends none of it: the answer must come at once,
    and before the room is checked (there is none here)."""
    async with await RawConnection.open(shared_server) as conn:
        await conn.send(
            request_bytes(
                "POST",
                f"/api/{path}",
                headers={"Content-Length": str(length), "Content-Type": "application/json"},
            )
        )
        response = await conn.response(wait=2)
    assert response.status == 413
    assert response.header("content-type") == "application/json"
    assert response.header("access-control-allow-origin") == "*"
    assert set(response.json()) == {"error"}


async def test_body_of_exactly_the_limit_is_accepted(
    client: httpx.AsyncClient, base: str, room: str
) -> None:
    async with join(client, base, room) as a, join(client, base, room) as b:
        body = body_of(a, b, {"pad": ""})
        size = len(json.dumps(body).encode())
        body["signal"]["pad"] = "x" * (MAX_BODY - size)
        content = json.dumps(body).encode()
        assert len(content) == MAX_BODY
        response = await client.post(f"{base}/api/signal", params={"room": room}, content=content)
        assert response.status_code == 200, response.text
        assert (await received(client, b))[0][1]["pad"] == body["signal"]["pad"]
        content = content[:-1] + b" }"
        assert len(content) == MAX_BODY + 1
        response = await client.post(f"{base}/api/signal", params={"room": room}, content=content)
        assert_error(response, 413)
        assert await received(client, b) == []


async def test_content_length_that_is_not_a_number_is_400(shared_server: ServerProcess) -> None:
    response = await raw_request(
        shared_server,
        request_bytes("POST", "/api/signal?room=r", headers={"Content-Length": "ten"}),
    )
    assert response.status == 400


# --- 400: the room and the body ---------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [{}, {"room": ""}, {"room": "a" * 257}, {"room": "€" * 86}],
    ids=["missing", "empty", "257", "258-bytes"],
)
async def test_bad_room_is_400(
    client: httpx.AsyncClient, base: str, room: str, params: dict[str, str]
) -> None:
    async with join(client, base, room) as a:
        response = await client.post(
            f"{base}/api/signal", params=params, json=body_of(a, a, {"x": 1})
        )
        assert_error(response, 400)
        assert await received(client, a) == []


@pytest.mark.parametrize("path", ["signal", "leave"])
async def test_room_invalid_utf8_is_400(shared_server: ServerProcess, path: str) -> None:
    response = await raw_request(
        shared_server, request_bytes("POST", f"/api/{path}?room=%C3%28", body=b"{}")
    )
    assert response.status == 400
    assert set(response.json()) == {"error"}


NOT_OBJECTS = [
    b"",
    b"{",
    b"nul",
    b"{'sender': 1}",
    b'{"a": NaN}',
    b'{"a": 1} {"b": 2}',
    b"\xff\xfe{}",
    b'{"a": "\xff"}',
    b"[]",
    b'"text"',
    b"42",
    b"null",
    b"true",
]


@pytest.mark.parametrize(
    "content", NOT_OBJECTS, ids=[repr(c)[2:-1] or "empty" for c in NOT_OBJECTS]
)
async def test_body_not_a_json_object_is_400(
    client: httpx.AsyncClient, base: str, content: bytes
) -> None:
    response = await client.post(
        f"{base}/api/signal",
        params={"room": "r"},
        content=content,
        headers={"Content-Type": "application/json"},
    )
    assert_error(response, 400)


BAD_FIELDS: list[tuple[str, dict[str, Any]]] = [
    ("sender-missing", {"sender": None}),
    ("sender-number", {"sender": 123}),
    ("sender-word", {"sender": "me"}),
    ("sender-braces", {"sender": f"{{{uuid.uuid4()}}}"}),
    ("sender-no-dashes", {"sender": uuid.uuid4().hex}),
    ("to-missing", {"to": None}),
    ("to-word", {"to": "you"}),
    ("to-list", {"to": [str(uuid.uuid4())]}),
    ("token-missing", {"token": None}),
    ("token-word", {"token": "secret"}),
    ("token-number", {"token": 7}),
    ("signal-missing", {"signal": None}),
    ("signal-explicit-null", {"signal": "NULL"}),
    ("signal-list", {"signal": [1, 2]}),
    ("signal-string", {"signal": "offer"}),
    ("signal-number", {"signal": 1}),
    ("signal-bool", {"signal": True}),
    ("id-empty", {"id": ""}),
    ("id-65", {"id": "x" * 65}),
    ("id-number", {"id": 5}),
    ("id-list", {"id": ["a"]}),
    ("id-object", {"id": {}}),
    ("id-bool", {"id": True}),
]


@pytest.mark.parametrize("change", [c for _, c in BAD_FIELDS], ids=[n for n, _ in BAD_FIELDS])
async def test_bad_fields_are_400(
    client: httpx.AsyncClient, base: str, room: str, change: dict[str, Any]
) -> None:
    async with join(client, base, room) as a, join(client, base, room) as b:
        body = body_of(a, b, {"x": 1})
        for key, value in change.items():
            if value is None:
                del body[key]
            else:
                body[key] = None if value == "NULL" else value
        assert_error(await post(client, base, "signal", room, body), 400)
        assert await received(client, b) == []


async def test_400_comes_before_403(client: httpx.AsyncClient, base: str, room: str) -> None:
    """A bad body is refused as such even when the sender or token is wrong as well."""
    async with join(client, base, room) as a:
        body = body_of(a, a)
        body["token"] = str(uuid.uuid4())
        del body["signal"]
        assert_error(await post(client, base, "signal", room, body), 400)
        body = {"sender": str(uuid.uuid4()), "token": str(uuid.uuid4()), "to": "x", "signal": {}}
        assert_error(await post(client, base, "signal", room, body), 400)


@pytest.mark.parametrize("request_id", [None, "a", "x" * 64, "é" * 64, str(uuid.uuid4())], ids=repr)
async def test_accepted_ids(
    client: httpx.AsyncClient, base: str, room: str, request_id: str | None
) -> None:
    async with join(client, base, room) as a, join(client, base, room) as b:
        await send_ok(client, base, a, b, {"x": 1}, id=request_id)
        assert await received(client, b) == [(a.session_id, {"x": 1})]


# --- where the token comes from -----------------------------------------------------------------

TOKEN_PLACES: list[tuple[str, bool, str | None, str | None, int]] = [
    # name, token in body, X-Token, Authorization, expected status
    ("body", True, None, None, 200),
    ("x-token", False, "T", None, 200),
    ("bearer", False, None, "Bearer T", 200),
    ("bearer-lowercase-scheme", False, None, "bearer T", 200),
    ("body+x-token", True, "T", None, 200),
    ("body+bearer", True, None, "Bearer T", 200),
    ("all-three", True, "T", "Bearer T", 200),
    ("body+basic-auth-ignored", True, None, "Basic dXNlcjpwYXNz", 200),
    ("body-vs-x-token", True, "OTHER", None, 403),
    ("body-vs-bearer", True, None, "Bearer OTHER", 403),
    ("x-token-vs-bearer", False, "T", "Bearer OTHER", 403),
    ("all-three-one-differs", True, "T", "Bearer OTHER", 403),
    ("x-token-wrong", False, "OTHER", None, 403),
    ("bearer-wrong", False, None, "Bearer OTHER", 403),
    ("x-token-not-uuid", False, "secret", None, 400),
    ("bearer-not-uuid", False, None, "Bearer secret", 400),
]


@pytest.mark.parametrize(
    ("in_body", "x_token", "authorization", "status"),
    [p[1:] for p in TOKEN_PLACES],
    ids=[p[0] for p in TOKEN_PLACES],
)
async def test_token_places(
    client: httpx.AsyncClient,
    base: str,
    room: str,
    in_body: bool,
    x_token: str | None,
    authorization: str | None,
    status: int,
) -> None:
    async with join(client, base, room) as a, join(client, base, room) as b:
        other = str(uuid.uuid4())
        body = body_of(a, b, {"x": 1})
        if not in_body:
            del body["token"]
        headers = {}
        if x_token is not None:
            headers["X-Token"] = x_token.replace("OTHER", other).replace("T", a.token)
        if authorization is not None:
            value = authorization.replace("OTHER", other)
            headers["Authorization"] = value.replace(" T", " " + a.token)
        response = await post(client, base, "signal", room, body, headers=headers)
        if status == 200:
            assert response.status_code == 200, response.text
            assert await received(client, b) == [(a.session_id, {"x": 1})]
        else:
            error = assert_error(response, status)
            assert a.token not in error["error"]
            assert await received(client, b) == []


async def test_uuids_in_any_case(client: httpx.AsyncClient, base: str, room: str) -> None:
    async with join(client, base, room) as a, join(client, base, room) as b:
        body = {
            "sender": a.session_id.upper(),
            "to": b.session_id.upper(),
            "token": a.token.upper(),
            "signal": {"x": 1},
        }
        response = await post(client, base, "signal", room, body)
        assert response.status_code == 200, response.text
        assert await received(client, b) == [(a.session_id, {"x": 1})]


# --- 403 -----------------------------------------------------------------------------------------


async def test_unknown_sender_or_wrong_token_is_403(
    client: httpx.AsyncClient, base: str, room: str
) -> None:
    async with join(client, base, room) as a, join(client, base, room) as b:
        for body in (
            body_of(a, b, token=str(uuid.uuid4())),
            body_of(a, b, token=b.token),  # a peer's token is not yours
            body_of(a, b, sender=str(uuid.uuid4())),
            body_of(a, b, sender=str(uuid.uuid1())),  # any version is a UUID (not a 400)
            body_of(a, str(uuid.uuid4()), token=str(uuid.uuid4())),  # 403 before 404
        ):
            error = assert_error(await post(client, base, "signal", room, body), 403)
            assert a.token not in error["error"] and b.token not in error["error"]
        assert await received(client, b) == []


async def test_session_of_another_room_cannot_signal_here(
    client: httpx.AsyncClient, base: str
) -> None:
    room_a, room_b = new_room("a"), new_room("b")
    async with join(client, base, room_a) as a, join(client, base, room_b) as b:
        # a's credentials, posted to room B, towards b: a is not a session of room B.
        assert_error(await post(client, base, "signal", room_b, body_of(a, b)), 403)
        # Posted to room A, towards b: b is not a session of room A.
        assert_error(await post(client, base, "signal", room_a, body_of(a, b)), 404)
        assert await received(client, b) == []


# --- 404 -----------------------------------------------------------------------------------------


async def test_unknown_recipient_is_404(client: httpx.AsyncClient, base: str, room: str) -> None:
    async with join(client, base, room) as a:
        for to in (str(uuid.uuid4()), str(uuid.uuid1()), "00000000-0000-0000-0000-000000000000"):
            assert_error(await send(client, base, a, to, {"x": 1}), 404)
        async with join(client, base, room) as gone:
            pass
        await a.stream.next()
        assert (await post(client, base, "leave", room, body_of(gone, a))).status_code == 200
        assert_error(await send(client, base, a, gone, {"x": 1}), 404)


# --- 200 -----------------------------------------------------------------------------------------


async def test_success_answer(client: httpx.AsyncClient, base: str, room: str) -> None:
    async with join(client, base, room) as a, join(client, base, room) as b:
        await a.stream.next()  # roster with b
        response = await send(client, base, a, b, {"type": "offer", "sdp": "v=0"})
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.headers["access-control-allow-origin"] == "*"
        assert response.json() == {"success": True}
        event = await b.stream.next()
        assert event.event == "signal"
        assert event.data == {"from": a.session_id, "signal": {"type": "offer", "sdp": "v=0"}}
        assert await received(client, a) == []  # only the recipient gets it


async def test_sending_to_yourself(client: httpx.AsyncClient, base: str, room: str) -> None:
    async with join(client, base, room) as a:
        await send_ok(client, base, a, a, {"note": "to self"})
        event = await a.stream.next()
        assert event.data == {"from": a.session_id, "signal": {"note": "to self"}}


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": [1, "two", None]}
    for n in range(depth):
        value = {f"level{n}": [value]} if n % 2 else {f"level{n}": value}
    return value


PAYLOAD_TEXT = (
    b'{"type": "offer", "big": 123456789012345678901234567890, '
    b'"negbig": -98765432109876543210987, "u64": 18446744073709551615, '
    b'"i64min": -9223372036854775808, "float": 0.1, "exp": 1.5e300, "tiny": 5e-324, '
    b'"third": 0.3333333333333333, "int_as_float": 2.0, "zero": 0, '
    b'"list": [1, [2, [3, {"x": []}]], {}], "t": true, "f": false, "n": null, '
    b'"unicode": "h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80 \xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d", '
    b'"escapes": "line\\nbreak\\r\\n\\u2028\\u2029\\t\\"q\\" \\\\ \\u0000", '
    b'"injection": "\\n\\nevent: bye\\ndata: {\\"reason\\":\\"left\\"}\\n\\nid: 1\\n", '
    b'"\xf0\x9f\x94\x91key": "v", "": "empty key"}'
)


async def test_payloads_arrive_unchanged(client: httpx.AsyncClient, base: str, room: str) -> None:
    payloads: list[bytes] = [
        PAYLOAD_TEXT,
        json.dumps(_nested(40)).encode(),
        b"{}",
        json.dumps({"candidate": "candidate:1 1 udp 2122260223 10.0.0.1 54321 typ host"}).encode(),
    ]
    async with join(client, base, room) as a, join(client, base, room) as b:
        for text in payloads:
            content = b'{"sender": "%b", "to": "%b", "token": "%b", "signal": %b}' % (
                a.session_id.encode(),
                b.session_id.encode(),
                a.token.encode(),
                text,
            )
            response = await client.post(
                f"{base}/api/signal", params={"room": room}, content=content
            )
            assert response.status_code == 200, response.text
            event = await b.stream.next()
            assert event.event == "signal"
            sent = json.loads(text)
            got = event.data["signal"]
            assert got == sent
            assert list(got) == list(sent)  # key order too
            assert event.data["from"] == a.session_id
        # Big integers keep every digit on the wire, not just after parsing.
        first = b.stream.events[-len(payloads)]
        for digits in (
            "123456789012345678901234567890",
            "-98765432109876543210987",
            "18446744073709551615",
            "-9223372036854775808",
        ):
            assert digits in first.raw_data
        assert isinstance(first.data["signal"]["big"], int)
        assert await received(client, b) == []  # the injection made no events


# --- idempotent ids ------------------------------------------------------------------------------


async def test_retry_with_the_same_id_delivers_once(
    client: httpx.AsyncClient, base: str, room: str
) -> None:
    async with join(client, base, room) as a, join(client, base, room) as b:
        request_id = str(uuid.uuid4())
        for _ in range(3):
            await send_ok(client, base, a, b, {"n": 1}, id=request_id)
        # Concurrent retries too.
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                retry = partial(send_ok, client, base, a, b, {"n": 2}, id="concurrent")
                nursery.start_soon(retry)
        assert await received(client, b) == [(a.session_id, {"n": 1}), (a.session_id, {"n": 2})]


async def test_what_counts_as_a_repeat(client: httpx.AsyncClient, base: str, room: str) -> None:
    async with (
        join(client, base, room) as a,
        join(client, base, room) as b,
        join(client, base, room) as c,
    ):
        await a.stream.next()
        await a.stream.next()
        await b.stream.next()
        # Without an id (or with id null) every POST is a new signal.
        await send_ok(client, base, a, c, {"n": "no id"})
        await send_ok(client, base, a, c, {"n": "no id"})
        await send_ok(client, base, a, c, {"n": "null id"}, id=None)
        await send_ok(client, base, a, c, {"n": "null id"}, id=None)
        # Ids are per sender: b may use the id a used.
        await send_ok(client, base, a, c, {"n": "a's x"}, id="x")
        await send_ok(client, base, b, c, {"n": "b's x"}, id="x")
        # A repeat is the same id from the same session, whatever else it carries.
        await send_ok(client, base, a, c, {"n": "changed"}, id="x")
        await send_ok(client, base, a, b, {"n": "other recipient"}, id="x")
        # Ids are case-sensitive strings.
        await send_ok(client, base, a, c, {"n": "X"}, id="X")
        assert await received(client, c) == [
            (a.session_id, {"n": "no id"}),
            (a.session_id, {"n": "no id"}),
            (a.session_id, {"n": "null id"}),
            (a.session_id, {"n": "null id"}),
            (a.session_id, {"n": "a's x"}),
            (b.session_id, {"n": "b's x"}),
            (a.session_id, {"n": "X"}),
        ]
        assert await received(client, b) == []


# --- 429: a server with a small rate limit -------------------------------------------------------

BURST = 5


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_shared(
        tmp_path_factory.mktemp("limited"), rate_burst=str(BURST), rate_refill="1"
    )
    yield server
    server.kill()


async def test_rate_limit_is_429_with_retry_after(
    client: httpx.AsyncClient, limited_server: ServerProcess, room: str
) -> None:
    base = limited_server.url
    async with join(client, base, room) as a, join(client, base, room) as b:
        await a.stream.next()
        # Refused before authentication: spends nothing.
        for _ in range(BURST + 2):
            assert_error(await send(client, base, a, b, "not an object"), 400)
            bad = await post(client, base, "signal", room, body_of(a, b, token=str(uuid.uuid4())))
            assert_error(bad, 403)
        # Every authenticated attempt spends one: deliveries, a 404 and a repeated id.
        await send_ok(client, base, a, b, {"n": 0}, id="once")
        await send_ok(client, base, a, b, {"n": 0}, id="once")
        assert_error(await send(client, base, a, str(uuid.uuid4()), {"n": "x"}), 404)
        await send_ok(client, base, a, b, {"n": 1})
        await send_ok(client, base, a, b, {"n": 2})
        limited = await send(client, base, a, b, {"n": 3})
        assert_error(limited, 429)
        retry_after = limited.headers["retry-after"]
        assert retry_after.isdigit() and int(retry_after) >= 1
        # Order of checks: 403 before 429, 429 before 404.
        bad = await post(client, base, "signal", room, body_of(a, b, token=str(uuid.uuid4())))
        assert_error(bad, 403)
        assert_error(await send(client, base, a, str(uuid.uuid4()), {"n": "x"}), 429)
        # Per session: b's budget is its own.
        await send_ok(client, base, b, a, {"from": "b"})
        assert [e.data["signal"] for e in [await b.stream.next() for _ in range(3)]] == [
            {"n": 0},
            {"n": 1},
            {"n": 2},
        ]
        # After the time it was told to wait, the sender may send again.
        await trio.sleep(int(retry_after) + 0.1)
        await send_ok(client, base, a, b, {"n": 4})
        assert (await b.stream.next()).data["signal"] == {"n": 4}
        assert (await a.stream.next()).data["signal"] == {"from": "b"}


async def test_leave_is_not_rate_limited(
    client: httpx.AsyncClient, limited_server: ServerProcess, room: str
) -> None:
    base = limited_server.url
    async with join(client, base, room) as a, join(client, base, room) as b:
        await a.stream.next()
        for n in range(BURST):
            await send_ok(client, base, b, a, {"n": n})
        assert_error(await send(client, base, b, a, {"n": "over"}), 429)
        response = await post(client, base, "leave", room, body_of(b, b))
        assert response.status_code == 200
        assert (await b.stream.next()).data == {"reason": "left"}
