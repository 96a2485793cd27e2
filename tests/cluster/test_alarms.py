"""A node dies with a grace period pending in one of its rooms: the session still expires,
on another node, and the room's roster says so."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
import trio

from .clients import EventSource, Received, eventually
from .conftest import figure
from .harness import LEASE_TTL, Cluster, actor_hex, node_name

pytestmark = pytest.mark.slow

GRACE = 3.0
CLUSTER_FLAGS = {"--grace": str(GRACE)}
# When an expiry may come at the latest: the grace period, the dead node's lease running
# out, one look for orphaned alarms (every TTL/3), and the takeover.
EXPIRY_BOUND = GRACE + LEASE_TTL + 4


def new_room(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"


async def refused_signal(http: httpx.AsyncClient, base: str, room: str, who: EventSource) -> int:
    body = {"sender": who.session_id, "to": who.session_id, "token": who.token, "signal": {}}
    response = await http.post(f"{base}/api/signal", params={"room": room}, json=body)
    return response.status_code


async def test_grace_expiry_of_a_dead_node_fires_on_another(
    healthy: Cluster, http: httpx.AsyncClient
) -> None:
    room = new_room("grace")
    async with trio.open_nursery() as nursery:
        alice = EventSource(http, healthy.url, room, "alice")
        nursery.start_soon(alice.run)
        await alice.wait_session()
        async with trio.open_nursery() as bobs:
            bob = EventSource(http, healthy.url, room, "bob")
            bobs.start_soon(bob.run)
            await bob.wait_session()
            both = [alice.session_id, bob.session_id]
            await alice.wait_for(lambda: both in alice.rosters(), 5)
            bobs.cancel_scope.cancel()  # bob's page is gone: his grace period starts
        dropped = time.monotonic()
        owner = healthy.owner(room)
        await eventually(lambda: healthy.db.alarm(room) is not None, 5)  # stored
        owner.kill9()

        # alice resumes on another node, and sees bob leave when his grace runs out.
        def bob_gone() -> list[Received]:
            alone = [alice.session_id]
            return [
                e
                for e in alice.events
                if e.event == "roster" and e.at > dropped and e.data["peers"] == alone
            ]

        await alice.wait_for(lambda: bool(bob_gone()), EXPIRY_BOUND)
        gone = bob_gone()[0]
        figure("dead_node_grace_expiry_after_drop", gone.at - dropped, f"s (grace {GRACE} s)")
        assert gone.node != owner.name
        nursery.cancel_scope.cancel()

    assert await refused_signal(http, healthy.url, room, bob) == 403
    lease = healthy.db.lease(room)
    assert lease is not None and lease.node != owner.name
    assert healthy.db.fencing_violations() == []


async def test_an_orphaned_grace_expiry_fires_with_nobody_connected(
    healthy: Cluster, http: httpx.AsyncClient
) -> None:
    room = new_room("orphan")
    async with trio.open_nursery() as nursery:
        sources = [EventSource(http, healthy.url, room, f"p{i}") for i in range(2)]
        for source in sources:
            nursery.start_soon(source.run)
        for source in sources:
            await source.wait_session()
        nursery.cancel_scope.cancel()  # both pages closed
    dropped = time.monotonic()
    owner = healthy.owner(room)
    await eventually(lambda: healthy.db.alarm(room) is not None, 5)
    owner.kill9()

    # No request reaches the room: a live node picks the due alarm up, and the sessions
    # expire (the room, empty, leaves no row behind).
    await eventually(lambda: healthy.db.alarm(room) is None, EXPIRY_BOUND, poll=0.1)
    figure("orphaned_grace_expiry_after_drop", time.monotonic() - dropped, f"s (grace {GRACE} s)")
    grants = healthy.db.grants(room)
    assert len(grants) >= 2 and node_name(grants[-1][0]) != owner.name, grants
    for source in sources:
        assert await refused_signal(http, healthy.url, room, source) == 403
    async with trio.open_nursery() as nursery:
        newcomer = EventSource(http, healthy.url, room, "newcomer")
        nursery.start_soon(newcomer.run)
        await newcomer.wait_for(lambda: bool(newcomer.rosters()), 5)
        assert newcomer.rosters()[0] == [newcomer.session_id]
        nursery.cancel_scope.cancel()


async def test_sessions_of_a_node_killed_with_its_clients_expire(
    healthy: Cluster, http: httpx.AsyncClient
) -> None:
    """The node dies while its streams are open and their clients vanish with it (one
    machine lost): no grace period had started, yet the sessions must not live forever."""
    room = new_room("vanished")
    async with trio.open_nursery() as nursery:
        sources = [EventSource(http, healthy.url, room, f"p{i}") for i in range(2)]
        for source in sources:
            nursery.start_soon(source.run)
        for source in sources:
            await source.wait_session()
        owner = healthy.owner(room)
        owner.kill9()
        nursery.cancel_scope.cancel()
    killed = time.monotonic()
    await eventually(
        lambda: not healthy.db.query("SELECT 1 FROM streams WHERE actor = %s", (actor_hex(room),)),
        EXPIRY_BOUND + 2,
        poll=0.2,
    )
    await eventually(lambda: healthy.db.alarm(room) is None, EXPIRY_BOUND + 2, poll=0.2)
    figure("killed_with_clients_sessions_expired_after", time.monotonic() - killed)
    for source in sources:
        assert await refused_signal(http, healthy.url, room, source) == 403
