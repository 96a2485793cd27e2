"""The direct ASGI path for the POST routes answers exactly as the Quart routes do.

Both are called as ASGI apps on one live system, with the same requests; statuses, bodies
and headers (but the request id) must be equal. What they do on the wire is tested
against real servers in tests/integration (test_signal, test_http, test_abuse).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from roomkeeper.http.app import AppSettings, create_app
from roomkeeper.http.fastpath import PostFastPath
from roomkeeper.testing import AsyncEmbeddedServer, serve_async

ORIGINS = ("https://app.example",)
SETTINGS = AppSettings(cors_origins=ORIGINS, max_body=2_000)


@pytest.fixture
async def server() -> AsyncIterator[AsyncEmbeddedServer]:
    async with serve_async() as running:
        yield running


async def _asgi(
    app: Any, path: str, query: bytes, headers: list[tuple[bytes, bytes]], body: bytes
) -> tuple[int, dict[str, str], bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8787),
        "extensions": {},
        "state": {},
    }
    pending = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop()
        await trio.sleep_forever()  # the client stays: Quart ends a disconnected request
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    assert sent, "no answer"
    start = next(m for m in sent if m["type"] == "http.response.start")
    answer = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    answer.pop("x-request-id")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], answer, payload


async def _session(client: httpx.AsyncClient, url: str, room: str) -> tuple[str, str]:
    async with client.stream("GET", f"{url}/api/connect", params={"room": room}) as stream:
        async for line in stream.aiter_lines():
            if line.startswith("data:"):
                data = json.loads(line[5:])
                return data["session_id"], data["token"]
    raise AssertionError("no session event")


def _requests(
    sid: str, token: str, other: str
) -> list[tuple[bytes, list[tuple[bytes, bytes]], bytes]]:
    def signal(**fields: Any) -> bytes:
        return json.dumps(
            {"sender": sid, "token": token, "to": other, "signal": {}, **fields}
        ).encode()

    def sized(body: bytes, *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
        return [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *extra,
        ]

    origin = (b"origin", b"https://app.example")
    stranger = (b"origin", b"https://evil.example")
    q = b"room=parity"
    out = [
        (q, sized(signal()), signal()),  # 200 (the peer has left: queued for it)
        (q, sized(signal(), origin), signal()),
        (q, sized(signal(), stranger), signal()),
        (q, [(b"content-type", b"application/json")], b""),  # 411
        (q, [(b"content-length", b"999999")], b""),  # 413
        (q, [(b"content-length", b"-1")], b""),  # 400
        (q, sized(b"{}", (b"transfer-encoding", b"chunked")), b"{}"),  # 400
        (q, sized(b"{"), b"{"),
        (q, sized(b"[]"), b"[]"),
        (q, sized(b"\xff\xfe"), b"\xff\xfe"),
        (b"", sized(signal()), signal()),  # no room
        (b"room=%FF", sized(signal()), signal()),
        (q, sized(signal(sender="nope")), signal(sender="nope")),
        (q, sized(signal(), (b"x-token", other.encode())), signal()),  # tokens differ: 403
        (q, sized(signal(token=other)), signal(token=other)),  # wrong token
        (b"room=elsewhere", sized(signal()), signal()),  # not a session of that room
        (q, sized(signal(signal=[])), signal(signal=[])),
        (q, sized(signal(id="x" * 65)), signal(id="x" * 65)),
    ]
    return out


@pytest.mark.parametrize("path", ["/api/signal", "/api/leave"])
async def test_the_fast_path_answers_as_the_quart_route(
    server: AsyncEmbeddedServer, path: str
) -> None:
    app = create_app(server.system, SETTINGS)
    fast = PostFastPath.wrap(app)
    async with httpx.AsyncClient(timeout=10) as client:
        sid, token = await _session(client, server.url, "parity")
        other, _ = await _session(client, server.url, "parity")
    statuses = []
    if path == "/api/leave":  # a leave that succeeds changes the answer to the next one
        sid, token = await _leaving(server.url, app, fast)  # so: one that has left
    requests = _requests(sid, token, other)
    async with app.test_app():  # Quart's start-up, as under Hypercorn
        for query, headers, body in requests:
            by_quart = await _asgi(app, path, query, headers, body)
            by_fast_path = await _asgi(fast, path, query, headers, body)
            assert by_fast_path == by_quart, (query, headers, body)
            statuses.append(by_quart[0])
    assert {400, 403, 411, 413} <= set(statuses)
    assert path == "/api/leave" or 200 in statuses


async def _leaving(url: str, app: Any, fast: Any) -> tuple[str, str]:
    """Two sessions leave, one through each path: both answers are the same 200."""
    async with httpx.AsyncClient(timeout=10) as client:
        sessions = [await _session(client, url, "parity") for _ in range(2)]
    answers = []
    async with app.test_app():
        for via, (sid, token) in zip((app, fast), sessions, strict=True):
            body = json.dumps({"sender": sid, "token": token}).encode()
            headers = [(b"content-length", str(len(body)).encode())]
            answers.append(await _asgi(via, "/api/leave", b"room=parity", headers, body))
    assert answers[0] == answers[1] and answers[0][0] == 200, answers
    return sessions[0]
