"""Presence: a dropped stream is noticed, its session stays in the roster for the grace
period with its signals queued (delivered on return, in order, after session and roster;
503 when the queue is full), and it expires when the grace period ends."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
import trio

from .conftest import (
    Peer,
    ServerProcess,
    assert_error,
    connect_refused,
    join,
    leave,
    send,
    send_ok,
    start_shared,
    sync,
)

GRACE = 2.5
QUEUE_LIMIT = 4
NOTICE = 1.0  # a dropped stream is noticed within a second
ADMIN = "presence-admin-token-0123456789"
CLOCKS = 0.05  # the server's wall clock (trio's clock plus an offset) against time.time()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_shared(
        tmp_path_factory.mktemp("presence"),
        grace=str(GRACE),
        queue_limit=str(QUEUE_LIMIT),
        admin_token=ADMIN,
    )
    yield server
    server.kill()


async def _dropped(client: httpx.AsyncClient, base: str, room: str, a: Peer) -> Peer:
    """Join ``room`` as a second peer, then drop the stream (as a lost network would)."""
    async with join(client, base, room) as b:
        roster = await a.stream.next()
        assert roster.data["peers"][-1] == b.session_id
    return b


async def test_dropped_session_stays_and_its_signals_queue(
    client: httpx.AsyncClient, base: str, room: str
) -> None:
    async with join(client, base, room) as a:
        b = await _dropped(client, base, room, a)
        await trio.sleep(NOTICE)
        # Noticed by now. A newcomer still sees it in the roster...
        async with join(client, base, room) as c:
            assert c.roster == [a.session_id, b.session_id, c.session_id]
            assert (await leave(client, base, c)).status_code == 200
        assert (await a.stream.next()).data["peers"] == c.roster
        assert (await a.stream.next()).data["peers"] == [a.session_id, b.session_id]
        # ...and these must queue, not go to the dead connection.
        for n in range(QUEUE_LIMIT):
            await send_ok(client, base, a, b, {"n": n})
        assert await sync(client, a) == []  # still in the roster: nothing for peers
        async with join(client, base, room, session_id=b.session_id, token=b.token) as b2:
            assert b2.resumed and b2.session_id == b.session_id
            assert b2.roster == [a.session_id, b.session_id]
            delivered = [await b2.stream.next() for _ in range(QUEUE_LIMIT)]
            assert [e.event for e in delivered] == ["signal"] * QUEUE_LIMIT
            assert [e.data for e in delivered] == [
                {"from": a.session_id, "signal": {"n": n}} for n in range(QUEUE_LIMIT)
            ]
            assert delivered[0].id > b2.first[1].id > b2.first[0].id > b.stream.last_id
            assert await sync(client, b2) == []  # delivered once
            assert await sync(client, a) == []
        # Delivered means gone from the queue: the next return brings nothing again.
        await trio.sleep(NOTICE)
        async with join(client, base, room, session_id=b.session_id, token=b.token) as b3:
            assert await sync(client, b3) == []


async def test_full_queue_is_503_and_nothing_is_dropped(
    client: httpx.AsyncClient, base: str, room: str
) -> None:
    async with join(client, base, room) as a, join(client, base, room) as c:
        await a.stream.next()
        b = await _dropped(client, base, room, a)
        await c.stream.next()
        await trio.sleep(NOTICE)
        for n in range(QUEUE_LIMIT):
            await send_ok(client, base, a, b, {"n": n})
        refused = await send(client, base, a, b, {"n": QUEUE_LIMIT}, id="last")
        assert_error(refused, 503)
        retry_after = refused.headers["retry-after"]
        assert retry_after.isdigit() and int(retry_after) >= 1
        # Other peers are not affected.
        await send_ok(client, base, a, c, {"still": "fine"})
        assert (await c.stream.next()).data["signal"] == {"still": "fine"}
        async with join(client, base, room, session_id=b.session_id, token=b.token) as b2:
            got = [await b2.stream.next() for _ in range(QUEUE_LIMIT)]
            assert [e.data["signal"] for e in got] == [{"n": n} for n in range(QUEUE_LIMIT)]
            assert await sync(client, b2) == []  # the refused one was not queued
            # The refused id was not remembered: its retry is delivered.
            await send_ok(client, base, a, b2, {"n": QUEUE_LIMIT}, id="last")
            assert (await b2.stream.next()).data["signal"] == {"n": QUEUE_LIMIT}


async def test_grace_period_then_expiry(client: httpx.AsyncClient, base: str, room: str) -> None:
    async with join(client, base, room) as a:
        b = await _dropped(client, base, room, a)
        dropped_at = trio.current_time()
        d = await _dropped(client, base, room, a)
        await send_ok(client, base, a, b, {"queued": "then dropped"})
        await trio.sleep(NOTICE)
        # A leave during the grace period ends the session at once.
        response = await leave(client, base, d)
        assert response.status_code == 200 and response.json() == {"success": True}
        with trio.fail_after(1):
            roster = await a.stream.next()
        assert roster.data == {"peers": [a.session_id, b.session_id]}
        assert_error(await send(client, base, d, a, {"x": 1}), 403)
        # The other one stays until its grace period ends.
        roster = await a.stream.next(wait=GRACE + 5)
        waited = trio.current_time() - dropped_at
        assert roster.data == {"peers": [a.session_id]}
        assert waited >= GRACE - 0.25, waited  # not before the grace period ended
        # The expired session's token stops working...
        assert_error(await send(client, base, b, a, {"x": 1}), 403)
        assert_error(await leave(client, base, b), 403)
        # ...it is no longer a recipient...
        assert_error(await send(client, base, a, b, {"x": 1}), 404)
        # ...and its credentials or last event id now make a new session, queue dropped.
        async with join(client, base, room, session_id=d.session_id, token=d.token) as d2:
            assert not d2.resumed
            assert (await leave(client, base, d2)).status_code == 200
        await a.stream.next()
        await a.stream.next()
        for params, headers in (
            ({"session_id": b.session_id, "token": b.token}, {}),
            ({}, {"Last-Event-ID": str(b.stream.last_id)}),
        ):
            async with join(client, base, room, headers=headers, **params) as b2:
                assert b2.resumed is False
                assert b2.session_id != b.session_id
                assert await sync(client, b2) == []
                assert (await leave(client, base, b2)).status_code == 200
            assert (await a.stream.next()).data == {"peers": [a.session_id, b2.session_id]}
            assert (await a.stream.next()).data == {"peers": [a.session_id]}


async def _expiry(client: httpx.AsyncClient, base: str, room: str, sid: str) -> float:
    """When the room will end session ``sid`` (its ``expires_at``, from the admin view),
    once it has noticed that the session's stream dropped."""
    headers = {"Authorization": f"Bearer {ADMIN}"}
    with trio.fail_after(NOTICE * 5):
        while True:
            response = await client.get(f"{base}/admin/rooms/{room}", headers=headers)
            assert response.status_code == 200, response.text
            (session,) = [s for s in response.json()["view"]["sessions"] if s["session_id"] == sid]
            if session["expires_at"] is not None:
                return float(session["expires_at"])
            await trio.sleep(0.05)


