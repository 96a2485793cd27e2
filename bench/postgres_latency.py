#!/usr/bin/env python
"""Latency of each PostgresBackend call, one at a time, from trio (thread hop included).

    python bench/postgres_latency.py --dsn postgresql://user@127.0.0.1:5432/db [-n 500]

Uses (and leaves behind) the roomkeeper tables of that database, under actor names of its
own. Prints, per call, the median and 99th percentile in milliseconds over ``-n`` calls:
acquire of a new actor (one INSERT), commit of one small put (BEGIN, fence, actor row,
put, COMMIT), load, renew of 1 and of 100 leases (one UPDATE), release, and ``check``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import trio

from roomkeeper.runtime.ids import ActorId
from roomkeeper.runtime.storage import PostgresBackend, WriteSet


async def timed(n: int, call: Callable[[int], Awaitable[object]]) -> tuple[float, float]:
    took = []
    for i in range(n):
        start = time.perf_counter()
        await call(i)
        took.append((time.perf_counter() - start) * 1000)
    took.sort()
    return statistics.median(took), took[min(n - 1, int(n * 0.99))]


async def main(dsn: str, n: int) -> None:
    run = uuid.uuid4().hex[:8]
    db = PostgresBackend(dsn, node_id=f"bench-{run}", address="http://127.0.0.1:0")
    await db.open()
    try:
        actors = [ActorId("bench", f"{run}-{i}") for i in range(n)]
        epochs: dict[ActorId, int] = {}

        async def acquire(i: int) -> None:
            got = await db.acquire(actors[i])
            epochs[actors[i]] = got.epoch  # type: ignore[union-attr]

        print(f"{'call':24} {'median ms':>10} {'p99 ms':>8}   (n={n})")

        def show(name: str, figures: tuple[float, float]) -> None:
            print(f"{name:24} {figures[0]:10.3f} {figures[1]:8.3f}")

        show("acquire (new actor)", await timed(n, acquire))
        hundred = dict(list(epochs.items())[:100])
        rows: list[tuple[str, Callable[[int], Awaitable[object]]]] = [
            ("commit (one put)", lambda i: db.commit(actors[i], WriteSet(puts={"k": b"{}"}))),
            ("load", lambda i: db.load(actors[i])),
            ("renew (1 lease)", lambda i: db.renew({actors[i]: epochs[actors[i]]})),
            ("renew (100 leases)", lambda i: db.renew(hundred)),
            ("check", lambda i: db.check()),
            ("release", lambda i: db.release(actors[i], epochs[actors[i]])),
        ]
        for name, call in rows:
            show(name, await timed(n, call))
    finally:
        await db.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("-n", type=int, default=500)
    args = parser.parse_args()
    trio.run(main, args.dsn, args.n)
