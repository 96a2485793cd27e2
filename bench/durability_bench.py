#!/usr/bin/env python
"""The cost of durable signals (issue 11 item 8): this tree against another commit, side
by side in one run, on SQLite (the default storage).

    python bench/durability_bench.py --before cd91f5c            # 3 rounds, ~6 minutes
    python bench/durability_bench.py --before cd91f5c --rounds 5 --save FILE
    python bench/durability_bench.py --storage-only                # SQLite commits/s

``--before`` is checked out (``git worktree add --detach``) into a temporary folder and
run from there (``PYTHONPATH``), with this tree's venv. Each server runs pinned to core 0
and bench/loadgen.py to core 1, as in bench/relay_bench.py; rounds alternate which server
goes first. Per round and server, on a fresh SQLite file: ``throughput`` (a closed loop
of 32 POSTs in flight over 8 rooms of 4 peers: delivered signals/s) and ``latency`` at a
fixed 200 signals/s (p50, p99), and the server's CPU time per signal at full load. The
table gives the median over rounds of each figure.
``--storage-only`` measures instead what a durable signal adds to the storage path: one
small put per signal through this tree's ``SQLiteBackend.commit`` (a history-sized row,
``--concurrency`` commits in flight, as from that many rooms), commits/s and how many
shared a transaction.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from relay_bench import UNLIMITED, log, pin, result_of  # noqa: E402

ROOT = BENCH.parent
LOADGEN = BENCH / "loadgen.py"


class Tree:
    """One version of roomkeeper to serve: its checkout (both ``src/roomkeeper`` and the
    application, ``actors/``, are imported from it) and extra flags."""

    def __init__(self, label: str, root: Path, flags: list[str]) -> None:
        self.label, self.root, self.flags = label, root, flags

    @contextlib.contextmanager
    def serving(self, args: argparse.Namespace) -> Iterator[tuple[str, int]]:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [*pin(args.server_cpu, args), sys.executable, "-m", "roomkeeper", "serve"]
            cmd += ["--storage", str(Path(tmp) / "rooms.sqlite3"), "--port", "0"]
            cmd += ["--log-level", "warning", *UNLIMITED, *self.flags]
            packages = Path(tmp) / "packages"  # what PYTHONPATH imports, ahead of the install
            packages.mkdir()
            (packages / "roomkeeper").symlink_to(self.root / "src" / "roomkeeper")
            (packages / "roomkeeper_actors").symlink_to(self.root / "actors")
            env = {**os.environ, "PYTHONPATH": str(packages)}
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
            try:
                assert proc.stdout is not None
                line = proc.stdout.readline()
                if "serving on" not in line:
                    raise RuntimeError(f"{self.label} did not start: {line!r}")
                yield line.split("serving on ", 1)[1].strip(), proc.pid
            finally:
                proc.terminate()
                proc.wait(30)


def loadgen(args: argparse.Namespace, mode: str, url: str, pid: int, extra: list[str]) -> Any:
    cmd = [*pin(args.gen_cpu, args), sys.executable, str(LOADGEN), mode, "--url", url]
    cmd += ["--pid", str(pid), "--duration", str(args.duration), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"loadgen {mode} failed:\n{done.stderr[-3000:]}")
    return result_of(done.stdout, mode)


def measure(args: argparse.Namespace, tree: Tree) -> dict[str, float]:
    with tree.serving(args) as (url, pid):
        top = loadgen(args, "throughput", url, pid, [])
    with tree.serving(args) as (url, pid):
        (fixed,) = loadgen(args, "latency", url, pid, ["--rate", str(args.rate)])["rates"]
    figures = {
        "signals_per_s": top["signals_per_s"],
        # CPU time per signal hardly moves when other processes take the CPU away.
        "server_cpu_us_per_signal": round(top["server_cpu_pct"] * 1e4 / top["signals_per_s"]),
        "p99_ms_at_rate": fixed["latency_ms"]["p99"],
        "p50_ms_at_rate": fixed["latency_ms"]["p50"],
    }
    log(f"  {tree.label}: {figures}")
    return figures


def commit_rate(concurrency: int, seconds: float) -> dict[str, float]:
    """Commits/s of one small put each, ``concurrency`` actors committing in a loop."""
    import trio

    from roomkeeper.runtime import SQLiteBackend
    from roomkeeper.runtime.ids import ActorId
    from roomkeeper.runtime.storage import WriteSet

    async def run() -> dict[str, float]:
        with tempfile.TemporaryDirectory() as tmp:
            backend = SQLiteBackend(Path(tmp) / "rooms.sqlite3")
            await backend.open()
            done = 0
            value = b'{"from":"00000000-0000-4000-8000-000000000000","signal":{"candidate":"x"}}'

            async def actor(n: int) -> None:
                nonlocal done
                me = ActorId("rooms", f"room-{n}")
                for i in range(10**9):
                    await backend.commit(me, WriteSet(puts={f"h/{n}/{i}": value}))
                    done += 1

            start = trio.current_time()
            with trio.move_on_after(seconds):
                async with trio.open_nursery() as nursery:
                    for n in range(concurrency):
                        nursery.start_soon(actor, n)
            took = trio.current_time() - start
            await backend.close()
            return {
                "commits_per_s": round(done / took),
                "commits_per_transaction": round(done / max(backend.transactions, 1), 1),
            }

    return trio.run(run)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", help="git commit to compare against (required)")
    parser.add_argument("--after-flags", default="", help="server flags for this tree")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--rate", type=int, default=200, help="fixed offered rate, signals/s")
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--gen-cpu", default="1")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument("--save", type=Path, help="raw figures as JSON")
    parser.add_argument("--storage-only", action="store_true", help="SQLite commits/s only")
    parser.add_argument("--concurrency", type=int, default=32, help="--storage-only actors")
    args = parser.parse_args()
    log(f"load average at start: {os.getloadavg()}")
    if args.storage_only:
        for concurrency in (1, args.concurrency):
            print(f"{concurrency} in flight: {commit_rate(concurrency, args.duration)}")
        return 0
    if not args.before:
        parser.error("--before is required (or --storage-only)")
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "before"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(old), args.before],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        try:
            trees = [
                Tree(f"before ({args.before})", old, []),
                Tree("after (this tree)", ROOT, shlex.split(args.after_flags)),
            ]
            runs: dict[str, list[dict[str, float]]] = {t.label: [] for t in trees}
            for n in range(args.rounds):
                log(f"round {n + 1}/{args.rounds}")
                for tree in trees if n % 2 == 0 else trees[::-1]:
                    runs[tree.label].append(measure(args, tree))
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, check=False
            )
    before, after = (runs[t.label] for t in trees)
    print(f"| median of {args.rounds} rounds | before | after | after/before |")
    print("|---|---|---|---|")
    for key in before[0]:
        b = statistics.median(r[key] for r in before)
        a = statistics.median(r[key] for r in after)
        print(f"| {key} | {b:g} | {a:g} | {a / b:.2f} |")
    if args.save:
        args.save.write_text(json.dumps(runs, indent=1))
    log(f"load average at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
