#!/usr/bin/env python
"""The latency of single SQLite commits at a steady rate: the storage path of a wake,
a durable signal or a hibernation, with the WAL's checkpoints where they happen.

    python bench/commit_tail.py                  # 3 rounds: 20,000 actors, 500 commits/s, 8 s
    python bench/commit_tail.py --rounds 1 --actors 2000 --seconds 2     # a smoke run

In one process: ``SQLiteBackend`` on a fresh file in the temporary directory; first
``--actors`` actors get a 200-byte and a 120-byte value (500 commits in flight), then
commits of one 150-byte value to actors picked across them are started at
``--rate`` a second, each timed from its call to its return. Prints p50, p99 and max
per round, their medians, the WAL file's size at the end and the background
checkpoints started (``-`` where the backend has none). Run it from another tree with
``PYTHONPATH=<tree>/src`` to compare; docs/benchmarks.md quotes a run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from roomkeeper.runtime import SQLiteBackend
from roomkeeper.runtime.ids import ActorId
from roomkeeper.runtime.storage import WriteSet


async def one_round(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rooms.sqlite3"
        backend = SQLiteBackend(path)
        await backend.open()
        try:
            for start in range(0, args.actors, 500):
                async with trio.open_nursery() as nursery:
                    for n in range(start, min(args.actors, start + 500)):
                        writes = WriteSet(puts={"s": os.urandom(200), "v": b"x" * 120})
                        nursery.start_soon(backend.commit, ActorId("rooms", f"r{n}"), writes)
            latencies: list[float] = []

            async def commit(n: int) -> None:
                writes = WriteSet(puts={"v": os.urandom(150)})
                started = time.perf_counter()
                await backend.commit(ActorId("rooms", f"r{n}"), writes)
                latencies.append(time.perf_counter() - started)

            async with trio.open_nursery() as nursery:
                for k in range(int(args.rate * args.seconds)):
                    nursery.start_soon(commit, (k * 7919) % args.actors)
                    await trio.sleep(1 / args.rate)
            latencies.sort()
            wal_file = trio.Path(f"{path}-wal")
            wal = (await wal_file.stat()).st_size if await wal_file.exists() else 0
            return {
                "p50": latencies[len(latencies) // 2] * 1e3,
                "p99": latencies[int(0.99 * (len(latencies) - 1))] * 1e3,
                "max": latencies[-1] * 1e3,
                "wal_mib": wal / 2**20,
                "checkpoints": getattr(backend, "checkpoints", None),  # (older trees: none)
            }
        finally:
            await backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--actors", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=500.0, help="commits started a second")
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}; {args.actors:,} actors, {args.rate:g}/s")
    rounds = []
    for r in range(args.rounds):
        result = trio.run(one_round, args)
        rounds.append(result)
        checkpoints = result["checkpoints"]
        print(
            f"round {r + 1}: p50 {result['p50']:.2f} ms, p99 {result['p99']:.2f} ms,"
            f" max {result['max']:.2f} ms, WAL {result['wal_mib']:.1f} MiB,"
            f" background checkpoints {'-' if checkpoints is None else checkpoints}"
        )
    med = {key: statistics.median(r[key] for r in rounds) for key in ("p50", "p99", "max")}
    print(f"median: p50 {med['p50']:.2f} ms, p99 {med['p99']:.2f} ms, max {med['max']:.2f} ms")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
