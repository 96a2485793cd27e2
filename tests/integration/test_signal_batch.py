"""The batch form of POST /api/signal (an extension): several signals in one body, taken in
order up to the first the room refuses; the answer says how many were taken."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import httpx

from roomkeeper.signaling import MAX_BATCH

from .conftest import Peer, ServerFactory, join, new_room, post, sync

UNKNOWN = "00000000-0000-4000-8000-000000000000"


async def batch(
    client: httpx.AsyncClient, base: str, frm: Peer, signals: list[dict[str, Any]], **extra: Any
) -> httpx.Response:
    body = {"sender": frm.session_id, "token": frm.token, "signals": signals, **extra}
    return await post(client, base, "signal", frm.room, body)


def to(peer: Peer | str, n: int, **extra: Any) -> dict[str, Any]:
    target = peer if isinstance(peer, str) else peer.session_id
    return {"to": target, "signal": {"n": n}, **extra}


def refused(response: httpx.Response, status: int, accepted: int) -> str:
    """``response`` is a batch's refusal: ``status``, and how many were taken; its error."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers.get("access-control-allow-origin") == "*"
    body = response.json()
    assert set(body) == {"error", "accepted"} and body["accepted"] == accepted, body
    return str(body["error"])


async def received(client: httpx.AsyncClient, peer: Peer) -> list[Any]:
    return [e.data["signal"]["n"] for e in await sync(client, peer) if e.event == "signal"]


async def test_the_session_event_announces_how_many_signals_a_post_may_carry(
    client: httpx.AsyncClient, base: str
) -> None:
    async with join(client, base, new_room()) as alice:
        assert alice.first[0].data["max_batch"] == MAX_BATCH


async def test_a_batch_is_delivered_in_order_and_answered_with_its_count(
    client: httpx.AsyncClient, base: str
) -> None:
    room = new_room()
    async with join(client, base, room) as alice, join(client, base, room) as bob:
        response = await batch(client, base, alice, [to(bob, n) for n in range(MAX_BATCH)])
        assert response.status_code == 200, response.text
        assert response.json() == {"success": True, "accepted": MAX_BATCH}
        events = [e for e in await sync(client, bob) if e.event == "signal"]
        assert [e.data["signal"]["n"] for e in events] == list(range(MAX_BATCH))
        assert {e.data["from"] for e in events} == {alice.session_id}
        assert all(b.id > a.id for a, b in itertools.pairwise(events))


async def test_signals_of_a_batch_may_go_to_several_peers(
    client: httpx.AsyncClient, base: str
) -> None:
    room = new_room()
    async with (
        join(client, base, room) as alice,
        join(client, base, room) as bob,
        join(client, base, room) as carol,
    ):
        signals = [to(bob, 1), to(carol, 2), to(bob, 3), to(alice, 4)]
        assert (await batch(client, base, alice, signals)).json()["accepted"] == 4
        assert await received(client, bob) == [1, 3]
        assert await received(client, carol) == [2]


async def test_past_the_limit_or_malformed_a_batch_is_400_and_nothing_is_taken(
    client: httpx.AsyncClient, base: str
) -> None:
    room = new_room()
    async with join(client, base, room) as alice, join(client, base, room) as bob:
        too_many = [to(bob, n) for n in range(MAX_BATCH + 1)]
        cases = [
            ([], {}, "signals must be a list of 1 to 32 signals"),
            (too_many, {}, "signals must be a list of 1 to 32 signals"),
            ([to(bob, 1), to("x", 2)], {}, "signals[1]: to"),
            ([to(bob, 1), {"to": bob.session_id}], {}, "signals[1]: signal missing"),
            ([to(bob, 1), to(bob, 2, id="")], {}, "signals[1]: id must be"),
            ([to(bob, 1)], {"to": bob.session_id}, "a batch gives to in each of its signals"),
        ]
        for signals, extra, says in cases:
            response = await batch(client, base, alice, signals, **extra)
            assert response.status_code == 400, response.text
            assert says in response.json()["error"]
        assert await received(client, bob) == []


async def test_a_refusal_says_how_many_signals_were_taken_before_it(
    client: httpx.AsyncClient, base: str
) -> None:
    room = new_room()
    async with join(client, base, room) as alice, join(client, base, room) as bob:
        response = await batch(client, base, alice, [to(bob, 1), to(UNKNOWN, 2), to(bob, 3)])
        assert refused(response, 404, 1) == "no such peer in this room"
        wrong = {"token": str(uuid.uuid4())}
        assert "wrong token" in refused(
            await batch(client, base, alice, [to(bob, 4)], **wrong), 403, 0
        )
        assert await received(client, bob) == [1]


async def test_a_batch_retried_with_its_ids_delivers_each_signal_once(
    client: httpx.AsyncClient, base: str
) -> None:
    room = new_room()
    async with join(client, base, room) as alice, join(client, base, room) as bob:
        signals = [to(bob, n, id=f"candidate-{n}") for n in range(5)]
        for _ in range(3):  # as a client whose answers were lost would
            response = await batch(client, base, alice, signals)
            assert response.json() == {"success": True, "accepted": 5}
        assert await received(client, bob) == [0, 1, 2, 3, 4]


async def test_a_batch_spends_the_rate_budget_signal_by_signal(
    client: httpx.AsyncClient, server_factory: ServerFactory
) -> None:
    server = server_factory(rate_burst="5", rate_refill="0.05")
    room = new_room()
    async with join(client, server.url, room) as alice, join(client, server.url, room) as bob:
        response = await batch(client, server.url, alice, [to(bob, n) for n in range(8)])
        assert refused(response, 429, 5) == "rate limit exceeded"
        assert int(response.headers["retry-after"]) >= 1
        assert await received(client, bob) == [0, 1, 2, 3, 4]


async def test_a_batch_to_a_peer_whose_queue_fills_is_taken_up_to_it(
    client: httpx.AsyncClient, server_factory: ServerFactory
) -> None:
    server = server_factory(queue_limit="2")
    room = new_room()
    async with join(client, server.url, room) as alice:
        async with join(client, server.url, room) as bob:
            pass  # bob's stream drops: his signals queue
        await sync(client, alice)
        response = await batch(client, server.url, alice, [to(bob, n) for n in range(4)])
        assert "queue is full" in refused(response, 503, 2)
        assert response.headers["retry-after"] == "1"
        async with join(client, server.url, room, **bob.creds()) as again:
            assert await received(client, again) == [0, 1]
