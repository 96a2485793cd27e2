"""An event stream's bytes written straight to its socket, on roomkeeper's Hypercorn server.

While an event stream's task waits with nothing to write, an event for it (a heartbeat,
a signal its room released) is written by the task that sends it (the ticker, the room)
straight to the connection's socket, framed by the connection's h11 as Hypercorn would
frame it, if that needs no wait: Hypercorn is not writing to the connection, nothing is
owed from before, and the socket's buffer takes it. The request's task stays asleep, and
the bytes skip Hypercorn's ASGI send (docs/benchmarks.md measures both).

What the socket does not take at once is owed: the stream's task is woken and sends it
(`flush`) through Hypercorn, under its send lock, before anything else. Only HTTP/1 on a
plain socket is written to this way; TLS and HTTP/2 frame their own bytes.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from typing import Any

import h11
import trio
from hypercorn.events import RawData
from hypercorn.protocol.h11 import H11Protocol

from ..runtime import Wrote

__all__ = ["WRITE_NOW", "DirectWrite"]

WRITE_NOW = "roomkeeper.write_now"
"""The ASGI scope extension of a GET on roomkeeper's server over HTTP/1 on a plain
socket: its `DirectWrite`."""

_NO_SIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)

Write = Callable[[bytes], Awaitable[None]]


class DirectWrite:
    """Writes a streaming answer's body bytes to its connection's socket at once, from
    any task, when that needs no wait (a `roomkeeper.runtime.WriteNow`)."""

    __slots__ = ("_connection", "_frame", "_lock", "_send", "_socket", "owed")

    def __init__(
        self,
        connection: h11.Connection,
        lock: trio.Lock,
        sock: socket.socket,
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        self._connection = connection
        # A guarded connection frames a chunk itself (guard.py), with a held head.
        self._frame: Callable[[bytes], bytes | None] | None = getattr(connection, "frame", None)
        self._lock = lock
        self._socket = sock
        self._send = send
        self.owed = b""

    @classmethod
    def of(cls, server: Any, scope: Any) -> DirectWrite | None:
        """The direct writer of a request on Hypercorn's trio ``TCPServer`` ``server``,
        or None where its bytes cannot be written this way."""
        if server is None or scope["http_version"] not in ("1.0", "1.1"):
            return None
        stream = server.stream
        protocol = getattr(getattr(server, "protocol", None), "protocol", None)
        if not isinstance(stream, trio.SocketStream) or not isinstance(protocol, H11Protocol):
            return None  # TLS, or HTTP/2
        sock = getattr(stream.socket, "_sock", None)  # trio's socket wraps the stdlib's
        connection = protocol.connection
        if not isinstance(sock, socket.socket) or not isinstance(connection, h11.Connection):
            return None
        return cls(connection, server.send_lock, sock, server.protocol_send)

    def __call__(self, data: bytes) -> Wrote:
        connection = self._connection
        if self.owed or self._lock.locked() or connection.our_state is not h11.SEND_BODY:
            return Wrote.NOTHING
        framed = None if self._frame is None else self._frame(data)
        if framed is None:  # (h11 adds a head the connection held, too: `hold_head`)
            try:
                framed = connection.send(h11.Data(data=data))
            except h11.LocalProtocolError:  # an answer framed by its length, say: too long
                return Wrote.NOTHING
        if not framed:
            return Wrote.ALL
        try:
            sent = self._socket.send(framed, _NO_SIGNAL)
        except OSError:  # the buffer is full (BlockingIOError), or the connection broke:
            sent = 0  # the flush finds out, as a write through Hypercorn would
        if sent == len(framed):
            return Wrote.ALL
        self.owed = framed[sent:]
        return Wrote.SOME

    def hold_head(self) -> None:
        """Hold the answer's head, about to be sent, for its first body bytes to take it
        along in their write: its sender must send them at once. Only on a guarded
        connection (guard.py); elsewhere the head goes alone, as before."""
        if hasattr(self._connection, "held_head"):
            self._connection.hold_head = True  # type: ignore[attr-defined]

    async def flush(self) -> None:
        """Send what was taken and not yet written, through Hypercorn."""
        if self.owed:
            owed, self.owed = self.owed, b""
            await self._send(RawData(data=owed))

    def before(self, write: Write) -> Write:
        """The stream task's own ``write``: what is owed first, then the bytes, at once
        where they can go, else through ``write`` (Hypercorn's ASGI send)."""

        async def write_now_or_later(chunk: bytes) -> None:
            await self.flush()
            if chunk:
                wrote = self(chunk)
                if wrote is Wrote.NOTHING:
                    await write(chunk)
                elif wrote is Wrote.SOME:
                    await self.flush()

        return write_now_or_later
