"""openapi.json (served at /openapi.json) is valid OpenAPI 3.0.3, keeps the original
contract, marks every addition as ours, and documents every path, method and status the
server actually answers with: each status below is provoked on a real server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from openapi_spec_validator import validate

from roomkeeper.http.app import create_app
from roomkeeper.testing import AsyncEmbeddedServer, serve_async

ROOT = Path(__file__).resolve().parents[2]
ORIGINAL_FILE = ROOT.parent / "shared" / "spec" / "openapi.json"
MARK = "x-roomkeeper-extension"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

# The original contract (shared/spec/openapi.json): what existing clients rely on.
ORIGINAL: dict[tuple[str, str], dict[str, set[str]]] = {
    ("/api/connect", "get"): {
        "parameters": {"room", "session_id", "token", "X-Session-Id", "X-Token", "Authorization"},
        "responses": {"200", "400"},
        "body": set(),
    },
    ("/api/signal", "post"): {
        "parameters": {"room", "X-Token", "Authorization"},
        "responses": {"200", "400", "403", "411", "413", "429"},
        "body": {"sender", "to", "token", "signal"},
    },
    ("/api/leave", "post"): {
        "parameters": {"room", "X-Token", "Authorization"},
        "responses": {"200", "403", "411", "413"},
        "body": {"sender", "token"},
    },
}

# Statuses documented but not provoked here, and why.
NOT_PROVOKED = {
    ("/api/connect", "get"): {"500"},  # a failing handler
    ("/readyz", "get"): {"503"},  # provoked in tests/cluster (PostgreSQL down)
    ("/api/signal", "post"): {"500"},
    ("/api/leave", "post"): {"500", "503"},
}
# Provoked in tests/integration/test_limits.py (409, 429 on connect) and test_abuse.py
# (408, a body that does not arrive in time), with settings of their own.
for _op, _statuses in {
    ("/api/connect", "get"): {"409", "429"},
    ("/api/signal", "post"): {"408"},
    ("/api/leave", "post"): {"408"},
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


def _marked(doc: dict[str, Any], node: dict[str, Any]) -> bool:
    return _resolve(doc, node).get(MARK) is True


def test_the_document_is_valid_openapi_3_0_3(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.0.3"
    validate(doc)


def test_the_original_contract_is_kept(doc: dict[str, Any]) -> None:
    for (path, method), original in ORIGINAL.items():
        op = doc["paths"][path][method]
        assert MARK not in op, f"{method} {path} is in the original contract"
        names = {p["name"] for p in op["parameters"]}
        assert original["parameters"] <= names, (path, original["parameters"] - names)
        assert original["responses"] <= set(op["responses"]), path
        for status in original["responses"]:
            assert not _marked(doc, op["responses"][status]), f"{path} {status} is original"
        if original["body"]:
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            assert original["body"] <= set(schema["properties"]), path
            assert set(schema["required"]) == original["body"], path


def _contains(ours: Any, original: Any, where: str) -> None:
    """Every value of ``original`` is in ``ours``; a string or a list may only have grown
    at its end."""
    if isinstance(original, dict):
        assert isinstance(ours, dict), where
        for key, value in original.items():
            assert key in ours, f"{where}/{key} is gone"
            _contains(ours[key], value, f"{where}/{key}")
    elif isinstance(original, list):
        assert isinstance(ours, list) and len(ours) >= len(original), where
        for i, value in enumerate(original):
            _contains(ours[i], value, f"{where}/{i}")
    elif isinstance(original, str):
        assert isinstance(ours, str) and ours.startswith(original), f"{where} changed"
    else:
        assert ours == original, f"{where} changed"


def test_nothing_of_the_original_file_is_changed(doc: dict[str, Any]) -> None:
    if not ORIGINAL_FILE.is_file():
        pytest.skip(f"no {ORIGINAL_FILE} beside the repository")
    _contains(doc, json.loads(ORIGINAL_FILE.read_text("utf-8")), "#")


def test_every_addition_is_marked_as_ours(doc: dict[str, Any]) -> None:
    for path, method, op in _operations(doc):
        original = ORIGINAL.get((path, method))
        if original is None:
            assert _marked(doc, op), f"{method} {path} is ours: mark it"
            continue
        for param in op["parameters"]:
            if param["name"] not in original["parameters"]:
                assert _marked(doc, param), f"{path} parameter {param['name']}"
        for status, response in op["responses"].items():
            if status not in original["responses"]:
                assert _marked(doc, response), f"{method} {path} {status}"
        for media, content in op.get("requestBody", {}).get("content", {}).items():
            if media != "application/json":
                assert _marked(doc, content), f"{path} body as {media}"
                continue
            for name, prop in content["schema"]["properties"].items():
                if name not in original["body"]:
                    assert _marked(doc, prop), f"{path} body field {name}"
    for kind, items in doc["components"].items():
        for name, item in items.items():
            assert _marked(doc, item), f"components/{kind}/{name}"


async def test_every_route_of_the_app_is_documented(
    doc: dict[str, Any], server: AsyncEmbeddedServer
) -> None:
    app = create_app(server.system)
    served = {
        (rule.rule, method.lower())
        for rule in app.url_map.iter_rules()
        if rule.rule not in UNDOCUMENTED_ROUTES
        for method in rule.methods or ()
        if method != "HEAD"  # added by the framework to every GET
    }
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

    await check(leave, "post", 400, params=q, json_body={"sender": alice})
    await check(leave, "post", 403, params=q, json_body={"sender": alice, "token": bob_token})
    await check(leave, "post", 411, params=q, content=_chunked())
    await check(leave, "post", 413, params=q, content=b" " * 102_401)
    beacon = json.dumps({"sender": alice, "token": alice_token}).encode()
    headers = {"Content-Type": "text/plain;charset=UTF-8"}
    await check(leave, "post", 200, params=q, content=beacon, headers=headers)

    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    for path in (connect, signal, leave):
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
