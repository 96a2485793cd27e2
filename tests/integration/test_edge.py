"""The API's own ASGI layer (http/edge.py): what an event stream costs the server, and the
layer mounted below a path. Its answers, route by route, are tested on the wire by the
rest of this folder."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from roomkeeper.http.app import create_app
from roomkeeper.http.guard import DISCONNECT, Departure
from roomkeeper.testing import AsyncEmbeddedServer, serve_async

from ..support.asgi import asgi_client

STREAMS = 12


@pytest.fixture
async def server() -> AsyncIterator[AsyncEmbeddedServer]:
    async with serve_async() as running:
        yield running


def _tasks() -> int:
    """Every task of this trio run."""
    count, pending = 0, [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        count += 1
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return count


def _connect(room: str) -> bytes:
    return f"GET /api/connect?room={room} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


def _connect_scope(kind: str, query: str, **fields: Any) -> dict[str, Any]:
    """The ASGI scope of a request to /api/connect as Hypercorn makes it, handed to the
    app directly."""
    return {
        "type": kind,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "path": "/api/connect",
        "raw_path": b"/api/connect",
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"x")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8787),
        **fields,
    }


async def _open_stream(url: str, request: bytes) -> tuple[trio.SocketStream, bytes]:
    """A raw connection that sent ``request`` (a connect) and read its answer up to the
    session event, with no client-side task: the socket, and what it read."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = await trio.open_tcp_stream(host, int(port))
    await sock.send_all(request)
    seen = b""
    while b"event: session" not in seen:
        seen += await sock.receive_some(65536)
    assert seen.startswith(b"HTTP/1.1 200"), seen
    return sock, seen


@pytest.mark.single_process("counts the tasks of the server in this process")
async def test_an_open_stream_costs_only_its_connections_two_tasks(
    server: AsyncEmbeddedServer,
) -> None:
    await trio.testing.wait_all_tasks_blocked()
    before, rooms_before = _tasks(), server.system.snapshot()[0].live
    sockets = [(await _open_stream(server.url, _connect(f"tasks-{n}")))[0] for n in range(STREAMS)]
    await trio.testing.wait_all_tasks_blocked()
    # Hypercorn's connection task and the task it runs the request in; each room's actor
    # (one room per stream here) is a task of the runtime, counted apart.
    rooms = server.system.snapshot()[0].live - rooms_before
    assert rooms == STREAMS
    assert (_tasks() - before - rooms) / STREAMS == 2
    for sock in sockets:
        await sock.aclose()


async def _disconnected(server: AsyncEmbeddedServer, room: str) -> None:
    """Wait until the room's one session is no longer connected."""
    with trio.fail_after(5):
        while True:
            if not any(s.connected for s in await server.sessions(room)):
                return
            await trio.sleep(0.01)


@pytest.mark.parametrize(
    "head",
    [
        b"GET /api/connect?room={room} HTTP/1.1\r\nHost: x\r\n\r\n",
        # a GET with a body: a task of its own reads it and learns of the close
        b"GET /api/connect?room={room} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody",
    ],
    ids=["told-by-the-server", "watched-by-a-task"],
)
async def test_a_client_closing_its_stream_is_seen_at_once(head: bytes) -> None:
    room = "closing"
    # No heartbeat within the wait: the close itself must be seen, not a failed write.
    async with serve_async(heartbeat=60.0) as server:
        sock, _ = await _open_stream(server.url, head.replace(b"{room}", room.encode()))
        assert [s.connected for s in await server.sessions(room)] == [True]
        await sock.aclose()
        await _disconnected(server, room)


async def test_a_connect_whose_client_has_gone_does_not_replace_the_live_stream(
    server: AsyncEmbeddedServer,
) -> None:
    """A connect that waited in a frozen node's socket while its client moved on (the
    cluster's SIGSTOP test): served anyway, it replaced the session's live stream with one
    nobody reads, and the session's signals came again, with new ids, on its next one."""
    room = "stale"
    sock, seen = await _open_stream(server.url, _connect(room))
    data = seen.split(b"event: session\ndata: ", 1)[1].split(b"\n", 1)[0]
    session = json.loads(data)
    departure = Departure()
    departure.gone()  # Hypercorn read the request and its client's close together
    query = f"room={room}&session_id={session['session_id']}&token={session['token']}"
    sent: list[Any] = []

    async def receive() -> Any:
        await trio.sleep_forever()

    async def send(message: Any) -> None:
        sent.append(message)

    scope = _connect_scope(
        "http", query, method="GET", scheme="http", extensions={DISCONNECT: departure}
    )
    await create_app(server.system)(scope, receive, send)  # type: ignore[arg-type]
    assert sent == []  # nothing answered: nobody is there
    assert [s.connected for s in await server.sessions(room)] == [True]
    with trio.move_on_after(0.5):
        seen = await sock.receive_some(65536)
        assert b"replaced" not in seen  # the live stream goes on
    await sock.aclose()


async def test_the_api_is_served_below_a_mount_point(server: AsyncEmbeddedServer) -> None:
    app = create_app(server.system)
    async with asgi_client(app, root_path="/signaling") as client:
        refused = await client.post("/signaling/api/leave?room=r", content=b"{}")
        health = await client.get("/signaling/healthz")
        wrong = await client.get("/signaling/api/leave")
    assert refused.status_code == 400 and "error" in refused.json()
    assert health.status_code == 200
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "OPTIONS, POST"


async def test_a_websocket_handshake_under_a_server_that_cannot_answer_it_is_closed(
    server: AsyncEmbeddedServer,
) -> None:
    """Without the ``websocket.http.response`` extension (Hypercorn has it: see
    test_protocol_errors.py), the handshake is refused the only way ASGI allows, and
    Quart, which has no WebSocket route, never sees it."""
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = _connect_scope("websocket", "room=ws", scheme="ws", subprotocols=[])
    await create_app(server.system)(scope, receive, send)  # type: ignore[arg-type]
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": None}]
