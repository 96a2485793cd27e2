#!/usr/bin/env python
"""CPU per heartbeat of idle event streams, in one process.

    python bench/heartbeat_cpu.py [--streams N] [--seconds S] [--profile]

An embedded server (``roomkeeper.testing.serve_async``, rooms in memory that never
hibernate) with a heartbeat every second, and N raw-socket clients (rooms of 2) in the
same trio loop that never read after their session event. Once they are open, the
process's CPU time over S seconds is all heartbeats (the clients do nothing). Prints the
share of a core and the CPU per heartbeat; ``--profile`` adds cProfile's top functions.
Run it from another tree with ``PYTHONPATH=<tree>/src:<tree>`` to compare.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import trio
from idle_streams import UNLIMITED, open_idle_streams

from roomkeeper.testing import serve_async


async def main(args: argparse.Namespace) -> None:
    async with serve_async(heartbeat=1.0, hibernate_after=3600, **UNLIMITED) as server:
        port = int(server.url.rsplit(":", 1)[1])
        held = await open_idle_streams(port, range(args.streams))
        await trio.sleep(3)
        profile = cProfile.Profile() if args.profile else None
        started = time.process_time()
        if profile is not None:
            profile.enable()
        await trio.sleep(args.seconds)
        cpu = time.process_time() - started
        if profile is not None:
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        per_heartbeat = cpu / (args.streams * args.seconds) * 1e6
        print(
            f"{args.streams} idle streams, a heartbeat a second: "
            f"{cpu / args.seconds * 100:.1f} % of a core, {per_heartbeat:.0f} µs per heartbeat"
        )
        for sock in held:
            sock.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--profile", action="store_true")
    trio.run(main, parser.parse_args())
