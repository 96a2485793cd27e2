#!/usr/bin/env python
"""Benchmarks of the actor runtime (``roomkeeper.runtime``), on the real trio clock.

    python bench/runtime_bench.py            # full: about 2 minutes on a quiet machine
    python bench/runtime_bench.py --quick    # 1 small round, a smoke test for CI
    python bench/runtime_bench.py --sections messages,wake   # skip the 100k-actor part

It prints Markdown tables of medians over the rounds of one run (5 rounds; section 4's
runs are 100,000 actors each, so it makes 1 plain run and 1 under tracemalloc by default,
``--memory-rounds N`` for more):

1. messages per second through ONE trivial actor: sequential asks from one task, asks
   from N concurrent tasks, and tells (with ask latency p50/p99);
2. asks through one actor that writes one key per message, on the memory backend and on
   SQLite (``normal`` and ``full`` durability): the cost of the output gate;
3. wake-from-hibernation latency: many hibernated actors holding ~1 KB in 10 keys, each
   woken by one ask (load from storage, build the instance, reply), on SQLite and memory;
4. memory per hibernated actor: activate 100,000 actors on SQLite (so the stored state is
   on disk, not in the heap), let them all hibernate, then measure what stays behind in
   the Python heap (tracemalloc) and in the process (RSS), each in a fresh interpreter.

Throughputs are given per wall-clock second and per CPU-second of the process (all its
threads): on a shared machine the second hardly moves when other processes take the CPU.

By default the process pins itself to one CPU (``os.sched_setaffinity``, the same as
``taskset -c 0``; ``--cpu`` picks another, ``--no-pin`` leaves it alone); the SQLite
worker threads share that CPU, so every figure is "one core".
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import dataclasses
import gc
import json
import os
import platform
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import trio

from roomkeeper.runtime import (
    Actor,
    ActorStub,
    ActorSystem,
    Binding,
    MemoryBackend,
    RuntimeConfig,
    SQLiteBackend,
    StorageBackend,
    StorageError,
    open_actor_system,
)

NS = "bench"
SECTIONS = ("messages", "wake", "memory")
T = TypeVar("T")
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


# -- actors and codec -------------------------------------------------------------------
class Echo(Actor):
    """Returns the message; touches no storage (the runtime's floor)."""

    async def on_message(self, message: Any) -> Any:
        return message


class Writer(Actor):
    """Writes one key per message, so every ask waits on a commit (the output gate)."""

    async def on_message(self, message: Any) -> Any:
        self.ctx.storage.put("n", message)
        return message


VALUE = {"text": "x" * 64, "n": 123456789, "ok": True}  # ~100 bytes of JSON


class Stateful(Actor):
    """``fill`` stores ``message[1]`` keys of ~100 bytes; ``seed`` one small value;
    anything else reads one key back (what a woken actor typically does first)."""

    async def on_message(self, message: Any) -> Any:
        if isinstance(message, list) and message[0] == "fill":
            for k in range(message[1]):
                self.ctx.storage.put(f"k{k}", VALUE)
            return None
        if message == "seed":
            self.ctx.storage.put("v", 1)
            return None
        return self.ctx.storage.get("k0")


class NullCodec:
    """The benchmarks open no streams; the runtime still wants a codec."""

    def preamble(self) -> bytes:
        return b""

    def encode(self, event_id: int, event: str, data: bytes) -> bytes:
        return data

    def heartbeat(self, now: float) -> tuple[str, bytes]:
        return "hb", b""

    def goodbye(self) -> tuple[str, bytes]:
        return "bye", b""


def open_system(
    actor: type[Actor], backend: StorageBackend, *, hibernate_after: float = 60.0
) -> AbstractAsyncContextManager[ActorSystem]:
    return open_actor_system(
        {NS: Binding(actor)},
        codec=NullCodec(),
        backend=backend,
        config=RuntimeConfig(hibernate_after=hibernate_after),
    )


# -- parameters and results ---------------------------------------------------------------
@dataclass(frozen=True)
class Params:
    rounds: int
    asks: int  # per round, for each of sequential / concurrent / tell
    askers: int
    writes: int  # per round, memory and SQLite normal
    writes_full: int  # per round, SQLite full (an fsync per commit)
    wake_actors: int  # woken once per round
    wake_keys: int
    memory_actors: int
    memory_rounds: int  # fresh interpreters measuring time and RSS
    trace_rounds: int  # fresh interpreters under tracemalloc (slower; bytes only)


FULL = Params(
    rounds=5,
    asks=40_000,
    askers=10,
    writes=4_000,
    writes_full=500,
    wake_actors=2_000,
    wake_keys=10,
    memory_actors=100_000,
    memory_rounds=1,
    trace_rounds=1,
)
QUICK = Params(
    rounds=1,
    asks=2_000,
    askers=10,
    writes=300,
    writes_full=30,
    wake_actors=100,
    wake_keys=10,
    memory_actors=2_000,
    memory_rounds=1,
    trace_rounds=1,
)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` in [0, 100]."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Rate:
    """One round of a throughput measurement, with per-ask latencies if it has them.
    ``per_cpu_second`` divides by the process's CPU time (all threads) instead of wall
    time: it hardly moves when other processes take the CPU away."""

    per_second: float
    per_cpu_second: float
    latencies: list[float]


class Meter:
    """Wall and CPU time of one round."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def rate(self, n: int, latencies: list[float]) -> Rate:
        wall = time.perf_counter() - self.wall
        cpu = time.process_time() - self.cpu
        return Rate(n / wall, n / cpu if cpu > 0 else float("inf"), latencies)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


# -- 1 and 2: throughput through one actor ----------------------------------------------
async def sequential_asks(stub: ActorStub, n: int) -> Rate:
    clock = time.perf_counter
    latencies = [0.0] * n
    meter = Meter()
    for i in range(n):
        sent = clock()
        await stub.ask(i)
        latencies[i] = clock() - sent
    return meter.rate(n, latencies)


async def concurrent_asks(stub: ActorStub, n: int, askers: int) -> Rate:
    clock = time.perf_counter
    latencies: list[float] = []
    each = n // askers

    async def asker() -> None:
        mine = [0.0] * each
        for i in range(each):
            sent = clock()
            await stub.ask(i)
            mine[i] = clock() - sent
        latencies.extend(mine)

    meter = Meter()
    async with trio.open_nursery() as nursery:
        for _ in range(askers):
            nursery.start_soon(asker)
    return meter.rate(each * askers, latencies)


async def tells(stub: ActorStub, n: int, batch: int) -> Rate:
    """Tell in batches of ``batch`` (under the mailbox bound), each followed by an ask
    that returns once the batch is handled; the barrier asks are not counted."""
    meter = Meter()
    for i in range(n):
        stub.tell(i)
        if (i + 1) % batch == 0:
            await stub.ask(None)
    await stub.ask(None)
    return meter.rate(n, [])


async def one_actor_rounds(
    actor: type[Actor],
    make_backend: Callable[[], StorageBackend],
    run: Callable[[ActorStub], Awaitable[Rate]],
    rounds: int,
) -> list[Rate]:
    out = []
    async with open_system(actor, make_backend()) as system:
        stub = system.get(NS, "one")
        for _ in range(200):  # activate and warm up
            await stub.ask(0)
        for _ in range(rounds):
            gc.collect()
            out.append(await run(stub))
    return out


# -- 3: wake from hibernation -----------------------------------------------------------
async def wait_all_hibernated(system: ActorSystem) -> float:
    """Poll (the runtime has no public "idle" event) until no actor is live; the seconds
    it took. Fails after two minutes."""
    start = time.perf_counter()
    with trio.fail_after(120):
        while True:
            if not any(ns.live for ns in system.snapshot()):
                return time.perf_counter() - start
            await trio.sleep(0.01)


@dataclass
class WakeRound:
    wakes: list[float]
    warm: list[float]


async def wake_rounds(backend: StorageBackend, p: Params, idle: float) -> list[WakeRound]:
    out = []
    clock = time.perf_counter
    async with open_system(Stateful, backend, hibernate_after=idle) as system:
        stubs = [system.get(NS, f"room-{i}") for i in range(p.wake_actors)]
        for stub in stubs:
            await stub.ask(["fill", p.wake_keys])
        order = list(range(len(stubs)))
        rng = random.Random(7)
        for _ in range(p.rounds):
            await wait_all_hibernated(system)
            gc.collect()
            rng.shuffle(order)
            wakes, warm = [], []
            for i in order:
                stub = stubs[i]
                sent = clock()
                await stub.ask("read")  # hibernated: load, build, handle, reply
                woke = clock()
                await stub.ask("read")  # live now: the same ask without the wake
                wakes.append(woke - sent)
                warm.append(clock() - woke)
            out.append(WakeRound(wakes, warm))
    return out


# -- 4: memory per hibernated actor (run in a fresh interpreter) -------------------------
def rss_bytes() -> int:
    """The resident set size now (Linux); elsewhere the peak, which is all there is."""
    try:
        fd = os.open("/proc/self/statm", os.O_RDONLY)
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    try:
        return int(os.read(fd, 256).split()[1]) * PAGE
    finally:
        os.close(fd)


def malloc_trim() -> bool:
    """Ask glibc to hand freed heap back to the OS (so RSS shows what is still used)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        return bool(ctypes.CDLL(name).malloc_trim(0))
    except (OSError, AttributeError):
        return False


async def activate_many(system: ActorSystem, prefix: str, n: int, workers: int) -> None:
    """``n`` asks from ``workers`` tasks; names are made on the fly, so that the benchmark
    holds none of them once the actors hibernate."""
    it = (f"{prefix}-{i}" for i in range(n))

    async def worker() -> None:
        for name in it:
            await system.get(NS, name).ask("seed")

    async with trio.open_nursery() as nursery:
        for _ in range(workers):
            nursery.start_soon(worker)


class InlineSQLiteBackend(SQLiteBackend):
    """The SQLite backend with its calls made on the trio thread, for the tracemalloc run
    only: the same SQL and the same runtime code, without the worker-thread round trips
    that tracemalloc makes three times slower (they keep nothing per actor anyway)."""

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        db = self._db
        if db is None:
            raise StorageError("storage is not open")
        await trio.lowlevel.checkpoint()
        try:
            return fn(db)
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.rollback()
            raise StorageError(f"storage failed: {exc}") from exc


def site_name(filename: str, line: int) -> str:
    """``folder/file.py:line`` of an allocation site; this script's are actor names."""
    name = f"{'/'.join(Path(filename).parts[-2:])}:{line}"
    if Path(filename).resolve() == Path(__file__).resolve():
        name += " (actor names)"
    return name


async def memory_child(
    n: int, trace: bool, idle: float, workdir: str, on_disk: bool = True
) -> dict[str, Any]:
    """Activate ``n`` actors that each store one small value (on SQLite, or in memory with
    ``on_disk=False``), let them hibernate and report what stayed behind. A warm-up batch
    goes first, so that the baseline already has the connection, the worker thread and
    every code path in place; the benchmark itself keeps nothing per actor."""
    if trace:
        tracemalloc.start(1)
    warmup = 1_000
    result: dict[str, Any] = {"n": n, "trace": trace}
    path = Path(workdir) / "memory.sqlite3"
    backend: StorageBackend = MemoryBackend()
    if on_disk:
        backend = InlineSQLiteBackend(path) if trace else SQLiteBackend(path)
    async with open_system(Stateful, backend, hibernate_after=idle) as system:
        await activate_many(system, "warm", warmup, 16)
        await wait_all_hibernated(system)
        peak = {"rss": 0, "live": 0}
        gc.collect()
        malloc_trim()
        base_rss = peak["rss"] = rss_bytes()
        if trace:
            before = tracemalloc.take_snapshot()
            tracemalloc.reset_peak()
            base_traced = tracemalloc.get_traced_memory()[0]

        async def sample() -> None:
            while True:
                peak["rss"] = max(peak["rss"], rss_bytes())
                peak["live"] = max(peak["live"], sum(ns.live for ns in system.snapshot()))
                await trio.sleep(0.05)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample)
            start, cpu = time.perf_counter(), time.process_time()
            await activate_many(system, "actor", n, 16)
            result["activate_s"] = time.perf_counter() - start
            result["activate_cpu_s"] = time.process_time() - cpu
            result["hibernate_s"] = await wait_all_hibernated(system)
            nursery.cancel_scope.cancel()
        result["hibernated"] = system.snapshot()[0].hibernated - warmup
        result["peak_live"] = peak["live"]
        gc.collect()
        if trace:
            current, peak_traced = tracemalloc.get_traced_memory()
            result["heap_growth"] = current - base_traced
            result["peak_heap_growth"] = peak_traced - base_traced
            after = tracemalloc.take_snapshot()
            tracemalloc.stop()
            result["sites"] = [
                (site_name(s.traceback[0].filename, s.traceback[0].lineno), s.size_diff)
                for s in after.compare_to(before, "lineno")[:8]
                if s.size_diff >= n / 2 and s.traceback[0].filename != tracemalloc.__file__
            ]
            del before, after
        result["rss_growth"] = rss_bytes() - base_rss
        result["peak_rss_growth"] = max(peak["rss"], rss_bytes()) - base_rss
        result["trimmed"] = malloc_trim()
        result["rss_growth_trimmed"] = rss_bytes() - base_rss
    return result


def run_memory_child(n: int, *, trace: bool, idle: float, on_disk: bool = True) -> dict[str, Any]:
    """``memory_child`` in a fresh interpreter (it inherits this process's CPU affinity)."""
    with tempfile.TemporaryDirectory(prefix="rk-bench-") as workdir:
        cmd = [sys.executable, __file__, "--memory-child", str(n), "--idle", str(idle)]
        cmd += ["--workdir", workdir, "--no-pin"]
        if trace:
            cmd.append("--trace")
        if not on_disk:
            cmd.append("--in-memory")
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"memory child failed:\n{done.stderr}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        if result["hibernated"] < n:
            raise RuntimeError(f"only {result['hibernated']} of {n} actors hibernated")
        return result


# -- report -------------------------------------------------------------------------------
def machine_line() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cpus} CPUs ({model}), {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}, trio {trio.__version__}, "
        f"SQLite {sqlite3.sqlite_version}"
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    aligned = [">" if i else "<" for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        padded = (f"{c:{a}{w}}" for c, a, w in zip(cells, aligned, widths, strict=True))
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(("-" * (w + 1)) + (":" if i else "-") for i, w in enumerate(widths))
    return "\n".join([line(headers), rule + "|", *(line(r) for r in rows)])


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f}"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def per_s(rate: float) -> str:
    return f"{rate:,.0f}"


def spread(values: Sequence[float]) -> str:
    return f"{min(values):,.0f} - {max(values):,.0f}"


def throughput_row(name: str, rounds: list[Rate]) -> list[str]:
    rates = [r.per_second for r in rounds]
    p50 = p99 = "-"
    if rounds[0].latencies:
        p50 = us(median([percentile(r.latencies, 50) for r in rounds]))
        p99 = us(median([percentile(r.latencies, 99) for r in rounds]))
    cpu = median([r.per_cpu_second for r in rounds])
    return [name, per_s(median(rates)), spread(rates), per_s(cpu), p50, p99]


def wake_row(name: str, rounds: list[WakeRound]) -> list[str]:
    def m(q: float, attr: str = "wakes") -> str:
        return ms(median([percentile(getattr(r, attr), q) for r in rounds]))

    return [
        name,
        f"{len(rounds[0].wakes):,} x {len(rounds)}",
        m(50),
        m(90),
        m(99),
        ms(median([max(r.wakes) for r in rounds])),
        m(50, "warm"),
        m(99, "warm"),
    ]


async def run_all(p: Params, tmp: Path, sections: set[str]) -> None:
    def memory() -> StorageBackend:
        return MemoryBackend()

    counter = iter(range(1_000_000))

    def sqlite(durability: str = "normal") -> Callable[[], StorageBackend]:
        return lambda: SQLiteBackend(tmp / f"bench-{next(counter)}.sqlite3", durability=durability)

    if "messages" in sections:
        await report_messages(p, memory, sqlite)
    if "wake" in sections:
        await report_wakes(p, sqlite)


async def report_messages(
    p: Params,
    memory: Callable[[], StorageBackend],
    sqlite: Callable[..., Callable[[], StorageBackend]],
) -> None:
    started = time.perf_counter()
    print(f"\n### 1-2. Messages through one actor (median of {p.rounds} round(s))\n", flush=True)
    rows = []
    cases: list[tuple[str, type[Actor], Callable[[], StorageBackend], Any]] = [
        ("ask, 1 asker, no writes", Echo, memory, lambda s: sequential_asks(s, p.asks)),
        (
            f"ask, {p.askers} concurrent askers, no writes",
            Echo,
            memory,
            lambda s: concurrent_asks(s, p.asks, p.askers),
        ),
        ("tell (batches of 512), no writes", Echo, memory, lambda s: tells(s, p.asks, 512)),
        ("ask + 1 write, memory", Writer, memory, lambda s: sequential_asks(s, p.writes)),
        ("ask + 1 write, SQLite normal", Writer, sqlite(), lambda s: sequential_asks(s, p.writes)),
        (
            "ask + 1 write, SQLite full (fsync)",
            Writer,
            sqlite("full"),
            lambda s: sequential_asks(s, p.writes_full),
        ),
    ]
    for name, actor, backend, run in cases:
        rows.append(throughput_row(name, await one_actor_rounds(actor, backend, run, p.rounds)))
    headers = ["case", "msgs/s", "range of rounds", "per CPU-s", "ask p50 µs", "ask p99 µs"]
    print(table(headers, rows))
    print(f"\n({time.perf_counter() - started:.0f} s)")


async def report_wakes(p: Params, sqlite: Callable[..., Callable[[], StorageBackend]]) -> None:
    started = time.perf_counter()
    print(
        f"\n### 3. Wake from hibernation ({p.wake_keys} keys ≈ "
        f"{p.wake_keys * len(json.dumps(VALUE, separators=(',', ':')))} bytes per actor, "
        f"median of {p.rounds} round(s))\n",
        flush=True,
    )
    rows = [
        wake_row("SQLite", await wake_rounds(sqlite()(), p, 0.05)),
        wake_row("memory", await wake_rounds(MemoryBackend(), p, 0.05)),
    ]
    print(
        table(
            ["backend", "wakes", "p50 ms", "p90 ms", "p99 ms", "max ms", "warm p50", "warm p99"],
            rows,
        )
    )
    print(f"\n({time.perf_counter() - started:.0f} s)")


def report_memory(p: Params) -> None:
    started = time.perf_counter()
    n, idle = p.memory_actors, 0.5
    print(
        f"\n### 4. {n:,} hibernated actors on SQLite (fresh interpreter per run, "
        f"hibernate_after={idle} s; {p.memory_rounds} plain run(s), "
        f"{p.trace_rounds} under tracemalloc)\n",
        flush=True,
    )
    plain = [run_memory_child(n, trace=False, idle=idle) for _ in range(p.memory_rounds)]
    traced = [run_memory_child(n, trace=True, idle=idle) for _ in range(p.trace_rounds)]
    in_ram = run_memory_child(n // 5, trace=True, idle=idle, on_disk=False)

    def med(runs: list[dict[str, Any]], key: str) -> float:
        return median([float(r[key]) for r in runs])

    mib = 1024 * 1024
    rows = [
        ["activate (1 ask + 1 commit each, 16 tasks)", f"{med(plain, 'activate_s'):.1f} s"],
        ["activation rate", f"{n / med(plain, 'activate_s'):,.0f} /s"],
        ["activation rate per CPU-s", f"{n / med(plain, 'activate_cpu_s'):,.0f} /s"],
        ["last reply to all hibernated", f"{med(plain, 'hibernate_s'):.2f} s"],
        ["peak live actors", f"{med(plain, 'peak_live'):,.0f}"],
        ["Python heap kept per hibernated actor", f"{med(traced, 'heap_growth') / n:,.0f} B"],
        ["RSS growth per hibernated actor, after gc", f"{med(plain, 'rss_growth') / n:,.0f} B"],
        [
            "RSS growth per hibernated actor, + malloc_trim",
            f"{med(plain, 'rss_growth_trimmed') / n:,.0f} B",
        ],
        ["peak RSS growth", f"{med(plain, 'peak_rss_growth') / mib:,.1f} MiB"],
        [
            "peak Python heap growth",
            f"{med(traced, 'peak_heap_growth') / mib:,.1f} MiB"
            f" ({med(traced, 'peak_live'):,.0f} live)",
        ],
        [
            f"memory backend ({n // 5:,}): heap kept per actor, storage included",
            f"{in_ram['heap_growth'] / in_ram['n']:,.0f} B",
        ],
    ]
    print(table(["measure", "median"], rows))
    print("\nWhere the kept Python heap was allocated (tracemalloc):\n")
    sites = [[f"SQLite: {site}", f"{size / n:,.1f} B"] for site, size in traced[0]["sites"]]
    sites += [[f"memory: {site}", f"{size / in_ram['n']:,.1f} B"] for site, size in in_ram["sites"]]
    print(table(["allocation site", "per actor"], sites or [["(none)", "0"]]))
    print(f"\n({time.perf_counter() - started:.0f} s)")


def load() -> str:
    """The 1, 5 and 15 minute load averages (how busy the machine was)."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def pin(cpu: int) -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity here)"
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu} (as `taskset -c {cpu}`)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one small round (CI smoke)")
    parser.add_argument("--cpu", type=int, default=0, help="the CPU to pin to (default 0)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to one CPU")
    parser.add_argument(
        "--memory-rounds",
        type=int,
        help="plain 100k-actor runs in section 4 (default 1; each takes 30-80 s)",
    )
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated, of {','.join(SECTIONS)} (default: all)",
    )
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--idle", type=float, default=0.5, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--in-memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.memory_child is not None:
        result = trio.run(
            memory_child,
            args.memory_child,
            args.trace,
            args.idle,
            args.workdir,
            not args.in_memory,
        )
        print(json.dumps(result))
        return 0

    sections = set(args.sections.split(","))
    if not sections <= set(SECTIONS):
        parser.error(f"--sections: choose from {','.join(SECTIONS)}")
    p = QUICK if args.quick else FULL
    if args.memory_rounds:
        p = dataclasses.replace(p, memory_rounds=args.memory_rounds)
    machine = machine_line()
    pinned = "not pinned" if args.no_pin else pin(args.cpu)
    print(f"# roomkeeper runtime benchmark ({'quick' if args.quick else 'full'})\n")
    print(f"machine: {machine}; {pinned}")
    print(f"load average at start: {load()}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rk-bench-") as tmp:
        trio.run(run_all, p, Path(tmp), sections)
    if "memory" in sections:
        report_memory(p)
    print(f"\nload average at end: {load()}")
    print(f"took {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
