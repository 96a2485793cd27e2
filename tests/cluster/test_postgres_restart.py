"""PostgreSQL restarts while peers signal and others connect: POSTs in the gap are 503
with Retry-After, streams are never refused (a browser would give up for good), and
nothing committed before the restart is lost after it."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
import trio

from .clients import Conversation, EventSource, Sender, check_history, eventually
from .conftest import figure
from .harness import Cluster

pytestmark = pytest.mark.slow

GAP = 2.0  # seconds PostgreSQL stays down


async def test_postgres_restarted_under_load(healthy: Cluster, http: httpx.AsyncClient) -> None:
    room = f"pgrestart-{uuid.uuid4().hex[:10]}"
    talk = Conversation(http, healthy.url, room)
    newcomers: list[EventSource] = []
    async with trio.open_nursery() as nursery:
        await talk.start(nursery)
        # carol leaves her page (her grace period runs) and is sent signals meanwhile:
        # they are committed, queued for her, before PostgreSQL goes down.
        async with trio.open_nursery() as carols:
            carol = EventSource(http, healthy.url, room, "carol")
            carols.start_soon(carol.run)
            await carol.wait_session()
            carols.cancel_scope.cancel()
        assert carol.session_id is not None
        queued = Sender(http, healthy.url, room)
        for _ in range(3):
            assert await queued.send(talk.alice, carol.session_id)
        await trio.sleep(1)

        async def newcomer_every(period: float) -> None:
            while True:
                source = EventSource(http, healthy.url, room, f"new{len(newcomers)}")
                newcomers.append(source)
                nursery.start_soon(source.run)
                await trio.sleep(period)

        t0 = time.monotonic()
        await trio.to_thread.run_sync(healthy.pg.stop)
        nursery.start_soon(newcomer_every, 0.3)
        await trio.sleep(GAP)
        t1 = time.monotonic()
        await trio.to_thread.run_sync(healthy.pg.start_again)
        t2 = time.monotonic()
        first_ok = None
        await eventually(lambda: any(a.at > t2 for a in talk.sender.acked), 20)
        first_ok = min(a.at for a in talk.sender.acked if a.at > t2)
        figure("pg_restart_first_ack_after_postgres_back", first_ok - t2)
        figure("pg_restart_longest_post_gap", talk.longest_gap(t0), f"s ({GAP} s down)")
        await eventually(lambda: all(s.session_id for s in newcomers), 20)
        await trio.sleep(1)
        problems = await talk.finish()

        # carol comes back as her browser would (Last-Event-ID of her last event).
        back = EventSource(http, healthy.url, room, "carol")
        back.last_id = carol.last_id
        nursery.start_soon(back.run)
        await back.wait_session()
        wanted = {ack.sid for ack in queued.acked}
        await back.wait_for(lambda: wanted <= set(back.signal_ids()), 5)
        nursery.cancel_scope.cancel()

    assert problems == []
    assert talk.sender.given_up == []
    assert back.session_id == carol.session_id and back.sessions()[0].data["resumed"]
    # During the gap: every POST that failed was a 503 with Retry-After...
    failed = [(status, at - t0) for status, _, at in talk.sender.statuses if status != 200]
    assert {status for status, _ in failed} <= {503}, failed
    assert talk.sender.retry_after_missing == []
    figure("pg_restart_posts_answered_503", float(len(failed)), "POSTs")
    assert t1 > t0
    # ...and no stream, old or new, was ever answered anything but 200.
    for source in [*talk.sources, *newcomers]:
        assert source.failed == [], (source.name, source.failed)
    for source in talk.sources:
        assert check_history(source) == []
    assert healthy.db.fencing_violations() == []
