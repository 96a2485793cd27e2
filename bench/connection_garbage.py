#!/usr/bin/env python
"""What a closed connection leaves to the cyclic garbage collector.

An embedded server in this process, its clients raw sockets (nothing of a client library
in the heap): ``--rooms`` rooms of one session each, whose stream is read up to its
session event and then closed; then the rooms hibernate. Every object the collector then
finds unreachable is counted by type (``gc.DEBUG_SAVEALL``; the automatic collector is
off from the start, so nothing is collected before).

    python bench/connection_garbage.py [--rooms 300]
"""

from __future__ import annotations

import argparse
import collections
import gc
import tempfile

import trio

from roomkeeper.testing import embedded_config, serve_async


async def connect(host: str, port: int, room: str) -> None:
    async with await trio.open_tcp_stream(host, port) as sock:
        await sock.send_all(f"GET /api/connect?room={room} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        seen = b""
        while b"event: session" not in seen:
            seen += await sock.receive_some(1 << 16)


async def main(rooms: int) -> None:
    with tempfile.TemporaryDirectory() as data:
        config = embedded_config(
            storage=f"{data}/rooms.sqlite3",
            hibernate_after=0.5,
            grace=3600.0,
            new_sessions_per_minute=1e9,
            new_sessions_burst=1e9,
            streams_per_address=1_000_000,
        )
        async with serve_async(config) as server:
            host, port = server.url.removeprefix("http://").rsplit(":", 1)
            gc.collect()
            gc.disable()
            gc.set_debug(gc.DEBUG_SAVEALL)
            async with trio.open_nursery() as nursery:
                for n in range(rooms):
                    nursery.start_soon(connect, host, int(port), f"garbage-{n}")
            await trio.sleep(3)  # every close seen, every room hibernated
            found = gc.collect()
            gc.set_debug(0)
            kinds = collections.Counter(
                f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage
            )
            gc.garbage.clear()
    print(f"{rooms} rooms: {found} unreachable objects, {found / rooms:.1f} a room")
    for kind, count in kinds.most_common(25):
        print(f"{count:8d} {count / rooms:6.1f} a room  {kind}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rooms", type=int, default=300)
    trio.run(main, parser.parse_args().rooms)
