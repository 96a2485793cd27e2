"""openapi.json documents every path, method and status the server actually answers
with: each status below is provoked on a real server. (The document's own checks are in
tests/unit/test_openapi.py.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from importlib import resources
from typing import Any

import httpx
import pytest
import trio

from roomkeeper.http.app import create_app
from roomkeeper.http.edge import ROUTES
from roomkeeper.testing import AsyncEmbeddedServer, serve_async

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

# Statuses documented but not provoked here, and why.
NOT_PROVOKED = {
    ("/api/connect", "get"): {"500"},  # a failing handler
    ("/readyz", "get"): {"503"},  # provoked in tests/integration/test_forwarding.py
    ("/api/signal", "post"): {"500"},
    ("/api/leave", "post"): {"500", "503"},
    ("/api/ice-servers", "post"): {"500", "503"},
}
# Provoked in tests/integration/test_limits.py (409, 429 on connect) and test_abuse.py
# (408, a body that does not arrive in time), with settings of their own.
for _op, _statuses in {
    ("/api/connect", "get"): {"409", "429"},
    ("/api/signal", "post"): {"408"},
    ("/api/leave", "post"): {"408"},
    ("/api/ice-servers", "post"): {"408"},
}.items():
    NOT_PROVOKED[_op] |= _statuses
# Routes that are no part of the client API: the operators' (docs/operations.md) and the
# demo page's. Every other route must be documented.
UNDOCUMENTED_ROUTES = {
    "/metrics",
    "/admin/rooms",
    "/admin/rooms/<path:name>",
    "/",
    "/demo.js",
    "/client.js",
}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    text = resources.files("roomkeeper.http").joinpath("openapi.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def _resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    target: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    assert isinstance(target, dict)
    return target


async def test_every_route_of_the_app_is_documented(
    doc: dict[str, Any], server: AsyncEmbeddedServer
) -> None:
    app = create_app(server.system)
    by_quart = {
        (rule.rule, method.lower())
        for rule in app.quart.url_map.iter_rules()
        if rule.rule not in UNDOCUMENTED_ROUTES
        for method in rule.methods or ()
        if method != "HEAD"  # added by the framework to every GET
    }
    by_the_api_layer = {
        (path, method.lower())
        for path, methods in ROUTES.items()
        for method in (*methods, "OPTIONS")
        if method != "HEAD"  # a GET's headers: answered, not documented apart
    }
    assert not {path for path, _ in by_quart} & set(ROUTES)  # each route served once
    served = by_quart | by_the_api_layer
    documented = {(path, method) for path, method, _ in _operations(doc)}
    assert served == documented


# --- every status, provoked on a real server ----------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[AsyncEmbeddedServer]:
    async with serve_async(queue_limit=1, rate_burst=8, rate_refill=0.01) as running:
        yield running


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as c:
        yield c


async def _credentials(lines: AsyncIterator[str]) -> tuple[str, str]:
    """(session_id, token) from the stream's first event. The caller keeps ``lines``:
    httpx closes the connection when the iterator is closed."""
    while not (line := await anext(lines)).startswith("data:"):
        pass
    data = json.loads(line[5:])
    return data["session_id"], data["token"]


async def _chunked() -> AsyncIterator[bytes]:
    """A body of unknown length: httpx sends it chunked, with no Content-Length."""
    yield b"{}"


async def _wait_disconnected(server: AsyncEmbeddedServer, room: str, sid: str) -> None:
    with trio.fail_after(5):
        while True:
            sessions = await server.sessions(room)
            if not any(s.connected for s in sessions if s.session_id == sid):
                return
            await trio.sleep(0.01)


async def test_every_status_the_server_answers_is_documented(
    doc: dict[str, Any], server: AsyncEmbeddedServer, client: httpx.AsyncClient
) -> None:
    url, room = server.url, "docs"
    async with client.stream("GET", f"{url}/api/connect", params={"room": room}) as stream:
        bob, bob_token = await _credentials(stream.aiter_lines())  # then bob's stream drops
    await _wait_disconnected(server, room, bob)
    async with client.stream("GET", f"{url}/api/connect", params={"room": room}) as stream:
        lines = stream.aiter_lines()
        alice, alice_token = await _credentials(lines)  # alice stays connected
        await _statuses(doc, server, client, (alice, alice_token), (bob, bob_token))


async def _statuses(
    doc: dict[str, Any],
    server: AsyncEmbeddedServer,
    client: httpx.AsyncClient,
    alice_credentials: tuple[str, str],
    bob_credentials: tuple[str, str],
) -> None:
    url, room = server.url, "docs"
    (alice, alice_token), (bob, bob_token) = alice_credentials, bob_credentials
    ghost = "00000000-0000-4000-8000-000000000000"
    seen: dict[tuple[str, str], set[str]] = {}

    async def check(
        path: str, method: str, expected: int, *, json_body: Any = None, **kw: Any
    ) -> httpx.Response:
        if json_body is not None:
            kw["content"] = json.dumps(json_body).encode()
        response = await client.request(method.upper(), f"{url}{path}", **kw)
        assert response.status_code == expected, (method, path, response.text)
        op = doc["paths"][path].get(method)
        if expected == 405:
            assert method not in doc["paths"][path]
            assert "Allow" in response.headers
            return response
        assert op is not None, f"{method} {path} is not documented"
        status = str(expected)
        assert status in op["responses"], f"{method} {path} answers {status}: document it"
        spec = _resolve(doc, op["responses"][status])
        for header in spec.get("headers", {}):
            if header != "Connection":
                assert header in response.headers, f"{method} {path} {status}: {header}"
        seen.setdefault((path, method), set()).add(status)
        return response

    signal = "/api/signal"
    leave = "/api/leave"
    connect = "/api/connect"
    q = {"room": room}

    async with client.stream("GET", f"{url}{connect}", params=q) as stream:
        assert stream.status_code == 200
        for header in doc["paths"][connect]["get"]["responses"]["200"]["headers"]:
            assert header in stream.headers, header
        seen[(connect, "get")] = {"200"}
    await check(connect, "get", 400)
    await check(connect, "get", 403, params={**q, "session_id": alice, "token": bob_token})

    body = {"sender": alice, "to": alice, "token": alice_token, "signal": {"n": 1}}
    await check(signal, "post", 200, params=q, json_body=body)
    await check(signal, "post", 200, params=q, json_body={**body, "to": bob, "id": "once"})
    await check(signal, "post", 200, params=q, json_body={**body, "to": bob, "id": "once"})
    await check(signal, "post", 503, params=q, json_body={**body, "to": bob})
    await check(signal, "post", 404, params=q, json_body={**body, "to": ghost})
    await check(signal, "post", 400, params=q, json_body={**body, "id": ""})
    await check(signal, "post", 403, params=q, json_body={**body, "token": bob_token})
    await check(signal, "post", 411, params=q, content=_chunked())
    await check(signal, "post", 413, params=q, content=b" " * 102_401)
    with trio.fail_after(5):
        while (await client.post(f"{url}{signal}", params=q, json=body)).status_code == 200:
            pass
    response = await check(signal, "post", 429, params=q, json_body=body)
    assert int(response.headers["Retry-After"]) >= 1

    ice = "/api/ice-servers"
    response = await check(
        ice, "post", 200, params=q, json_body={"session_id": alice, "token": alice_token}
    )
    assert response.json() == {"ice_servers": [], "ttl": 3600}
    await check(ice, "post", 400, params=q, json_body={"session_id": alice})
    await check(ice, "post", 403, params=q, json_body={"session_id": alice, "token": bob_token})
    await check(ice, "post", 411, params=q, content=_chunked())
    await check(ice, "post", 413, params=q, content=b" " * 102_401)

    await check(leave, "post", 400, params=q, json_body={"sender": alice})
    await check(leave, "post", 403, params=q, json_body={"sender": alice, "token": bob_token})
    await check(leave, "post", 411, params=q, content=_chunked())
    await check(leave, "post", 413, params=q, content=b" " * 102_401)
    beacon = json.dumps({"sender": alice, "token": alice_token}).encode()
    headers = {"Content-Type": "text/plain;charset=UTF-8"}
    await check(leave, "post", 200, params=q, content=beacon, headers=headers)

    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    for path in (connect, signal, leave, ice):
        await check(path, "options", 204, headers=preflight)
        await check(path, "delete", 405)
    await check("/healthz", "get", 200)
    await check("/readyz", "get", 200)
    response = await check("/openapi.json", "get", 200)
    assert response.json() == doc
    for path in ("/healthz", "/readyz", "/openapi.json"):
        await check(path, "post", 405)
    missing = await client.get(f"{url}/no/such/path")
    assert missing.status_code == 404 and "error" in missing.json()

    for path, method, op in _operations(doc):
        unprovoked = set(op["responses"]) - seen.get((path, method), set())
        assert unprovoked == NOT_PROVOKED.get((path, method), set()), (method, path)
