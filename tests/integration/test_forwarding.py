"""Any node answers any request: two embedded nodes in this process on one in-memory
cluster store (the same leases and fencing as PostgreSQL), real sockets between them.

The PostgreSQL cluster behind nginx, with killed and frozen nodes, is tests/cluster's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from roomkeeper import server as server_module
from roomkeeper.cluster import NodeIdentity
from roomkeeper.config import Config
from roomkeeper.http.forward import CLIENT_HEADER, HOP_AUTH_HEADER, HOP_HEADER, NODE_HEADER
from roomkeeper.runtime.storage import ClusterNode, MemoryCluster
from roomkeeper.testing import AsyncEmbeddedServer, serve_async

from .conftest import assert_error, join, leave, new_room, send_ok, sync

TTL = 1.0


@pytest.fixture
async def nodes(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[AsyncEmbeddedServer]]:
    cluster = MemoryCluster()
    backends: dict[str, ClusterNode] = {}

    def make_backend(config: Config, node: NodeIdentity | None = None) -> ClusterNode:
        assert node is not None
        backends[node.name] = cluster.node(node.owner, node.advertise, lease_ttl=config.lease_ttl)
        return backends[node.name]

    monkeypatch.setattr(server_module, "make_backend", make_backend)
    shared = {"storage": "postgresql://in-memory/cluster", "lease_ttl": TTL, "heartbeat": 1.0}
    async with (
        serve_async(node_id="a", **shared) as a,
        serve_async(node_id="b", **shared) as b,
    ):
        yield [a, b]


async def test_a_room_is_served_by_one_node_through_any(
    client: httpx.AsyncClient, nodes: list[AsyncEmbeddedServer]
) -> None:
    a, b = nodes
    room = new_room()
    async with join(client, a.url, room) as alice, join(client, b.url, room) as bob:
        assert alice.stream.response.headers[NODE_HEADER] == "a"
        assert bob.stream.response.headers[NODE_HEADER] == "a"  # relayed from the owner
        assert bob.roster == [alice.session_id, bob.session_id]  # one room, on a
        await send_ok(client, b.url, bob, alice, {"via": "b"})
        await send_ok(client, a.url, alice, bob, {"via": "a"})
        got = [e.data for e in await sync(client, bob) if e.event == "signal"]
        assert got == [{"from": alice.session_id, "signal": {"via": "a"}}]
        got = [e.data for e in await sync(client, alice) if e.event == "signal"]
        assert got == [{"from": bob.session_id, "signal": {"via": "b"}}]
        response = await leave(client, b.url, bob)
        assert response.status_code == 200 and response.headers[NODE_HEADER] == "a"
    assert not b.system.namespaces["rooms"].live  # the room never lived on b
    metrics = (await client.get(f"{b.url}/metrics")).text
    # bob's stream, his signal, his sync marker and his leave; alice's went to a directly
    assert "roomkeeper_requests_forwarded_total 4.0" in metrics
    assert "roomkeeper_leases_held 0.0" in metrics


async def test_a_forwarded_batch_keeps_its_count_taken_or_refused(
    client: httpx.AsyncClient, nodes: list[AsyncEmbeddedServer]
) -> None:
    a, b = nodes
    room = new_room()
    async with join(client, a.url, room) as alice, join(client, a.url, room) as bob:
        unknown = "00000000-0000-4000-8000-000000000000"
        body = {"sender": alice.session_id, "token": alice.token}
        signals = [{"to": t, "signal": {"n": n}} for n, t in enumerate([bob.session_id] * 2)]
        whole = await client.post(
            f"{b.url}/api/signal", params={"room": room}, json={**body, "signals": signals}
        )
        assert whole.json() == {"success": True, "accepted": 2}
        signals.append({"to": unknown, "signal": {"n": 2}})
        part = await client.post(
            f"{b.url}/api/signal", params={"room": room}, json={**body, "signals": signals}
        )
        assert part.status_code == 404 and part.headers[NODE_HEADER] == "a"
        assert part.json() == {"error": "no such peer in this room", "accepted": 2}
        got = [e.data["signal"]["n"] for e in await sync(client, bob) if e.event == "signal"]
        assert got == [0, 1, 0, 1]


async def test_a_forwarded_refusal_keeps_its_status_and_reason(
    client: httpx.AsyncClient, nodes: list[AsyncEmbeddedServer]
) -> None:
    a, b = nodes
    room = new_room()
    async with join(client, a.url, room) as alice:
        body = {"sender": alice.session_id, "token": "0" * 8 + "-0000-4000-8000-" + "0" * 12}
        direct = await client.post(f"{a.url}/api/leave", params={"room": room}, json=body)
        response = await client.post(f"{b.url}/api/leave", params={"room": room}, json=body)
        assert assert_error(response, 403) == assert_error(direct, 403)
        assert response.headers[NODE_HEADER] == "a"


async def test_forged_hop_headers_are_ignored(
    client: httpx.AsyncClient, nodes: list[AsyncEmbeddedServer]
) -> None:
    """A client cannot pass for a node: its hop is not authentic, so b forwards it like
    any request (and a would have applied its own limits)."""
    a, b = nodes
    room = new_room()
    async with join(client, a.url, room) as alice:
        forged = {HOP_HEADER: "a", CLIENT_HEADER: "10.9.8.7", HOP_AUTH_HEADER: "1.deadbeef"}
        body = {"sender": alice.session_id, "to": alice.session_id, "token": alice.token}
        response = await client.post(
            f"{b.url}/api/signal",
            params={"room": room},
            json={**body, "signal": {"forged": True}},
            headers=forged,
        )
        assert response.status_code == 200, response.text
        assert response.headers[NODE_HEADER] == "a"


async def test_a_node_that_goes_away_hands_its_rooms_over(
    client: httpx.AsyncClient, nodes: list[AsyncEmbeddedServer]
) -> None:
    """A graceful stop releases every lease: the other node serves the room at once, and a
    session whose stream ended with the node resumes there."""
    a, b = nodes
    room = new_room()
    async with join(client, a.url, room) as alice:
        session, token = alice.session_id, alice.token
        async with join(client, b.url, room) as bob:
            await send_ok(client, a.url, alice, bob, {"before": 1})
            await sync(client, bob)
            a.stop()
            ended = await bob.stream.expect_end()  # a's bye to bob's stream, relayed by b
            assert [e.event for e in ended if e.event != "heartbeat"] == ["bye"]
            assert ended[-1].data == {"reason": "shutdown"}
    with trio.fail_after(5):
        async with join(client, b.url, room, session_id=session, token=token) as back:
            assert back.resumed and back.session_id == session
            assert back.stream.response.headers[NODE_HEADER] == "b"


async def test_readiness_follows_the_shared_storage(
    client: httpx.AsyncClient, nodes: list[AsyncEmbeddedServer]
) -> None:
    a, _ = nodes
    response = await client.get(f"{a.url}/readyz")
    assert response.status_code == 200 and response.json() == {"status": "ready"}
    leases = a.system.leases
    assert leases is not None
    store = getattr(leases.store, "inner", None)  # behind the server's TimedBackend
    assert isinstance(store, ClusterNode)
    store.fail = True
    response = await client.get(f"{a.url}/readyz")
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert response.json() == {"status": "unavailable", "problems": ["storage is unreachable"]}
    store.fail = False
    assert (await client.get(f"{a.url}/healthz")).status_code == 200
