"""A connection's reading and its idle timer, on roomkeeper's Hypercorn server.

Hypercorn's idle timer (``keep_alive_timeout``: a connection with no request in progress
is closed after it, and a request's head must be in within it) is a task of its own,
started anew after every answer and stopped at every request, each under a lock: two
to three scheduler round trips and a task per request. Here it is a deadline on the
reader's wait for bytes (`IdleTimer`): setting or clearing it costs nothing, and a
connection that is not reading has no timer left to wait for.

When the deadline passes, the connection is closed unless a request is waiting for the
server (`request_waiting`): bytes unread in its socket, or a head parsed whose request
has yet to stop the timer. A server that is behind (a reconnect storm) comes to such
requests after the timer, and answers them. A stopping server ends its idle connections
at once (`IdleConnections.close_all`), as Hypercorn's timer did on
``context.terminated``.
"""

from __future__ import annotations

import fcntl
import math
import struct
import termios
from typing import Any

import h11
import trio
from hypercorn.events import Closed, RawData

__all__ = ["IdleConnections", "IdleTimer", "read_data", "request_waiting", "unread_bytes"]

MAX_RECV = 2**16
"""Bytes asked of the socket at once (Hypercorn's)."""

_HEAD_IN = (h11.SEND_BODY, h11.DONE, h11.MUST_CLOSE)


class IdleConnections:
    """The idle timers of one server's connections, to end them when it stops."""

    def __init__(self) -> None:
        self.closing = False
        self.timers: set[IdleTimer] = set()

    def close_all(self) -> None:
        """End every idle connection now, and each one that goes idle from now on."""
        self.closing = True
        now = trio.current_time()
        for timer in list(self.timers):
            timer.set(now)


class IdleTimer:
    """A connection's ``idle_task`` (Hypercorn's ``TrioSingleTask``): the deadline of
    its reader's wait for bytes. ``restart`` and ``stop`` are Hypercorn's calls."""

    __slots__ = ("_connections", "_ended", "_timeout", "deadline", "scope")

    def __init__(self, connections: IdleConnections, timeout: float) -> None:
        self._connections = connections
        self._timeout = timeout
        self._ended = False
        self.deadline = math.inf
        self.scope: trio.CancelScope | None = None  # the reader's, while it waits

    async def restart(self, task_group: Any = None, action: Any = None) -> None:
        if self._ended:  # an answer that ended after its connection's reading
            return
        closing = self._connections.closing
        self.set(trio.current_time() + (0.0 if closing else self._timeout))

    async def stop(self) -> None:
        self.set(math.inf)

    def end(self) -> None:
        """The reader has ended: no deadline is kept from now on."""
        self._ended = True
        self.set(math.inf)

    @property
    def closing(self) -> bool:
        return self._connections.closing

    def set(self, deadline: float) -> None:
        self.deadline = deadline
        if self.scope is not None:
            self.scope.deadline = deadline
        if deadline == math.inf:
            self._connections.timers.discard(self)
        else:
            self._connections.timers.add(self)


def unread_bytes(sock: Any) -> int:
    """Bytes the kernel holds for ``sock`` that nobody has read yet (0 if unknown)."""
    try:
        count: int = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]
    except (OSError, ValueError):
        return 0
    return count


def request_waiting(server: Any) -> bool:
    """Whether a connection has a request the server has not come to yet: bytes unread in
    its socket, or a head h11 has parsed whose request has not stopped the timer yet."""
    connection = getattr(server.protocol.protocol, "connection", None)
    if isinstance(connection, h11.Connection) and connection.their_state in _HEAD_IN:
        return True
    return unread_bytes(server.stream.socket) > 0


async def read_data(server: Any) -> None:
    """``TCPServer._read_data`` of a guarded connection (whose ``idle_task`` is an
    `IdleTimer`): as Hypercorn's, with the idle timer on the wait for bytes. Hypercorn's
    ``read_timeout`` is not applied (roomkeeper leaves it off)."""
    timer: IdleTimer = server.idle_task
    receive_some = server.stream.receive_some
    try:
        while True:
            with trio.CancelScope(deadline=timer.deadline) as scope:
                timer.scope = scope
                try:
                    data = await receive_some(MAX_RECV)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    break
                finally:
                    timer.scope = None
            if scope.cancelled_caught:
                if timer.closing or not request_waiting(server):
                    break  # idle: the connection closes as the reader ends
                await timer.restart()  # not idle: another period
                continue
            await server.protocol.handle(RawData(bytes(data)))
            if not data:
                break
        await server.protocol.handle(Closed())
    finally:
        timer.end()
