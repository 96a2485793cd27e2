"""`DirectWrite`: an answer's body bytes straight to its socket, framed by its h11
connection, when that needs no wait; else refused, or owed to the next flush."""

from __future__ import annotations

import socket
from typing import Any

import h11
import trio
from hypercorn.events import RawData

from roomkeeper.http.direct import DirectWrite
from roomkeeper.http.guard import LastRequestConnection
from roomkeeper.runtime import Wrote


def _answering() -> h11.Connection:
    """A server connection that has sent a streaming answer's head (chunked)."""
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(b"GET /api/connect HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(connection.next_event(), h11.Request)
    connection.send(h11.Response(status_code=200, headers=[("Content-Type", "text/plain")]))
    assert connection.our_state is h11.SEND_BODY
    return connection


class Pair:
    """A connected socket pair; ``sent`` is what the direct writer's flush sent."""

    def __init__(self) -> None:
        self.server, self.client = socket.socketpair()
        self.server.setblocking(False)
        self.client.setblocking(False)
        self.lock = trio.Lock()
        self.connection = _answering()
        self.sent: list[bytes] = []
        self.direct = DirectWrite(self.connection, self.lock, self.server, self.send)

    async def send(self, event: Any) -> None:
        assert isinstance(event, RawData)
        self.sent.append(event.data)

    def read(self) -> bytes:
        data = b""
        while True:
            try:
                chunk = self.client.recv(1 << 20)
            except BlockingIOError:
                return data
            data += chunk


async def test_bytes_go_to_the_socket_at_once_framed_as_h11_frames_them() -> None:
    pair = Pair()
    assert pair.direct(b"data: hello\n\n") is Wrote.ALL
    assert pair.read() == b"d\r\ndata: hello\n\n\r\n"
    assert pair.direct.owed == b"" and pair.sent == []


async def test_bytes_are_refused_while_hypercorn_writes_or_once_the_body_has_ended() -> None:
    pair = Pair()
    pair.lock.acquire_nowait()  # Hypercorn is sending on this connection
    assert pair.direct(b"x") is Wrote.NOTHING
    pair.lock.release()
    pair.connection.send(h11.EndOfMessage())
    assert pair.direct(b"x") is Wrote.NOTHING
    assert pair.read() == b""


async def test_what_the_socket_does_not_take_is_owed_to_the_flush_and_holds_back_the_rest() -> None:
    pair = Pair()
    pair.server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    big = b"x" * (1 << 20)
    assert pair.direct(big) is Wrote.SOME
    owed = pair.direct.owed
    assert 0 < len(owed) < len(big)
    assert pair.direct(b"after") is Wrote.NOTHING  # nothing may overtake what is owed
    await pair.direct.flush()
    assert pair.sent == [owed] and pair.direct.owed == b""
    written = pair.read() + owed  # what the socket took, then what the flush sent
    assert written == b"100000\r\n" + big + b"\r\n"


async def test_a_broken_connection_owes_the_whole_frame_for_the_flush_to_find_out() -> None:
    pair = Pair()
    pair.client.close()
    assert pair.direct(b"first") is Wrote.SOME  # the socket refused it (EPIPE)
    assert pair.direct.owed == b"5\r\nfirst\r\n"  # framed once: h11 frames it no more
    await pair.direct.flush()  # which, through Hypercorn, finds the connection closed
    assert pair.sent == [b"5\r\nfirst\r\n"]


async def test_the_stream_tasks_write_flushes_first_and_writes_at_once_where_it_can() -> None:
    pair = Pair()
    through_hypercorn: list[bytes] = []

    async def asgi_write(chunk: bytes) -> None:
        through_hypercorn.append(chunk)

    write = pair.direct.before(asgi_write)
    await write(b"one")
    assert pair.read() == b"3\r\none\r\n" and through_hypercorn == []
    pair.lock.acquire_nowait()
    await write(b"two")  # Hypercorn holds the connection: through its send
    pair.lock.release()
    assert through_hypercorn == [b"two"]


class Recorder:
    """A socket that takes everything, and keeps each write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def send(self, data: bytes, flags: int = 0) -> int:
        self.writes.append(bytes(data))
        return len(data)


def _held(connection: h11.Connection, recorder: Recorder) -> tuple[DirectWrite, bytes]:
    """A direct writer that held the head of its streaming answer: it and the head."""
    connection.receive_data(b"GET /api/connect HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(connection.next_event(), h11.Request)
    assert isinstance(connection.next_event(), h11.EndOfMessage)
    direct = DirectWrite(connection, trio.Lock(), recorder, Pair().send)  # type: ignore[arg-type]
    direct.hold_head()
    head = h11.Response(status_code=200, headers=[("Content-Type", "text/event-stream")])
    assert connection.send(head) == b""  # held
    return direct, bytes(connection.held_head)  # type: ignore[attr-defined]


async def test_a_held_head_goes_out_with_the_first_bytes_in_one_write() -> None:
    recorder = Recorder()
    direct, head = _held(LastRequestConnection(h11.SERVER), recorder)
    assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")
    assert direct(b"retry: 1\n\n") is Wrote.ALL
    assert direct(b"id: 1\n\n") is Wrote.ALL
    assert recorder.writes == [head + b"a\r\nretry: 1\n\n\r\n", b"7\r\nid: 1\n\n\r\n"]


async def test_a_held_head_goes_with_the_first_bytes_sent_any_other_way() -> None:
    connection = LastRequestConnection(h11.SERVER)
    _, head = _held(connection, Recorder())
    assert connection.send(h11.Data(data=b"x")) == head + b"1\r\nx\r\n"  # through Hypercorn
    _, head = _held(connection := LastRequestConnection(h11.SERVER), Recorder())
    assert connection.send(h11.EndOfMessage()) == head + b"0\r\n\r\n"  # an answer ended at once


async def test_only_the_next_head_is_held_and_only_on_a_guarded_connection() -> None:
    connection = LastRequestConnection(h11.SERVER)
    direct, _ = _held(connection, Recorder())
    connection.send(h11.EndOfMessage())
    connection.start_next_cycle()
    connection.receive_data(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(connection.next_event(), h11.Request)
    assert connection.send(h11.Response(status_code=200, headers=[])).startswith(b"HTTP/1.1")
    assert direct(b"x") is Wrote.ALL and connection.held_head == b""
    plain = h11.Connection(h11.SERVER)
    plain.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    plain.next_event()
    DirectWrite(plain, trio.Lock(), Recorder(), Pair().send).hold_head()  # type: ignore[arg-type]
    assert plain.send(h11.Response(status_code=200, headers=[])).startswith(b"HTTP/1.1")
