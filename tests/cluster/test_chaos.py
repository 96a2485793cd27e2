"""A seeded schedule of faults (kill -9 and restart, SIGSTOP and SIGCONT, one node at a
time) while peers in several rooms signal each other through nginx; then the history is
checked: no room ever had a write fenced by an epoch older than one granted, every
acknowledged signal reached its recipient exactly once (by signal id), and every session
still exists (none left, none expired). Bounded in time; the seed is printed, and
CLUSTER_CHAOS_SEED replays one."""

from __future__ import annotations

import os
import random
import time

import httpx
import pytest
import trio

from .clients import Conversation, check_history
from .conftest import figure
from .harness import Cluster, Node

pytestmark = pytest.mark.slow

ROOMS = 4
FAULTS = 6
SEED = int(os.environ.get("CLUSTER_CHAOS_SEED", "20261204"))


async def fault(rng: random.Random, node: Node, log: list[str], t0: float) -> None:
    """One fault on ``node``, undone after a random while (run in a thread-free way:
    signals and a restart in a worker thread)."""
    kind = rng.choice(["kill", "freeze"])
    down = rng.uniform(1.0, 4.0)
    log.append(f"+{time.monotonic() - t0:5.1f}s {kind} {node.name} for {down:.1f}s")
    if kind == "kill":
        node.kill9()
        await trio.sleep(down)
        await trio.to_thread.run_sync(node.start)
    else:
        node.freeze()
        await trio.sleep(down)
        node.thaw()


async def test_random_faults(healthy: Cluster, http: httpx.AsyncClient) -> None:
    rng = random.Random(SEED)
    print(f"chaos seed {SEED} (CLUSTER_CHAOS_SEED={SEED} replays it)")
    talks = [Conversation(http, healthy.url, f"chaos-{SEED}-{i}") for i in range(ROOMS)]
    log: list[str] = []
    async with trio.open_nursery() as nursery:
        for talk in talks:
            await talk.start(nursery)
        t0 = time.monotonic()
        for _ in range(FAULTS):
            await trio.sleep(rng.uniform(1.0, 3.0))
            await fault(rng, rng.choice(healthy.nodes), log, t0)
        print("\n".join(log))
        await trio.to_thread.run_sync(healthy.heal)
        await trio.sleep(3)  # everyone settles on a live node
        problems = [p for talk in talks for p in await talk.finish(wait=15)]
        figure("chaos_duration", time.monotonic() - t0, f"s ({FAULTS} faults, seed {SEED})")
        figure("chaos_longest_post_gap", max(t.longest_gap(t0) for t in talks))

        # Every session still exists: each one's token is still good for a signal.
        for talk in talks:
            for source in talk.sources:
                assert source.session_id is not None
                assert await talk.sender.send(source, source.session_id, patience=10)
        nursery.cancel_scope.cancel()

    assert healthy.db.fencing_violations() == []
    assert problems == []
    for talk in talks:
        assert talk.sender.given_up == []
        for source in talk.sources:
            assert check_history(source) == []
    acked = sum(len(t.sender.acked) for t in talks)
    figure("chaos_signals_acknowledged", float(acked), "signals")
