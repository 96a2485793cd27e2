"""The API's own ASGI layer (http/edge.py): what an event stream costs the server, and the
layer mounted below a path. Its answers, route by route, are tested on the wire by the
rest of this folder."""

from __future__ import annotations

import gc
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import h11
import httpx
import pytest
import trio
from hypercorn.events import RawData
from hypercorn.trio.tcp_server import TCPServer

from roomkeeper.http.app import ROOMS, create_app
from roomkeeper.http.direct import DirectWrite
from roomkeeper.http.guard import DISCONNECT, Departure
from roomkeeper.runtime import Wrote
from roomkeeper.runtime.ids import ActorId
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


def _body(wire: bytes) -> bytes:
    """The body of a streaming answer read off the wire, through h11 (which refuses any
    framing error)."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/api/connect", headers=[("Host", "x")]))
    if wire:  # (nothing would be the connection's end)
        client.receive_data(wire)
    body = b""
    while (event := client.next_event()) is not h11.NEED_DATA:
        if isinstance(event, h11.Data):
            body += event.data
    return body


async def _read_until(sock: trio.SocketStream, seen: bytes, marker: bytes, count: int = 1) -> bytes:
    with trio.fail_after(10):
        while _body(seen).count(marker) < count:
            seen += await sock.receive_some(1 << 16)
    return seen


async def _open_stream(
    url: str, request: bytes, *, receive_buffer: int | None = None
) -> tuple[trio.SocketStream, bytes]:
    """A raw connection (with ``receive_buffer`` bytes of socket buffer, if given) that
    sent ``request`` (a connect) and read its answer up to the session event, with no
    client-side task: the socket, and what it read."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    raw = trio.socket.socket()
    if receive_buffer is not None:
        raw.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, receive_buffer)
    await raw.connect((host, int(port)))
    sock = trio.SocketStream(raw)
    await sock.send_all(request)
    seen = await _read_until(sock, b"", b"event: session")
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


def _connections() -> int:
    """Hypercorn connections in this process's heap: alive, or dead and not collected."""
    return sum(isinstance(o, TCPServer) for o in gc.get_objects())


@pytest.mark.single_process("counts the server's connections in this process's heap")
async def test_a_closed_connection_is_freed_without_the_cyclic_collector(
    server: AsyncEmbeddedServer,
) -> None:
    """Each connection's objects are freed as it closes, not left in a cycle for the
    collector (which --gc-freeze would hold frozen): a stream the client closes, an
    answer after which the server closes, and a request h11 refuses."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        sock, _ = await _open_stream(server.url, _connect("freed"))
        await sock.aclose()
        async with await trio.open_tcp_stream(host, int(port)) as other:
            await other.send_all(
                b"POST /api/signal HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Content-Length: 2\r\n\r\n{}"
            )
            assert (await other.receive_some()).startswith(b"HTTP/1.1 400")
        async with await trio.open_tcp_stream(host, int(port)) as refused:
            await refused.send_all(b"NOT HTTP\r\n\r\n")  # h11's refusal, the guard's answer
            assert (await refused.receive_some()).startswith(b"HTTP/1.1 400")
        for _ in range(100):  # until the server has seen each close
            if not _connections():
                break
            await trio.sleep(0.05)
        assert _connections() == 0
    finally:
        if enabled:
            gc.enable()


@pytest.mark.single_process("counts the server's connections in this process's heap")
async def test_an_idle_connection_the_client_closes_is_freed_at_once() -> None:
    """A keep-alive connection is let go when its client closes it, not when its idle
    timer (a minute here) would have closed it."""
    async with serve_async(keep_alive_timeout=60) as server:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        async with await trio.open_tcp_stream(host, int(port)) as sock:
            await sock.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await sock.receive_some()).startswith(b"HTTP/1.1 200")
        for _ in range(100):  # until the server has seen the close
            gc.collect()
            if not _connections():
                break
            await trio.sleep(0.05)
        assert _connections() == 0


@pytest.mark.single_process("stops a server in this process")
async def test_a_stopping_server_closes_its_idle_connections_at_once() -> None:
    """Not after Hypercorn's graceful timeout (5 s), nor the idle timer (a minute)."""
    async with serve_async(keep_alive_timeout=60) as server:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        async with await trio.open_tcp_stream(host, int(port)) as sock:
            await sock.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await sock.receive_some()).startswith(b"HTTP/1.1 200")
            await trio.testing.wait_all_tasks_blocked()
            server.stop()
            with trio.fail_after(3):
                assert await sock.receive_some() == b""


@pytest.mark.single_process("blocks the server's trio loop, in this process")
async def test_a_request_unread_when_the_idle_timer_ends_is_answered() -> None:
    """A server that is behind (a reconnect storm) has not read requests that arrived in
    time: when their connections' idle timers end, they are answered, not closed. This
    loop is the server's: blocking it holds the server back past the timers."""
    async with serve_async(keep_alive_timeout=0.5) as server:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        for _ in range(3):  # in each, the timers or the readers run first (trio's order)
            clients = [socket.create_connection((host, int(port))) for _ in range(20)]
            await trio.testing.wait_all_tasks_blocked(cushion=0.02)  # accepted: timers on
            for client in clients:
                client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.8)  # noqa: ASYNC251 - the point: the server's loop stands still
            answers = [await _first_bytes(client) for client in clients]
            assert all(a.startswith(b"HTTP/1.1 200") for a in answers), answers


async def _first_bytes(client: socket.socket) -> bytes:
    with client, trio.socket.from_stdlib_socket(client) as sock, trio.fail_after(10):
        return await sock.recv(1 << 16)


