#!/usr/bin/env python
"""Python heap kept per hibernated room (tracemalloc), by package and by line, in one
process.

    python bench/hibernated_heap.py [N]     # N rooms (default 5,000) of one session each

An embedded server (``roomkeeper.testing.serve_async``) on SQLite with
``hibernate_after=1`` and ``grace=3600``, as bench/relay_bench.py's hibernation part: each
room gets one connect whose client reads its session event and closes, so the room keeps
a disconnected session (and its expiry alarm) and goes to storage 1 s later. 200 rooms
warm up first; the heap kept per room is measured after ``gc.collect()`` once all have
hibernated. To compare another tree, put links named ``roomkeeper`` and
``roomkeeper_actors`` to its ``src/roomkeeper`` and ``actors`` in a folder and run with
``PYTHONPATH=<folder>`` (bench/durability_bench.py's `Tree` does the same); the
by-package lines then count that tree's files under "stdlib and other".
docs/benchmarks.md quotes a run.
"""

from __future__ import annotations

import gc
import sys
import tempfile
import tracemalloc
from pathlib import Path

import trio
from idle_streams import UNLIMITED, open_stream
from stream_memory import heap_by_package

from roomkeeper.testing import serve_async


async def one_room(port: int, number: int) -> None:
    (await open_stream(port, f"h{number}")).close()


async def make_rooms(port: int, numbers: range) -> None:
    for start in range(numbers.start, numbers.stop, 50):
        async with trio.open_nursery() as nursery:
            for number in range(start, min(start + 50, numbers.stop)):
                nursery.start_soon(one_room, port, number)


async def main(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        storage = str(Path(tmp) / "rooms.sqlite3")
        async with serve_async(
            storage=storage, hibernate_after=1, grace=3600, **UNLIMITED
        ) as server:
            port = int(server.url.rsplit(":", 1)[1])
            await make_rooms(port, range(200))
            await trio.sleep(3)  # the warm-up rooms hibernate
            gc.collect()
            tracemalloc.start(1)
            before = tracemalloc.take_snapshot()
            await make_rooms(port, range(200, 200 + count))
            await trio.sleep(4)
            gc.collect()
            after = tracemalloc.take_snapshot()
    by_package = heap_by_package(before, after)
    kept = sum(by_package.values()) / count
    print(f"{count:,} hibernated rooms; heap kept per room: {kept:.0f} B")
    for name, size in by_package.most_common():
        if abs(size) >= count:  # 1 B a room or more
            print(f"  {name:28} {size / count:6.0f} B")
    print("largest lines:")
    for diff in after.compare_to(before, "lineno")[:8]:
        frame = diff.traceback[0]
        where = "/".join(Path(frame.filename).parts[-2:])
        print(f"  {diff.size_diff / count:6.0f} B  {where}:{frame.lineno}")


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
