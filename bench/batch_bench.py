#!/usr/bin/env python
"""Batched signals against single POSTs, and one tree of roomkeeper against another.

    python bench/batch_bench.py                          # this tree: batch 1 and 8
    python bench/batch_bench.py --tree before=/tmp/old   # and another checkout, singles
    python bench/batch_bench.py --quick                  # a smoke run

Each round starts a fresh server per variant, pinned to core 0 (``taskset -c 0``), with
its default storage (SQLite, durable signals) in a temporary directory and its rate
limits lifted; bench/loadgen.py runs on core 1: ``throughput`` (32 POSTs in flight over 8
rooms of 4 peers: delivered signals/s and latency), then ``latency`` at 200 signals/s
offered (single POSTs). Variants run in turn, their order rotating each round; the table
gives medians over rounds and each variant's ratio to the first.

A variant is a tree (``this``, or ``--tree NAME=PATH``: a checkout whose ``src`` and
``actors`` are imported instead of the installed ones) and a batch size (``--batches``,
for this tree only; other trees run single POSTs).
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
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
LOADGEN = BENCH / "loadgen.py"
UNLIMITED = [
    *("--rate-burst", "1000000000", "--rate-refill", "1000000000"),
    *("--new-sessions-per-minute", "1000000000", "--new-sessions-burst", "1000000000"),
    *("--streams-per-address", "10000000"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cpu: str, command: list[str], pin: bool) -> list[str]:
    return ["taskset", "-c", cpu, *command] if pin and shutil.which("taskset") else command


def tree_env(path: Path | None, scratch: Path) -> dict[str, str]:
    """The environment that makes Python import roomkeeper from ``path`` (None: as
    installed)."""
    env = dict(os.environ)
    if path is None:
        return env
    links = scratch / f"tree-{abs(hash(path))}"
    links.mkdir(exist_ok=True)
    for name, target in (
        ("roomkeeper", path / "src" / "roomkeeper"),
        ("roomkeeper_actors", path / "actors"),
    ):
        link = links / name
        if not link.exists():
            link.symlink_to(target)
    env["PYTHONPATH"] = str(links)
    return env


def wait_ready(url: str, process: subprocess.Popen[bytes], seconds: float = 20) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited: {process.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("the server did not start")


def run_variant(
    args: argparse.Namespace, tree: Path | None, batch: int, scratch: Path
) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = Path(tempfile.mkdtemp(dir=scratch))
    env = tree_env(tree, scratch)
    server = subprocess.Popen(
        pinned(
            args.server_cpu,
            [
                sys.executable,
                "-m",
                "roomkeeper",
                "serve",
                "--port",
                str(port),
                "--storage",
                str(data / "rooms.sqlite3"),
                "--log-level",
                "warning",
                *UNLIMITED,
            ],
            args.pin,
        ),
        env=env,
        cwd=data,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(url, server)
        common = ["--url", url, "--pid", str(server.pid)]
        if args.quick:
            common.append("--quick")
        result: dict[str, Any] = {}
        modes = [("throughput", ["--duration", str(args.duration), "--batch", str(batch)])]
        if batch == 1:
            modes.append(("latency", ["--rate", "200", "--duration", str(args.duration)]))
        for mode, extra in modes:
            out = subprocess.run(
                pinned(
                    args.gen_cpu, [sys.executable, str(LOADGEN), mode, *common, *extra], args.pin
                ),
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            line = next(x for x in reversed(out.splitlines()) if x.startswith("RESULT "))
            result[mode] = json.loads(line[len("RESULT ") :])
        return result
    finally:
        server.terminate()
        server.wait(20)
        shutil.rmtree(data, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tree", action="append", default=[], help="NAME=PATH of another checkout")
    parser.add_argument("--batches", default="1,8", help="batch sizes for this tree")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--gen-cpu", default="1")
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.duration = 1, 2.0
    variants: list[tuple[str, Path | None, int]] = []
    for spec in args.tree:
        name, _, path = spec.partition("=")
        variants.append((f"{name}, single", Path(path).resolve(), 1))
    for size in (int(b) for b in args.batches.split(",")):
        variants.append((f"this, batch {size}" if size > 1 else "this, single", None, size))
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in variants}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        for r in range(args.rounds):
            order = variants[r % len(variants) :] + variants[: r % len(variants)]
            for name, tree, batch in order:
                result = run_variant(args, tree, batch, scratch)
                results[name].append(result)
                t = result["throughput"]
                print(
                    f"round {r + 1} {name}: {t['signals_per_s']} signals/s, "
                    f"p99 {t['latency_ms'].get('p99')} ms",
                    file=sys.stderr,
                )
    first = variants[0][0]

    def med(name: str, mode: str, key: str) -> float | None:
        values = []
        for result in results[name]:
            node: Any = result.get(mode)
            if mode == "latency" and node is not None:
                node = node["rates"][0]
            for part in key.split("."):
                node = None if node is None else node.get(part)
            if node is not None:
                values.append(float(node))
        return statistics.median(values) if values else None

    base = med(first, "throughput", "signals_per_s") or 1.0
    print(
        f"| variant | signals/s (median of {args.rounds}) | ratio | POSTs/s "
        "| throughput p99 ms | p50 / p99 ms at 200/s |"
    )
    print("|---|---|---|---|---|---|")
    for name, _, batch in variants:
        rate = med(name, "throughput", "signals_per_s") or 0.0
        at200 = (med(name, "latency", "latency_ms.p50"), med(name, "latency", "latency_ms.p99"))
        lat = "-" if at200[0] is None else f"{at200[0]:.2f} / {at200[1]:.2f}"
        print(
            f"| {name} | {rate:,.0f} | {rate / base:.2f} | {rate / batch:,.0f} | "
            f"{med(name, 'throughput', 'latency_ms.p99')} | {lat} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
