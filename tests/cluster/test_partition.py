"""One node loses PostgreSQL (its packets black-holed; the other nodes still reach it)
while it owns rooms. A room that nginx sends to another node moves to a live node within
about a TTL. A room that nginx sends to the cut-off node is served again only once the
partition heals: the node still answers, so nginx's passive checks never mark it down
(docs/scaling.md); the test measures that, and checks nothing is lost or duplicated."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
import trio

from .clients import Conversation, EventSource, eventually
from .conftest import figure
from .harness import LEASE_TTL, Cluster

pytestmark = pytest.mark.slow

CLUSTER_RELAYED = "n3"


async def owned_by(http: httpx.AsyncClient, cluster: Cluster, via_nginx: bool) -> str:
    """A new room that n3 holds, and that nginx sends to n3 (``via_nginx``) or not."""
    n3 = cluster.node(CLUSTER_RELAYED)
    for _ in range(60):
        room = f"part-{uuid.uuid4().hex[:10]}"
        async with trio.open_nursery() as nursery:  # served where nginx sends it
            probe = EventSource(http, cluster.url, room)
            nursery.start_soon(probe.run)
            await probe.wait_session()
            nursery.cancel_scope.cancel()
        if (probe.connections[0].node == n3.name) != via_nginx:
            continue
        if not via_nginx:
            # Once the room let its lease go (hibernated, no stream), a stream opened on
            # n3 itself makes n3 its owner; nginx still sends the room elsewhere.
            await eventually(lambda r=room: not cluster.db.lease(r).live, 10)  # type: ignore[union-attr]
            async with trio.open_nursery() as nursery:
                pin = EventSource(http, n3.url, room)
                nursery.start_soon(pin.run)
                await pin.wait_session()
                nursery.cancel_scope.cancel()
            assert cluster.owner(room) is n3
        return room
    raise AssertionError("no room found")


async def test_a_node_partitioned_from_postgres(healthy: Cluster, http: httpx.AsyncClient) -> None:
    n3 = healthy.node(CLUSTER_RELAYED)
    # Room "hashed": nginx sends it to n3. Room "elsewhere": nginx sends it to another node,
    # which forwards it to n3, its owner.
    rooms = {
        "hashed": await owned_by(http, healthy, via_nginx=True),
        "elsewhere": await owned_by(http, healthy, via_nginx=False),
    }
    talks = {what: Conversation(http, healthy.url, room) for what, room in rooms.items()}
    async with trio.open_nursery() as nursery:
        for talk in talks.values():
            await talk.start(nursery)
        for room in rooms.values():
            assert healthy.owner(room) is n3
        await trio.sleep(1)

        t0 = time.monotonic()
        healthy.partition()
        talk = talks["elsewhere"]
        with trio.move_on_after(LEASE_TTL + 6):
            await eventually(
                lambda: all(talk.resumed_after(s, t0, n3.name) is not None for s in talk.sources),
                LEASE_TTL + 6,
            )
        seen = {
            s.name: [(round(c.opened - t0, 1), c.node, c.status, c.events) for c in s.connections]
            for s in talk.sources
        }
        lease = healthy.db.lease(rooms["elsewhere"])
        statuses = [(st, n, round(at - t0, 1)) for st, n, at in talk.sender.statuses if at > t0]
        assert all(talk.resumed_after(s, t0, n3.name) for s in talk.sources), (
            seen,
            lease,
            statuses[:20],
        )
        for source in talk.sources:
            took = talk.resumed_after(source, t0, n3.name)
            assert took is not None
            figure(f"partition_forwarded_room_{source.name}_resumed_after", took)
        readyz = await http.get(f"{n3.url}/readyz")
        assert readyz.status_code == 503, readyz.text

        hashed = talks["hashed"]
        with trio.move_on_after(10):
            await eventually(
                lambda: all(
                    hashed.resumed_after(s, t0, n3.name) is not None for s in hashed.sources
                ),
                10,
            )
        # Known limit (reported): nginx keeps sending this room to n3, which answers (a
        # 200 stream that says retry, a 503 POST), so nginx never marks it down; the room
        # is served again only when the partition heals (or n3 is taken out of nginx).
        resumed = [hashed.resumed_after(s, t0, n3.name) for s in hashed.sources]
        print(f"room hashed to the partitioned node resumed during the partition: {resumed}")

        t1 = time.monotonic()
        healthy.heal_partition()
        await eventually(lambda: any(a.at > t1 for a in hashed.sender.acked), 20)
        figure("partition_hashed_room_longest_post_gap", hashed.longest_gap(t0))
        problems = [p for t in talks.values() for p in await t.finish()]
        nursery.cancel_scope.cancel()

    assert problems == []
    for t in talks.values():
        assert t.sender.given_up == []
        for source in t.sources:
            assert source.failed == []
    assert healthy.owner(rooms["elsewhere"]) is not n3
    assert healthy.db.fencing_violations() == []
