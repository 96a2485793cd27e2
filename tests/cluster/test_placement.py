"""Where rooms are served: affinity through nginx, forwarding from any node to the owner,
one epoch when three nodes race to activate a room, and an nginx reload that adds a node
(and removes it again) without a room ever having two live activations."""

from __future__ import annotations

import json
import uuid

import httpx
import trio

from .clients import EventSource, Sender
from .conftest import figure
from .harness import Cluster


def new_room(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"


async def connect_once(
    http: httpx.AsyncClient, base: str, room: str, headers: dict[str, str] | None = None
) -> tuple[str, dict[str, str]]:
    """Open a stream, read its ``session`` event, close it: (node, session data)."""
    async with http.stream(
        "GET", f"{base}/api/connect", params={"room": room}, headers=headers or {}, timeout=10
    ) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                return response.headers["x-roomkeeper-node"], json.loads(line[5:])
    raise AssertionError("the stream ended before its session event")


async def test_a_room_is_served_by_one_node(healthy: Cluster, http: httpx.AsyncClient) -> None:
    rooms = [new_room("affinity") for _ in range(24)]
    served: dict[str, set[str]] = {}
    for room in rooms:
        async with trio.open_nursery() as nursery:
            source = EventSource(http, healthy.url, room)
            nursery.start_soon(source.run)
            await source.wait_session()
            sender = Sender(http, healthy.url, room)
            assert source.session_id is not None
            for _ in range(5):
                assert await sender.send(source, source.session_id)
            await source.wait_for(lambda s=source: len(s.signals()) == 5, 5)
            nursery.cancel_scope.cancel()
        served[room] = {c.node for c in source.connections} | {n for _, n, _ in sender.statuses}
        lease = healthy.db.lease(room)
        assert lease is not None
        # Every request of the room was served by one node: the one holding its lease.
        assert served[room] == {lease.node}, (room, served[room], lease)
    owners = {next(iter(nodes)) for nodes in served.values()}
    assert len(owners) >= 2, f"24 rooms all hashed to {owners}"
    assert healthy.db.fencing_violations() == []


async def test_a_non_owner_hands_requests_to_the_owner(
    healthy: Cluster, http: httpx.AsyncClient
) -> None:
    room = new_room("forward")
    async with trio.open_nursery() as nursery:
        alice = EventSource(http, healthy.url, room, "alice")
        nursery.start_soon(alice.run)
        await alice.wait_session()
        owner = healthy.owner(room)
        before = healthy.db.lease(room)
        assert alice.connections[0].node == owner.name
        for other in healthy.others(owner):
            # A stream opened straight on a non-owner is the owner's stream, relayed.
            bob = EventSource(http, other.url, room, f"bob@{other.name}")
            nursery.start_soon(bob.run)
            await bob.wait_session()
            assert bob.connections[0].node == owner.name
            assert bob.session_id is not None
            await alice.wait_for(
                lambda b=bob: [b.session_id] in [r[-1:] for r in alice.rosters()], 5
            )
            # A POST sent straight to a non-owner is answered by the owner.
            sender = Sender(http, other.url, room)
            assert await sender.send(bob, alice.session_id or "")
            assert [node for _, node, _ in sender.statuses] == [owner.name]
            await alice.wait_for(lambda s=sender: s.acked[0].sid in alice.signal_ids(), 5)
            # ...and alice answers through nginx, to bob's relayed stream.
            reply = Sender(http, healthy.url, room)
            assert await reply.send(alice, bob.session_id)
            await bob.wait_for(lambda r=reply, b=bob: r.acked[0].sid in b.signal_ids(), 5)
        nursery.cancel_scope.cancel()
    after = healthy.db.lease(room)
    assert after is not None and before is not None
    assert (after.owner, after.epoch) == (before.owner, before.epoch)  # nothing moved
    assert len(healthy.db.grants(room)) == 1


async def test_three_nodes_racing_for_a_new_room_grant_one_epoch(
    healthy: Cluster, http: httpx.AsyncClient
) -> None:
    for _ in range(8):
        room = new_room("race")
        go = trio.Event()
        answers: list[tuple[str, dict[str, str]]] = []

        async def connect(
            node_url: str,
            room: str = room,
            go: trio.Event = go,
            answers: list[tuple[str, dict[str, str]]] = answers,
        ) -> None:
            await go.wait()
            answers.append(await connect_once(http, node_url, room))

        async with trio.open_nursery() as nursery:
            for node in healthy.nodes:
                nursery.start_soon(connect, node.url)
            await trio.sleep(0.2)
            go.set()
        assert len(answers) == 3
        # One node served the three; the room's lease was granted once, with epoch 1.
        assert {node for node, _ in answers} == {healthy.owner(room).name}
        assert len({data["session_id"] for _, data in answers}) == 3
        grants = healthy.db.grants(room)
        assert len(grants) == 1 and grants[0][1] == 1, grants
    assert healthy.db.fencing_violations() == []


async def test_nginx_reload_adding_a_node_keeps_one_activation_per_room(
    healthy: Cluster, http: httpx.AsyncClient
) -> None:
    rooms = [new_room("reload") for _ in range(30)]
    async with trio.open_nursery() as nursery:
        sources = {room: EventSource(http, healthy.url, room) for room in rooms}
        for source in sources.values():
            nursery.start_soon(source.run)
        for source in sources.values():
            await source.wait_session()
        owners = {room: healthy.owner(room).name for room in rooms}

        answers: list[int] = []
        fourth = healthy.add_node()
        try:
            healthy.nginx.reload(healthy.ports)
            await trio.sleep(0.5)  # the new workers are up
            # Every room, new streams and POSTs included, is still served by its owner:
            # the rooms that now hash to n4 are forwarded by it.
            late: dict[str, EventSource] = {}
            for room in rooms:
                late[room] = EventSource(http, healthy.url, room, f"late-{room}")
                nursery.start_soon(late[room].run)
            for room in rooms:
                await late[room].wait_session()
                sender = Sender(http, healthy.url, room)
                target = sources[room].session_id
                assert target is not None
                assert await sender.send(late[room], target)
                await sources[room].wait_for(
                    lambda r=room, s=sender: s.acked[0].sid in sources[r].signal_ids(), 5
                )
                served = {c.node for c in late[room].connections} | {
                    n for _, n, _ in sender.statuses
                }
                assert served == {owners[room]}, (room, served, owners[room])
                answers += [status for status, _, _ in sender.statuses]
            moved = sum(
                1
                for room in rooms
                if healthy.db.lease(room).node != owners[room]  # type: ignore[union-attr]
            )
            assert moved == 0

            # Removing it again: its streams (none: it only relayed) end, nothing moves.
            healthy.nginx.reload([n.port for n in healthy.nodes if n is not fourth])
            await trio.sleep(0.5)
            fourth.stop()
            for room in rooms:
                sender = Sender(http, healthy.url, room)
                target = late[room].session_id
                assert target is not None and sources[room].session_id is not None
                assert await sender.send(sources[room], target)
                answers += [status for status, _, _ in sender.statuses]
            figure("reload_posts_not_200", float(sum(a != 200 for a in answers)), "POSTs")
        finally:
            fourth.stop()
            healthy.nodes.remove(fourth)
            healthy.nginx.reload(healthy.ports)
        nursery.cancel_scope.cancel()
    for room in rooms:
        assert not sources[room].failed and not late[room].failed
        lease = healthy.db.lease(room)
        assert lease is not None and lease.node != fourth.name
    assert healthy.db.fencing_violations() == []
