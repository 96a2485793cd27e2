#!/usr/bin/env python
"""Two checkouts of roomkeeper side by side: streams opened per second (``loadgen.py
capacity``) or signals relayed per second (``loadgen.py throughput``), with the server's
CPU per operation. The trees take turns (ABBA...), each round on a fresh server pinned
to one core and the load generator to the other; medians and the ratio new/base.

    git worktree add /tmp/base <commit>
    python bench/compare_trees.py --base /tmp/base --new . --mode capacity --rounds 4

Both trees run with this interpreter and its packages, from their own ``src/``. The CPU
per operation counts all the server's CPU while the load ran (with ``throughput``, its
warm-up and set-up too) over the operations measured: compare it between the trees only.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import relay_bench
from loadgen import proc_cpu


def one_round(tree: Path, args: argparse.Namespace) -> tuple[float, float]:
    """(operations per second, server CPU ms per operation) on a fresh server of ``tree``."""
    os.environ["PYTHONPATH"] = f"{tree / 'src'}{os.pathsep}{tree}"  # for the server's process
    bench = argparse.Namespace(no_pin=args.no_pin, server_cpu="0", gen_cpu="1", quick=False)
    server = relay_bench.Server(relay_bench.RK, bench)
    with relay_bench.running(server):
        cpu = proc_cpu(server.pid)
        if args.mode == "capacity":
            extra = ["--streams", str(args.streams), "--concurrency", "64"]
        else:
            extra = ["--duration", str(args.duration), "--warmup", "2"]
        result = relay_bench.loadgen(bench, args.mode, server, extra, 600)
        cpu = proc_cpu(server.pid) - cpu
    if args.mode == "capacity":
        return result["streams_per_s"], 1000 * cpu / result["streams"]
    delivered = result["signals_per_s"] * args.duration
    return result["signals_per_s"], 1000 * cpu / max(delivered, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="a checkout (its top folder)")
    parser.add_argument("--new", type=Path, required=True, help="another checkout")
    parser.add_argument("--mode", choices=["capacity", "throughput"], default="capacity")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--streams", type=int, default=10_000, help="capacity: streams opened")
    parser.add_argument("--duration", type=float, default=8.0, help="throughput: seconds")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    args = parser.parse_args()
    trees = {"base": args.base.resolve(), "new": args.new.resolve()}
    unit = "opens/s" if args.mode == "capacity" else "signals/s"
    results: dict[str, list[tuple[float, float]]] = {"base": [], "new": []}
    for n in range(args.rounds):
        order = ["base", "new"] if n % 2 == 0 else ["new", "base"]
        for name in order:
            rate, cpu = one_round(trees[name], args)
            results[name].append((rate, cpu))
            print(f"round {n + 1} {name}: {rate:.1f} {unit}, server {cpu:.3f} ms CPU each")
    medians = {
        name: (statistics.median(r for r, _ in runs), statistics.median(c for _, c in runs))
        for name, runs in results.items()
    }
    for name, (rate, cpu) in medians.items():
        print(f"{name} median: {rate:.1f} {unit}, server {cpu:.3f} ms CPU each ({trees[name]})")
    ratio = medians["new"][0] / medians["base"][0]
    cpu_ratio = medians["new"][1] / medians["base"][1]
    print(f"new/base: {ratio:.3f}x {unit}, {cpu_ratio:.3f}x CPU each")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
