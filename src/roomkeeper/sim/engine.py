"""One simulated run: the real runtime and Room actor under trio's ``MockClock``, driven by
synthetic peers, writing the lifecycle trace. The same workload and seed give the same
trace, byte for byte.

What makes a run reproducible:

- every random draw comes from ``random.Random`` seeded from the run's seed: arrivals,
  each room and peer, and the rooms' session ids, tokens and id keys (the application's
  environment is given a seeded generator: ``roomkeeper.application``);
- stream ids come from a counter (``open_actor_system(new_stream_id=...)``) and wall
  time from ``WallClock(EPOCH)``; storage is in memory (SQLite's threads would let real
  time leak into the autojumping clock);
- trio runs tasks that become runnable together in a random order. The run seeds that
  order through the seam pytest-trio uses for Hypothesis (``trio._core._run._r`` and
  ``_ALLOW_DETERMINISTIC_SCHEDULING``, restored afterwards): it is private to trio, so
  ``tests/integration/test_sim_processes.py`` checks reproducibility across processes and
  hash seeds.
"""

from __future__ import annotations

import gc
import hashlib
import importlib
import itertools
import math
import platform
import random
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import attrs
import trio
import trio.testing

from roomkeeper.application import load_application
from roomkeeper.config import Config
from roomkeeper.http.codec import SseCodec
from roomkeeper.runtime import (
    ActorId,
    ActorSystem,
    MemoryBackend,
    RuntimeConfig,
    StreamLimits,
    WallClock,
    open_actor_system,
)
from roomkeeper.runtime.storage import ActorRecord, WriteSet
from roomkeeper.runtime.trace import TraceEvent
from roomkeeper.runtime.tracefile import TraceWriter

from .ledger import percentiles
from .peers import Peer, World
from .report import TraceStats
from .workload import Workload

__all__ = ["EPOCH", "SlowMemoryBackend", "arrival_times", "simulate", "violations"]

EPOCH = 1_800_000_000.0
"""The wall-clock time (epoch seconds) at which every simulation starts."""

NAMESPACE = "rooms"


class SlowMemoryBackend(MemoryBackend):
    """The in-memory backend with a storage latency model: each load (a wake) and each
    commit takes a fixed simulated time, so handling times and queues are not all zero.
    It also counts the bytes of stored values: what a server would keep in SQLite, off
    the Python heap, but the simulation keeps in memory."""

    def __init__(self, load_seconds: float = 0.0, commit_seconds: float = 0.0) -> None:
        super().__init__()
        self.load_seconds = load_seconds
        self.commit_seconds = commit_seconds
        self.stored_bytes = 0
        self.peak_stored_bytes = 0

    async def load(self, actor: ActorId) -> ActorRecord:
        if self.load_seconds:
            await trio.sleep(self.load_seconds)
        return await super().load(actor)

    async def commit(self, actor: ActorId, writes: WriteSet) -> None:
        if self.commit_seconds:
            await trio.sleep(self.commit_seconds)
        old = self.values.get(actor.hex, {})
        before = sum(len(old[k]) for k in writes.puts.keys() | writes.deletes if k in old)
        await super().commit(actor, writes)
        self.stored_bytes += sum(map(len, writes.puts.values())) - before
        self.peak_stored_bytes = max(self.peak_stored_bytes, self.stored_bytes)


