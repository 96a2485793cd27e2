#!/usr/bin/env python
"""Batched signals against single POSTs, and one tree of roomkeeper against another.

    python bench/batch_bench.py                          # this tree: batch 1 and 8
    python bench/batch_bench.py --tree before=/tmp/old   # and another checkout, singles
    python bench/batch_bench.py --quick                  # a smoke run
    python bench/batch_bench.py --tree before=/tmp/old --batches 1 --server-flags="--storage memory"

Each measurement starts a fresh server (bench/durability_bench.py's `Tree`), pinned to
core 0 (``taskset -c 0``), with its default storage (SQLite, durable signals) in a
temporary directory (``--server-flags`` adds flags to every server, ``--storage memory``
as in bench/relay_bench.py, say) and its rate limits lifted; bench/loadgen.py runs on core 1:
``throughput`` (32 POSTs in flight over 8 rooms of 4 peers: delivered signals/s and
latency), then, on another fresh server, ``latency`` at 200 signals/s offered (single
POSTs). Variants run in turn, their order rotating each round; the table gives medians
over rounds and each variant's ratio to the first.

A variant is a tree (``this``, or ``--tree NAME=PATH``: a checkout whose ``src`` and
``actors`` are imported instead of the installed ones) and a batch size (``--batches``,
for this tree only; other trees run single POSTs).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from durability_bench import ROOT, Tree, loadgen  # noqa: E402
from relay_bench import log  # noqa: E402


def run_variant(args: argparse.Namespace, tree: Tree, batch: int) -> dict[str, Any]:
    """``throughput`` with ``batch`` signals per POST, then (single POSTs) ``latency``
    at 200/s, each on a fresh server of ``tree``."""
    extra = ["--quick"] if args.quick else []
    result: dict[str, Any] = {}
    with tree.serving(args) as (url, pid):
        result["throughput"] = loadgen(
            args, "throughput", url, pid, [*extra, "--batch", str(batch)]
        )
    if batch == 1:
        with tree.serving(args) as (url, pid):
            result["latency"] = loadgen(args, "latency", url, pid, [*extra, "--rate", "200"])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tree", action="append", default=[], help="NAME=PATH of another checkout")
    parser.add_argument("--batches", default="1,8", help="batch sizes for this tree")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--gen-cpu", default="1")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--server-flags", default="", help="more flags for every server")
    args = parser.parse_args()
    flags = shlex.split(args.server_flags)
    if args.quick:
        args.rounds, args.duration = 1, 2.0
    variants: list[tuple[str, Tree, int]] = []
    for spec in args.tree:
        name, _, path = spec.partition("=")
        variants.append((f"{name}, single", Tree(name, Path(path).resolve(), flags), 1))
    this = Tree("this", ROOT, flags)
    for size in (int(b) for b in args.batches.split(",")):
        variants.append((f"this, batch {size}" if size > 1 else "this, single", this, size))
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in variants}
    for r in range(args.rounds):
        for name, tree, batch in variants[r % len(variants) :] + variants[: r % len(variants)]:
            result = run_variant(args, tree, batch)
            results[name].append(result)
            t = result["throughput"]
            p99 = t["latency_ms"].get("p99")
            log(f"round {r + 1} {name}: {t['signals_per_s']} signals/s, p99 {p99} ms")
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
