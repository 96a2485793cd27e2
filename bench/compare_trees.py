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
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from loadgen import proc_cpu
from relay_bench import UNLIMITED

BENCH = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def one_round(tree: Path, args: argparse.Namespace, port: int) -> tuple[float, float]:
    """(operations per second, server CPU ms per operation) on a fresh server of ``tree``."""
    pin = ["taskset", "-c"] if shutil.which("taskset") and not args.no_pin else None
    env = dict(os.environ, PYTHONPATH=f"{tree / 'src'}{os.pathsep}{tree}")
    serve = [sys.executable, "-m", "roomkeeper", "serve", "--storage", "memory"]
    serve += ["--log-level", "warning", "--port", str(port), *UNLIMITED]
    server = subprocess.Popen(
        [*pin, "0", *serve] if pin else serve,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(args.startup)
        cpu0 = proc_cpu(server.pid)
        load = [sys.executable, str(BENCH / "loadgen.py"), args.mode]
        load += ["--url", f"http://127.0.0.1:{port}", "--protocol", "roomkeeper"]
        load += ["--pid", str(server.pid)]
        if args.mode == "capacity":
            load += ["--streams", str(args.streams), "--concurrency", "64"]
        else:
            load += ["--duration", str(args.duration), "--warmup", "2"]
        done = subprocess.run(
            [*pin, "1", *load] if pin else load, capture_output=True, text=True, check=False
        )
        cpu = proc_cpu(server.pid) - cpu0
    finally:
        server.terminate()
        server.wait(30)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"loadgen failed on {tree}:\n{done.stderr[-2000:]}")
    result = json.loads(lines[-1][7:])
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
    parser.add_argument("--startup", type=float, default=2.5, help="seconds for a server to start")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    args = parser.parse_args()
    trees = {"base": args.base.resolve(), "new": args.new.resolve()}
    unit = "opens/s" if args.mode == "capacity" else "signals/s"
    results: dict[str, list[tuple[float, float]]] = {"base": [], "new": []}
    for n in range(args.rounds):
        order = ["base", "new"] if n % 2 == 0 else ["new", "base"]
        for name in order:
            rate, cpu = one_round(trees[name], args, free_port())
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
