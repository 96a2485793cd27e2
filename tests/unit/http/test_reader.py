"""A guarded connection's reading and its idle timer (http/reader.py), on a real socket
pair and trio's mock clock: when an idle connection closes, and when it is not idle."""

from __future__ import annotations

import math
import socket
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import h11
import pytest
import trio
from hypercorn.events import Closed, RawData

from roomkeeper.http.reader import IdleConnections, IdleTimer, read_data, unread_bytes

TIMEOUT = 5.0
HEAD = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


class _Connection:
    """What the reader uses of Hypercorn's ``TCPServer``; it records what it handled,
    and when (relative to its start)."""

    def __init__(self, sock: socket.socket, connections: IdleConnections) -> None:
        self.idle_task = IdleTimer(connections, TIMEOUT)
        self.stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        self.h11 = h11.Connection(h11.SERVER)
        self.protocol = SimpleNamespace(protocol=SimpleNamespace(connection=self.h11))
        self.protocol.handle = self.handle
        self.started = trio.current_time()
        self.handled: list[tuple[float, Any]] = []

    async def handle(self, event: Any) -> None:
        self.handled.append((trio.current_time() - self.started, event))

    def closed_at(self) -> float | None:
        closed = [at for at, event in self.handled if isinstance(event, Closed)]
        return closed[0] if closed else None


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        yield ours, theirs


async def _read(connection: _Connection, seconds: float) -> None:
    with trio.move_on_after(seconds):
        await read_data(connection)


def test_unread_bytes_counts_what_waits_in_a_socket(pair: Any) -> None:
    ours, theirs = pair
    assert unread_bytes(ours) == 0
    theirs.sendall(b"GET / HTTP/1.1\r\n")
    assert unread_bytes(ours) == 16
    ours.close()
    assert unread_bytes(ours) == 0  # unknown


async def test_an_idle_connection_closes_when_its_timer_ends(
    pair: Any, autojump_clock: Any
) -> None:
    connection = _Connection(pair[0], IdleConnections())
    await connection.idle_task.restart()
    await _read(connection, 60)
    assert connection.closed_at() == TIMEOUT


async def test_a_request_timer_stopped_never_ends_and_restarts_from_the_answer(
    pair: Any, autojump_clock: Any
) -> None:
    connection = _Connection(pair[0], IdleConnections())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_read, connection, 60)
        await connection.idle_task.stop()  # a request began
        await trio.sleep(20)
        assert connection.closed_at() is None
        await connection.idle_task.restart()  # its answer ended
    assert connection.closed_at() == 20 + TIMEOUT


async def test_a_head_that_dribbles_is_cut_at_the_timers_end(
    pair: Any, autojump_clock: Any
) -> None:
    connection = _Connection(pair[0], IdleConnections())
    await connection.idle_task.restart()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_read, connection, 60)
        await trio.sleep(0.1)
        for byte in HEAD[:20]:  # each byte is read as it comes, none at the timer's end
            pair[1].sendall(bytes([byte]))
            await trio.sleep(0.3)
    assert connection.closed_at() == TIMEOUT


async def test_bytes_unread_when_the_timer_ends_are_read_not_dropped(
    pair: Any, autojump_clock: Any
) -> None:
    """The server was behind: the timer ended before the reader came to a head that had
    arrived in time."""
    connection = _Connection(pair[0], IdleConnections())
    await connection.idle_task.restart()
    pair[1].sendall(HEAD)
    autojump_clock.jump(2 * TIMEOUT)
    await _read(connection, 60)
    data = [event.data for _, event in connection.handled if isinstance(event, RawData)]
    assert data == [HEAD]
    assert connection.closed_at() == 3 * TIMEOUT  # then idle for a whole period


async def test_a_head_parsed_when_the_timer_ends_is_not_idle(
    pair: Any, autojump_clock: Any
) -> None:
    """The timer ended between the reader parsing a head and stopping the timer."""
    connection = _Connection(pair[0], IdleConnections())
    connection.h11.receive_data(HEAD)
    assert isinstance(connection.h11.next_event(), h11.Request)
    await connection.idle_task.restart()
    await _read(connection, 60)
    assert connection.closed_at() is None


async def test_a_stopping_server_closes_its_idle_connections_at_once(
    pair: Any, autojump_clock: Any
) -> None:
    connections = IdleConnections()
    ours, theirs = socket.socketpair()
    with ours, theirs:
        idle, busy = _Connection(pair[0], connections), _Connection(ours, connections)
        await idle.idle_task.restart()
        await busy.idle_task.stop()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read, idle, 60)
            nursery.start_soon(_read, busy, 60)
            await trio.sleep(1)
            connections.close_all()
            await trio.sleep(1)
            assert idle.closed_at() == 1
            assert busy.closed_at() is None
            await busy.idle_task.restart()  # its answer ended: it closes now
        assert busy.closed_at() == 2


async def test_a_connection_its_client_closed_ends_with_no_timer_left(
    pair: Any, autojump_clock: Any
) -> None:
    connections = IdleConnections()
    connection = _Connection(pair[0], connections)
    await connection.idle_task.restart()
    assert connections.timers == {connection.idle_task}
    pair[1].close()
    await _read(connection, 60)
    assert connection.closed_at() == 0
    assert connection.idle_task.deadline == math.inf
    await connection.idle_task.restart()  # an answer that ended after the reading
    assert not connections.timers