def _session(seen: bytes) -> dict[str, Any]:
    session: dict[str, Any] = json.loads(_body(seen).split(b"data: ", 1)[1].split(b"\n", 1)[0])
    return session


@pytest.mark.single_process("reads the server's stream counters in this process")
async def test_an_idle_stream_is_written_to_by_the_tasks_with_its_events_not_its_own() -> None:
    """A heartbeat, a peer's arrival and a signal reach a waiting stream straight from
    the ticker and the room: its own task writes nothing after its first bytes."""
    async with serve_async(heartbeat=0.2) as server:
        streams = server.system.streams
        sock, seen = await _open_stream(server.url, _connect("direct"))
        await trio.testing.wait_all_tasks_blocked()
        by_pump, at_once = streams.writes_by_pump_total, streams.writes_at_once_total
        seen = await _read_until(sock, seen, b"event: heartbeat")
        other, other_seen = await _open_stream(server.url, _connect("direct"))
        me, them = _session(seen), _session(other_seen)
        async with httpx.AsyncClient(base_url=server.url) as http:
            signal = {"type": "offer", "sdp": "v=0"}
            body = {**them, "sender": them["session_id"], "to": me["session_id"]}
            body["signal"] = signal
            answer = await http.post("/api/signal?room=direct", json=body)
            assert answer.status_code == 200, answer.text
        seen = await _read_until(sock, seen, b"event: signal")
        assert b'"sdp":"v=0"' in _body(seen)
        assert streams.writes_by_pump_total == by_pump + 1  # the second stream's first bytes
        assert streams.writes_at_once_total >= at_once + 3  # heartbeat, arrival, signal
        for s in (sock, other):
            await s.aclose()


@pytest.mark.parametrize(
    ("request_bytes", "status_line"),
    [
        (_connect("reasons"), b"HTTP/1.1 200 OK\r\n"),  # an event stream
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 200 OK\r\n"),  # Quart's
        (b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 404 Not Found\r\n"),
        (
            b"POST /api/signal?room=r HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
            b"HTTP/1.1 400 Bad Request\r\n",  # the edge's JSON error
        ),
        (
            b"OPTIONS /api/signal HTTP/1.1\r\nHost: x\r\nOrigin: https://a.example\r\n"
            b"Access-Control-Request-Method: POST\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n",
        ),
        (b"GET / HTTP/1.1 extra\r\n\r\n", b"HTTP/1.1 400 Bad Request\r\n"),  # h11 refuses
    ],
)
async def test_every_status_line_has_its_reason_phrase(
    server: AsyncEmbeddedServer, request_bytes: bytes, status_line: bytes
) -> None:
    """As Cloudflare's: a browser's ``fetch`` gives it as ``statusText``."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    async with await trio.open_tcp_stream(host, int(port)) as sock:
        await sock.send_all(request_bytes)
        seen = b""
        with trio.fail_after(10):
            while b"\r\n" not in seen:
                seen += await sock.receive_some(1 << 16)
    assert seen.startswith(status_line), seen[:100]


@pytest.mark.single_process("counts the server's writes in this process")
async def test_a_streams_head_goes_out_with_its_first_bytes_in_one_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Head, `retry:` and session event: one write to the socket, none through Hypercorn."""
    through_hypercorn: list[bytes] = []
    to_the_socket: list[bytes] = []
    protocol_send, direct_write = TCPServer.protocol_send, DirectWrite.__call__

    async def counted_protocol_send(self: TCPServer, event: Any) -> None:
        if isinstance(event, RawData):
            through_hypercorn.append(event.data)
        await protocol_send(self, event)

    def counted_direct_write(self: DirectWrite, data: bytes) -> Wrote:
        wrote = direct_write(self, data)
        if wrote is not Wrote.NOTHING:
            to_the_socket.append(data)
        return wrote

    monkeypatch.setattr(TCPServer, "protocol_send", counted_protocol_send)
    monkeypatch.setattr(DirectWrite, "__call__", counted_direct_write)
    async with serve_async(heartbeat=60.0) as server:
        sock, _ = await _open_stream(server.url, _connect("together"))
        assert through_hypercorn == []
        assert len(to_the_socket) == 1 and to_the_socket[0].startswith(b"retry: ")
        assert b"event: session" in to_the_socket[0]
        await sock.aclose()


@pytest.mark.single_process("sends on the server's stream in this process")
async def test_a_stream_whose_socket_is_full_gets_every_byte_in_order() -> None:
    """What the socket does not take of a write made at once is sent by the stream's own
    task, before what queued behind it, once the client reads again."""
    room = "full"
    async with serve_async(heartbeat=60.0) as server:
        streams = server.system.streams
        sock, seen = await _open_stream(server.url, _connect(room), receive_buffer=4096)
        await trio.testing.wait_all_tasks_blocked()
        (stream,) = streams.of(ActorId(ROOMS, room))
        by_pump = streams.writes_by_pump_total
        sent = 0
        while streams.writes_by_pump_total == by_pump:  # until the socket is full
            assert streams.send(stream, "filler", b"%d" % sent + b"x" * 200_000) is not None
            sent += 1
            await trio.testing.wait_all_tasks_blocked()
        assert sent < 20
        streams.send(stream, "filler", b"last")  # behind what is owed
        seen = await _read_until(sock, seen, b"event: filler", sent + 1)
        fillers = [
            event.split(b"\ndata: ", 1)[1]
            for event in _body(seen).split(b"\n\n")
            if b"event: filler\n" in event
        ]
        assert fillers == [b"%d" % n + b"x" * 200_000 for n in range(sent)] + [b"last"]
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