def _grace_from(expires_at: float, dropped_after: float, seen_by: float) -> None:
    """The session's grace period starts when its stream dropped: after ``dropped_after``,
    and before the test saw the room's deadline (``seen_by``)."""
    assert dropped_after - CLOCKS <= expires_at - GRACE <= seen_by + CLOCKS


@pytest.mark.single_process("reads the admin view, which is per node (cluster.conf refuses it)")
async def test_each_drop_starts_a_new_grace_period(
    client: httpx.AsyncClient, base: str, room: str
) -> None:
    async with join(client, base, room) as a:
        before = time.time()
        b = await _dropped(client, base, room, a)
        first = await _expiry(client, base, room, b.session_id)
        _grace_from(first, before, time.time())
        await trio.sleep(GRACE * 0.6)
        async with join(client, base, room, session_id=b.session_id, token=b.token) as b2:
            assert b2.resumed
            before = time.time()
        second = await _expiry(client, base, room, b.session_id)
        _grace_from(second, before, time.time())  # a new period, from the second drop
        await trio.sleep(max(0.0, first - time.time()) + 0.1)  # past the first one's end
        async with join(client, base, room, session_id=b.session_id, token=b.token) as b3:
            assert b3.resumed and b3.roster == [a.session_id, b.session_id]
        assert await sync(client, a) == []


async def test_wrong_token_during_grace_is_403(
    client: httpx.AsyncClient, base: str, room: str
) -> None:
    async with join(client, base, room) as a:
        b = await _dropped(client, base, room, a)
        query = {"room": room, "session_id": b.session_id, "token": a.token}
        assert_error(await connect_refused(client, base, query), 403)
        async with join(client, base, room, session_id=b.session_id, token=b.token) as b2:
            assert b2.resumed


DEFAULT_QUEUE = 256


@pytest.fixture(scope="module")
def roomy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The default queue limit (256), and time enough to fill it within the grace period."""
    server = start_shared(tmp_path_factory.mktemp("roomy"), grace="6")
    yield server
    server.kill()


async def test_default_queue_holds_256_signals(
    client: httpx.AsyncClient, roomy_server: ServerProcess, room: str
) -> None:
    base = roomy_server.url
    async with join(client, base, room) as a, join(client, base, room) as c:
        await a.stream.next()
        b = await _dropped(client, base, room, a)
        await trio.sleep(NOTICE)
        for n in range(DEFAULT_QUEUE // 2):  # two senders, each within its rate limit
            await send_ok(client, base, a, b, {"n": n})
            await send_ok(client, base, c, b, {"n": n})
        assert_error(await send(client, base, a, b, {"n": "one too many"}), 503)
        async with join(client, base, room, session_id=b.session_id, token=b.token) as b2:
            got = [await b2.stream.next() for _ in range(DEFAULT_QUEUE)]
            assert [(e.data["from"], e.data["signal"]) for e in got] == [
                (sender.session_id, {"n": n})
                for n in range(DEFAULT_QUEUE // 2)
                for sender in (a, c)
            ]
            assert await sync(client, b2) == []
