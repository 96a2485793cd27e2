#!/usr/bin/env python
"""Python heap per idle event stream, by package (tracemalloc), in one process.

    python bench/stream_memory.py [N]      # N idle streams (default 2,000), rooms of 2

An embedded server (``roomkeeper.testing.serve_async``) and N raw-socket clients in the
same trio loop; 100 streams warm up first. Prints the heap kept per stream after
``gc.collect()``, grouped by the package that allocated it. The client's own sockets
count too (a few hundred bytes, under trio); docs/benchmarks.md quotes a run.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from collections import Counter

import trio
from idle_streams import UNLIMITED, open_idle_streams

from roomkeeper.testing import serve_async


def package(filename: str) -> str:
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0]
    if "attrs generated methods trio" in filename:
        return "trio"
    if "/actors/" in filename:
        return "roomkeeper_actors"
    if "/src/roomkeeper/" in filename:  # by module folder: runtime, http, ...
        rest = filename.split("/src/roomkeeper/", 1)[1]
        return "roomkeeper/" + rest.split("/", 1)[0].removesuffix(".py")
    return "stdlib and other"


def heap_by_package(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> Counter[str]:
    """The heap grown from ``before`` to ``after``, by the package that allocated it."""
    by_package: Counter[str] = Counter()
    for stat in after.compare_to(before, "filename"):
        by_package[package(str(stat.traceback[0].filename))] += stat.size_diff
    return by_package


async def main(count: int) -> None:
    async with serve_async(heartbeat=1000, **UNLIMITED) as server:
        port = int(server.url.rsplit(":", 1)[1])
        held = await open_idle_streams(port, range(100))
        await trio.sleep(1)
        gc.collect()
        tracemalloc.start(10)
        before = tracemalloc.take_snapshot()
        held += await open_idle_streams(port, range(100, 100 + count))
        await trio.sleep(1)
        gc.collect()
        by_package = heap_by_package(before, tracemalloc.take_snapshot())
        print(f"{count} idle streams: {sum(by_package.values()) / count:,.0f} B of heap each")
        for name, size in by_package.most_common():
            print(f"  {size / count:8,.0f} B  {name}")
        for sock in held:
            sock.close()


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 2_000)
