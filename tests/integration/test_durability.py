"""What a room keeps, on a real server: every acknowledged signal survives a kill -9
(replay history and request ids are committed with each answer), and the bytes a room
holds are the bytes it accepted, bounded per session, per room and per process."""

from __future__ import annotations

import signal
from contextlib import AsyncExitStack

import httpx
import trio

from roomkeeper.jsonutil import dumps

from .conftest import (
    Peer,
    ServerFactory,
    assert_error,
    connect_deferred,
    join,
    new_room,
    send,
    send_ok,
    sync,
)


async def test_acknowledged_signals_survive_kill_9_once_each_with_growing_ids(
    client: httpx.AsyncClient, server_factory: ServerFactory
) -> None:
    """Two peers signal; the server is killed after the 200s, before the recipient read
    them (and before any hibernation could save the room); after a restart on the same
    file the recipient resumes with Last-Event-ID and gets every acknowledged signal
    exactly once, with ids above those it saw; a retried POST is not delivered again."""
    server = server_factory(grace="30", hibernate_after="600", heartbeat="600")
    room = new_room()
    sent = [f"sig-{n}" for n in range(20)]
    async with AsyncExitStack() as stack:
        alice = await stack.enter_async_context(join(client, server.url, room))
        bob = await stack.enter_async_context(join(client, server.url, room))
        await alice.stream.until("roster")  # Bob's arrival
        await sync(client, bob)
        seen = bob.stream.last_id  # Bob reads nothing after this
        for rid in sent:
            await send_ok(client, server.url, alice, bob, {"rid": rid}, id=rid)
            await send_ok(client, server.url, bob, alice, {"rid": rid}, id=rid)
        assert await trio.to_thread.run_sync(server.stop, signal.SIGKILL) == -signal.SIGKILL
    await trio.to_thread.run_sync(server.start)
    base = server.url
    headers = {"Last-Event-ID": str(seen)}
    async with join(client, base, room, headers=headers, **bob.creds()) as back:
        assert back.resumed and back.first[0].id > seen
        for rid in sent[:3]:  # the sender retries: accepted, never delivered again
            await send_ok(client, base, alice, back, {"rid": rid}, id=rid)
        events = await sync(client, back)
        got = [e.data["signal"]["rid"] for e in events if e.event == "signal"]
        assert got == sent
        assert all(e.data["from"] == alice.session_id for e in events if e.event == "signal")
        ids = [e.id for e in [*back.first, *events]]
        assert ids == sorted(set(ids)) and ids[0] > seen
    # Alice never read Bob's signals either: her replay is complete too.
    async with join(
        client, base, room, headers={"Last-Event-ID": str(alice.first[1].id)}, **alice.creds()
    ) as again:
        events = await sync(client, again)
        got = [e.data["signal"]["rid"] for e in events if e.event == "signal"]
        assert got[: len(sent)] == sent


# --- memory: bytes held are the bytes accepted --------------------------------------------

MAX_BODY = 102_400
ELEMENTS = (MAX_BODY - 200) // 3  # {"x": [{}, {}, ...]} just under the body limit


def _body(frm: Peer, to: Peer) -> bytes:
    payload = {"x": [{}] * ELEMENTS}
    body = dumps(
        {"sender": frm.session_id, "to": to.session_id, "token": frm.token, "signal": payload}
    )
    assert MAX_BODY - 100 < len(body) <= MAX_BODY
    return body


DATA = len(b'{"from":"' + b"0" * 36 + b'","signal":' + dumps({"x": [{}] * ELEMENTS}) + b"}")
"""Bytes one such signal takes as sent (and as held)."""


async def _post(client: httpx.AsyncClient, base: str, frm: Peer, to: Peer) -> httpx.Response:
    return await client.post(
        f"{base}/api/signal",
        params={"room": frm.room},
        content=_body(frm, to),
        headers={"Content-Type": "application/json"},
    )


async def _held(client: httpx.AsyncClient, base: str) -> tuple[int, int]:
    """Bytes held and the budget, from /metrics."""
    text = (await client.get(f"{base}/metrics")).text
    values = {}
    for line in text.splitlines():
        for name in ("roomkeeper_memory_held_bytes", "roomkeeper_memory_budget_bytes"):
            if line.startswith(name + "{"):
                values[name] = int(float(line.rsplit(" ", 1)[1]))
    return values["roomkeeper_memory_held_bytes"], values["roomkeeper_memory_budget_bytes"]


async def test_the_bytes_held_are_the_bytes_accepted_and_bounded(
    client: httpx.AsyncClient, server_factory: ServerFactory
) -> None:
    """Bodies of the shape that once cost 18 times their size in memory, to receivers
    that read nothing: what the server holds is what it accepted, byte for byte; past a
    session's budget its oldest history goes and a queued signal is refused; near the
    process budget new sessions and new rooms get 503, at it new signals too."""
    server = server_factory(
        grace="60",
        hibernate_after="600",
        session_bytes=str(3 * DATA),
        room_bytes=str(100 * DATA),
        memory_budget=str(12 * DATA),
        rate_burst="1000",
    )
    base = server.url
    room = new_room()
    async with AsyncExitStack() as stack:
        alice = await stack.enter_async_context(join(client, base, room))
        bob, frank, gina = [
            await stack.enter_async_context(join(client, base, room)) for _ in range(3)
        ]
        async with join(client, base, room) as carol:
            pass  # Carol's stream drops: signals to her queue
        await sync(client, alice)
        marker, budget = await _held(client, base)
        assert budget == 12 * DATA and marker < 200  # the marker sync() sent

        for n in range(5):  # Bob never reads: his history keeps the last 3
            assert (await _post(client, base, alice, bob)).status_code == 200
            assert (await _held(client, base))[0] - marker == min(n + 1, 3) * DATA
        for _ in range(3):
            assert (await _post(client, base, alice, carol)).status_code == 200
        refused = assert_error(await _post(client, base, alice, carol), 503)
        assert "queue is full" in refused["error"]
        for n in range(3):
            assert (await _post(client, base, alice, frank)).status_code == 200
            assert (await _held(client, base))[0] - marker == (7 + n) * DATA
        for _ in range(2):
            assert (await _post(client, base, alice, gina)).status_code == 200
        assert (await _held(client, base))[0] - marker == 11 * DATA  # past 90 % of the budget

        for params in ({"room": room}, {"room": new_room()}):
            why = await connect_deferred(client, base, params)
            assert "near its memory budget" in why
        async with join(client, base, room, **bob.creds()) as again:
            assert again.resumed  # resuming is never refused
        assert (await _post(client, base, alice, gina)).status_code == 200
        assert (await _held(client, base))[0] - marker == 12 * DATA
        full = await send(client, base, alice, gina, {"small": True})
        assert_error(full, 503)
        assert full.headers["retry-after"] == "5"
