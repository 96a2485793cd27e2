"""Idle event streams for the in-process benchmarks (stream_memory.py, heartbeat_cpu.py):
an embedded server's limits lifted, and raw-socket clients that read up to their session
event and then nothing more."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import trio

UNLIMITED: dict[str, Any] = {
    "streams_per_address": 10**7,
    "new_sessions_per_minute": 1e9,
    "new_sessions_burst": 1e9,
}
"""``serve_async`` settings that let one address open every stream the run needs."""


async def open_stream(port: int, room: str) -> trio.socket.SocketType:
    """A stream to ``room``, read up to its session event: its socket, open and unread."""
    sock = trio.socket.socket()
    await sock.connect(("127.0.0.1", port))
    await sock.send(b"GET /api/connect?room=%s HTTP/1.1\r\nHost: x\r\n\r\n" % room.encode())
    seen = b""
    while b"event: session" not in seen:
        seen += await sock.recv(65536)
    return sock


async def open_idle_streams(port: int, numbers: Iterable[int]) -> list[trio.socket.SocketType]:
    """One stream per number ``i``, in room ``r{i // 2}`` (rooms of 2), one at a time;
    their sockets, open and unread."""
    return [await open_stream(port, f"r{i // 2}") for i in numbers]