class LiveMemory:
    """An observer that measures the Python heap after a full garbage collection, at the
    first trace event after each multiple of ``every`` simulated seconds (the same
    moments in runs that differ only in settings) and whenever the number of live actors
    reaches a new high. tracemalloc's own peak includes garbage awaiting the collector,
    so it depends on when collections happen; this is what live objects hold. It runs
    inside the runtime's bookkeeping and never schedules anything, so the trace is the
    same with or without it."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.due = 0.0
        self.live = 0
        self.most_live = 0
        self.peak = 0
        self.samples: list[tuple[float, int, int]] = []  # (t, live actors, bytes)

    def __call__(self, event: TraceEvent) -> None:
        if event.kind == "activated":
            self.live += 1
        elif event.kind == "hibernated":
            self.live -= 1
        if event.t >= self.due or self.live > self.most_live:
            self.due = (event.t // self.every + 1) * self.every
            self.most_live = max(self.most_live, self.live)
            gc.collect()
            size = tracemalloc.get_traced_memory()[0]
            self.peak = max(self.peak, size)
            self.samples.append((round(event.t, 3), self.live, size))


def room_settings(workload: Workload) -> SimpleNamespace:
    """The server's default room settings with the workload's grace and queue limit (which
    may be values the server's own checks refuse, such as a queue limit of 0)."""
    # (a default made by a factory, such as storage's, is left out: no room reads it)
    defaults = {
        f.name: f.default for f in attrs.fields(Config) if not hasattr(f.default, "factory")
    }
    return SimpleNamespace(
        **{**defaults, "grace": workload.grace, "queue_limit": workload.queue_limit}
    )


def arrival_times(workload: Workload, rng: random.Random) -> list[float]:
    """When each room starts (seconds from the start, sorted).

    With ``arrival.per_hour``, a Poisson process at that rate (shaped by ``profile``,
    by thinning), stopping at ``rooms`` rooms or after ``hours``. Without, exactly
    ``rooms`` rooms over ``hours``: a Poisson process conditioned on its count, i.e.
    independent times drawn from the (profiled) rate and sorted.
    """
    horizon = workload.hours * 3600
    profile = workload.profile or (1.0,)
    mean = sum(profile) / len(profile)

    def weight(t: float) -> float:
        return profile[int(t // 3600) % len(profile)] / mean

    if workload.per_hour > 0:
        peak = max(profile) / mean
        rate = workload.per_hour / 3600 * peak
        times: list[float] = []
        t = 0.0
        while len(times) < workload.rooms:
            t += rng.expovariate(rate)
            if t >= horizon:
                break
            if rng.random() * peak < weight(t):
                times.append(t)
        return times
    hours = math.ceil(workload.hours)
    spans = [min(1.0, workload.hours - h) for h in range(hours)]
    weights = [weight(h * 3600) * span for h, span in enumerate(spans)]
    hour_of = rng.choices(range(hours), weights=weights, k=workload.rooms)
    return sorted((h + rng.random() * spans[h]) * 3600 for h in hour_of)


@contextmanager
def seeded_scheduler(seed: int) -> Iterator[None]:
    """Make trio's choice among simultaneously runnable tasks follow ``seed``."""
    run: Any = importlib.import_module("trio._core._run")
    state, flag = run._r.getstate(), run._ALLOW_DETERMINISTIC_SCHEDULING
    run._r.seed(seed)
    run._ALLOW_DETERMINISTIC_SCHEDULING = True
    try:
        yield
    finally:
        run._r.setstate(state)
        run._ALLOW_DETERMINISTIC_SCHEDULING = flag


def simulate(
    workload: Workload,
    seed: int,
    trace: str | Path,
    *,
    measure_memory: bool = True,
    memory_every: float = 600.0,
) -> dict[str, Any]:
    """Run ``workload`` with ``seed``, write its trace to ``trace``; the run's summary.
    With ``measure_memory``, tracemalloc's peak and the peak after garbage collection
    (sampled every ``memory_every`` simulated seconds and at each new high of live
    actors); the trace is the same either way."""
    trace = Path(trace)
    tracing = measure_memory and not tracemalloc.is_tracing()
    if tracing:
        tracemalloc.start()
    elif measure_memory:
        tracemalloc.reset_peak()
    memory = LiveMemory(memory_every) if measure_memory else None
    started, cpu = time.perf_counter(), time.process_time()
    try:
        with trace.open("wb", buffering=1 << 20) as out, seeded_scheduler(seed):
            clock = trio.testing.MockClock(autojump_threshold=0)
            world, counters = trio.run(_run, workload, seed, out, memory, clock=clock)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        peak = tracemalloc.get_traced_memory()[1] if measure_memory else None
    finally:
        if tracing:
            tracemalloc.stop()
    runtime = TraceStats.from_file(trace).summary()
    ledger = world.ledger
    return {
        "workload": {"name": workload.name, "seed": seed, "settings": workload.settings},
        "trace": {"file": str(trace), "sha256": _sha256(trace)},
        "runtime": runtime,
        **counters,
        "peers": world.counts,
        "signals": {
            **ledger.counts,
            "refused": dict(sorted(ledger.refusals.items())),
            "delay_ms": percentiles(ledger.delays, 1000),
            "redelivered_delay_ms": percentiles(ledger.redelivered_delays, 1000),
        },
        "machine": {
            "wall_seconds": round(wall, 3),
            "cpu_seconds": round(cpu, 3),
            "simulated_per_wall_second": round(runtime["hours"] * 3600 / wall, 1),
            "peak_python_bytes": peak,
            "peak_live_python_bytes": memory.peak if memory else None,
            "live_memory_samples": memory.samples if memory else None,  # [t, live, bytes]
            "python": platform.python_version(),
            "trio": trio.__version__,
            "platform": platform.platform(),
        },
    }


async def _run(
    workload: Workload, seed: int, out: Any, memory: LiveMemory | None
) -> tuple[World, dict[str, Any]]:
    """The run itself; the peers' world, and the runtime's and storage's counters."""
    w = workload
    master = random.Random(seed)
    binding = load_application().binding(room_settings(w), random.Random(master.getrandbits(64)))
    config = RuntimeConfig(
        mailbox_size=w.mailbox_size,
        hibernate_after=w.hibernate_after,
        streams=StreamLimits(heartbeat=w.heartbeat, claim_timeout=max(10.0, w.heartbeat)),
    )
    stream_ids = itertools.count(1)
    backend = SlowMemoryBackend(w.load_ms / 1000, w.commit_ms / 1000)
    async with open_actor_system(
        {NAMESPACE: binding},
        codec=SseCodec(1000),
        backend=backend,
        config=config,
        clock=WallClock(EPOCH),
        new_stream_id=lambda: f"{next(stream_ids):032x}",
    ) as system:
        writer = TraceWriter(out)
        system.observers.append(writer)
        if memory is not None:
            system.observers.append(memory)
        world = World(system, workload)
        arrivals = arrival_times(w, random.Random(master.getrandbits(64)))
        rooms = random.Random(master.getrandbits(64))
        async with trio.open_nursery() as nursery:
            for index, start in enumerate(arrivals):
                await trio.sleep_until(start)
                _start_room(world, nursery, f"room-{index:06d}", rooms.getrandbits(64), start)
        await _drain(system, w)
        snapshot = system.snapshot()[0]
        if writer not in system.observers:  # the runtime drops an observer that raises
            raise RuntimeError("writing the trace failed (see the log); the trace is cut short")
    world.ledger.settle()
    return world, {
        "snapshot": {
            "activations": snapshot.activations,
            "hibernations": snapshot.hibernations,
            "wakes": dict(snapshot.wakes),
            "envelopes": snapshot.messages,
            "errors": snapshot.errors,
        },
        "storage": {
            "commits": backend.commits,
            "peak_stored_bytes": backend.peak_stored_bytes,
            "stored_bytes_at_end": backend.stored_bytes,
        },
    }


def _start_room(world: World, nursery: trio.Nursery, name: str, seed: int, start: float) -> None:
    w = world.workload
    rng = random.Random(seed)
    room = world.system.get(NAMESPACE, name)
    size = max(1, w.room_size.count(rng))
    world.counts["rooms"] += 1
    world.counts["peers"] += size
    for i in range(size):
        joins = start if i == 0 else start + w.join_spread.draw(rng)
        nursery.start_soon(Peer(world, room, rng.getrandbits(64), joins).run)


async def _drain(system: ActorSystem, workload: Workload) -> None:
    """Wait until every room has expired its sessions and hibernated."""
    while True:
        snapshot = system.snapshot()[0]
        if not (snapshot.live or snapshot.streams or len(system.alarms)):
            return
        await trio.sleep(max(1.0, workload.hibernate_after))


def violations(summary: dict[str, Any]) -> dict[str, int]:
    """The broken promises of a run, by name: signals lost, duplicated, delivered to the
    wrong session or after a refusal, failed handlings, event ids that did not grow."""
    signals, peers = summary["signals"], summary["peers"]
    found = {key: signals[key] for key in ("lost", "duplicated", "misdelivered", "errors")}
    found["ids_not_growing"] = peers["ids_not_growing"]
    return {key: n for key, n in found.items() if n}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
