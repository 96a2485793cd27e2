"""Reconnecting: credentials in the query or headers, wrong tokens, unknown and malformed
session ids, a second stream replacing the first, and Last-Event-ID replay (including a
browser EventSource reconnecting with nothing but its URL and Last-Event-ID)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack

import httpx
import pytest
import trio

from roomkeeper.signaling import MAX_BATCH

from .conftest import (
    STREAM_TIMEOUT,
    Event,
    EventStream,
    Peer,
    assert_error,
    connect_refused,
    join,
    new_room,
    send_ok,
    sync,
)

Creds = tuple[dict[str, str], dict[str, str]]  # query parameters, headers

STYLES: dict[str, Callable[[str, str], Creds]] = {
    "query": lambda sid, token: ({"session_id": sid, "token": token}, {}),
    "x-token": lambda sid, token: ({}, {"X-Session-Id": sid, "X-Token": token}),
    "bearer": lambda sid, token: ({}, {"X-Session-Id": sid, "Authorization": f"Bearer {token}"}),
    "query-id-header-token": lambda sid, token: ({"session_id": sid}, {"X-Token": token}),
}


def creds(style: str, peer: Peer, token: str | None = None) -> Creds:
    return STYLES[style](peer.session_id, peer.token if token is None else token)


async def signals(peer: Peer, n: int) -> list[Event]:
    """The next ``n`` events of ``peer``, which must all be signals."""
    got = [await peer.stream.next() for _ in range(n)]
    assert [event.event for event in got] == ["signal"] * n, got
    return got


def payloads(events: list[Event]) -> list[object]:
    return [event.data["signal"] for event in events]


# --- resuming a session ---------------------------------------------------------------------


@pytest.mark.parametrize("style", sorted(STYLES))
async def test_resume_after_the_stream_dropped(
    client: httpx.AsyncClient, base: str, room: str, style: str
) -> None:
    async with join(client, base, room) as a:
        async with join(client, base, room) as b:
            await a.stream.next()  # roster [a, b]
        last = b.stream.last_id
        params, headers = creds(style, b)
        async with join(client, base, room, headers=headers, **params) as b2:
            assert b2.first[0].data == {
                "session_id": b.session_id,
                "token": b.token,
                "room": room,
                "resumed": True,
                "ice_servers": [],
                "max_batch": MAX_BATCH,
            }
            assert b2.roster == [a.session_id, b.session_id]  # join order kept
            assert b2.first[0].id > last
            assert await sync(client, a) == []  # peers saw no roster change
            await send_ok(client, base, a, b2, {"after": "resume"})
            got = await b2.stream.next()
            assert got.data == {"from": a.session_id, "signal": {"after": "resume"}}


@pytest.mark.parametrize("style", sorted(STYLES))
async def test_second_stream_replaces_the_first(
    client: httpx.AsyncClient, base: str, room: str, style: str
) -> None:
    async with join(client, base, room) as a, join(client, base, room) as b:
        await a.stream.next()
        params, headers = creds(style, b)
        async with join(client, base, room, headers=headers, **params) as b2:
            assert b2.resumed and b2.session_id == b.session_id
            bye = await b.stream.next()
            assert (bye.event, bye.data) == ("bye", {"reason": "replaced"})
            assert [e.event for e in await b.stream.expect_end()] == []
            assert b2.first[0].id > bye.id
            assert await sync(client, a) == []
            await send_ok(client, base, a, b2, {"to": "the new stream"})
            assert (await b2.stream.next()).data["signal"] == {"to": "the new stream"}


# --- refused reconnections ------------------------------------------------------------------


@pytest.mark.parametrize("style", sorted(STYLES))
@pytest.mark.parametrize(
    "bad_token",
    [lambda: str(uuid.uuid4()), lambda: "not-a-uuid", lambda: "Bearer"],
    ids=["other-uuid", "not-uuid", "word"],
)
async def test_wrong_token_is_403(
    client: httpx.AsyncClient, base: str, room: str, style: str, bad_token: Callable[[], str]
) -> None:
    async with join(client, base, room) as b:
        params, headers = creds(style, b, bad_token())
        response = await connect_refused(client, base, {"room": room, **params}, headers)
        body = assert_error(response, 403)
        assert b.token not in str(body)
        # The session and its stream go on untouched.
        assert await sync(client, b) == []


@pytest.mark.parametrize("form", ["query", "header", "empty-query-token", "empty-bearer"])
async def test_missing_token_is_403(
    client: httpx.AsyncClient, base: str, room: str, form: str
) -> None:
    async with join(client, base, room) as b:
        query = {"room": room}
        headers = {}
        if form == "query":
            query["session_id"] = b.session_id
        elif form == "header":
            headers["X-Session-Id"] = b.session_id
        elif form == "empty-query-token":
            query |= {"session_id": b.session_id, "token": ""}
        else:
            headers |= {"X-Session-Id": b.session_id, "Authorization": "Bearer"}
        assert_error(await connect_refused(client, base, query, headers), 403)
        assert await sync(client, b) == []


async def test_tokens_that_disagree_are_403(
    client: httpx.AsyncClient, base: str, room: str
) -> None:
    async with join(client, base, room) as b:
        query = {"room": room, "session_id": b.session_id, "token": b.token}
        response = await connect_refused(client, base, query, {"X-Token": str(uuid.uuid4())})
        assert_error(response, 403)


async def test_unknown_session_id_makes_a_new_session(
    client: httpx.AsyncClient, base: str, room: str
) -> None:
    unknown, token = str(uuid.uuid4()), str(uuid.uuid4())
    async with (
        join(client, base, room) as a,
        join(client, base, room, session_id=unknown, token=token) as b,
    ):
        assert b.resumed is False
        assert b.session_id not in (unknown, a.session_id)
        assert b.token != token
        assert b.roster == [a.session_id, b.session_id]
        event = await a.stream.next()
        assert event.data == {"peers": [a.session_id, b.session_id]}


async def test_session_id_of_another_room_makes_a_new_session(
    client: httpx.AsyncClient, base: str, room: str
) -> None:
    async with join(client, base, room + "-other") as elsewhere:
        params = {"session_id": elsewhere.session_id, "token": elsewhere.token}
        async with join(client, base, room, headers=None, **params) as here:
            assert here.resumed is False
            assert here.session_id != elsewhere.session_id
        assert await sync(client, elsewhere) == []


@pytest.mark.parametrize(
    "bad_id",
    ["abc", "123", "x" * 36, str(uuid.uuid4()).replace("-", ""), f"{{{uuid.uuid4()}}}"],
    ids=["word", "digits", "36-chars", "no-dashes", "braces"],
)
@pytest.mark.parametrize("where", ["query", "header"])
async def test_non_uuid_session_id_is_400(
    client: httpx.AsyncClient, base: str, room: str, bad_id: str, where: str
) -> None:
    if where == "query":
        response = await connect_refused(client, base, {"room": room, "session_id": bad_id})
    else:
        headers = {"X-Session-Id": bad_id}
        response = await connect_refused(client, base, {"room": room}, headers)
    assert_error(response, 400)


async def test_session_ids_in_query_and_header_that_differ_are_400(
    client: httpx.AsyncClient, base: str, room: str
) -> None:
    query = {"room": room, "session_id": str(uuid.uuid4())}
    response = await connect_refused(client, base, query, {"X-Session-Id": str(uuid.uuid4())})
    assert_error(response, 400)


# --- Last-Event-ID --------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["header", "query"])
async def test_last_event_id_replays_later_signals_with_new_ids(
    client: httpx.AsyncClient, base: str, room: str, via: str
) -> None:
    async with join(client, base, room) as a, join(client, base, room) as b:
        for n in range(5):
            await send_ok(client, base, a, b, {"n": n})
        sent = await signals(b, 5)
        lei = str(sent[1].id)
        params = {"session_id": b.session_id, "token": b.token}
        headers = {"Last-Event-ID": lei} if via == "header" else {}
        if via == "query":
            params["last_event_id"] = lei
        async with join(client, base, room, headers=headers, **params) as b2:
            assert b2.resumed
            replayed = await signals(b2, 3)
            assert payloads(replayed) == [{"n": 2}, {"n": 3}, {"n": 4}]
            assert all(e.data["from"] == a.session_id for e in replayed)
            assert replayed[0].id > b.stream.last_id  # new ids, still growing
            await send_ok(client, base, a, b2, {"n": 5})
            assert payloads(await signals(b2, 1)) == [{"n": 5}]  # nothing twice


async def test_replay_can_be_asked_for_again(
    client: httpx.AsyncClient, base: str, room: str
) -> None:
    """A client that never saw the replayed events asks again from the same id."""
    async with join(client, base, room) as a, join(client, base, room) as b:
        for n in range(3):
            await send_ok(client, base, a, b, {"n": n})
        sent = await signals(b, 3)
        params = {"session_id": b.session_id, "token": b.token}
        headers = {"Last-Event-ID": str(sent[0].id)}
        async with join(client, base, room, headers=headers, **params) as b2:
            first = await signals(b2, 2)
        async with join(client, base, room, headers=headers, **params) as b3:
            again = await signals(b3, 2)
            assert payloads(again) == payloads(first) == [{"n": 1}, {"n": 2}]
            assert again[0].id > first[-1].id
        headers = {"Last-Event-ID": str(again[-1].id)}
        async with join(client, base, room, headers=headers, **params) as b4:
            assert await sync(client, b4) == []  # all seen: nothing replayed


async def test_header_last_event_id_wins_over_the_query_parameter(
    client: httpx.AsyncClient, base: str, room: str
) -> None:
    """A browser keeps its first URL (with ``last_event_id``) and sends a newer header."""
    async with join(client, base, room) as a, join(client, base, room) as b:
        for n in range(4):
            await send_ok(client, base, a, b, {"n": n})
        sent = await signals(b, 4)
        params = {"session_id": b.session_id, "token": b.token, "last_event_id": str(sent[0].id)}
        headers = {"Last-Event-ID": str(sent[2].id)}
        async with join(client, base, room, headers=headers, **params) as b2:
            assert payloads(await signals(b2, 1)) == [{"n": 3}]
            assert await sync(client, b2) == []


@pytest.mark.parametrize("send_before_noticed", [True, False], ids=["at-once", "after-drop"])
async def test_eventsource_reconnect_with_only_url_and_last_event_id(
    client: httpx.AsyncClient, base: str, room: str, send_before_noticed: bool
) -> None:
    """What a browser's EventSource does on its own: the same URL plus Last-Event-ID (of
    the last event it saw, a heartbeat maybe). Same session back, no signal lost."""
    async with join(client, base, room) as a:
        async with join(client, base, room) as b:
            await a.stream.next()
            await send_ok(client, base, a, b, {"n": 1})
            await signals(b, 1)
            lei = b.stream.last_id
        # Sent at once, this goes to the dropped connection (the server has not noticed
        # yet) and comes back by replay; sent after the drop is noticed, it is queued.
        await send_ok(client, base, a, b, {"n": 2})
        expected = [{"n": 2}]
        if not send_before_noticed:
            await sync(client, a)
            await trio.sleep(1.0)  # the server notices a dropped stream within a second
            await send_ok(client, base, a, b, {"n": 3})
            expected.append({"n": 3})
        async with join(client, base, room, headers={"Last-Event-ID": str(lei)}) as b2:
            assert b2.first[0].data == {
                "session_id": b.session_id,
                "token": b.token,
                "room": room,
                "resumed": True,
                "ice_servers": [],
                "max_batch": MAX_BATCH,
            }
            assert b2.roster == [a.session_id, b.session_id]
            assert b2.first[0].id > lei
            assert payloads(await sync(client, b2)) == expected  # replay, then the queue
            assert await sync(client, a) == []


async def test_eventsource_reconnect_while_the_old_stream_looks_alive(
    client: httpx.AsyncClient, base: str, room: str
) -> None:
    async with join(client, base, room) as a, join(client, base, room) as b:
        await a.stream.next()
        await send_ok(client, base, a, b, {"n": 1})
        lei = (await signals(b, 1))[0].id
        async with join(client, base, room, headers={"Last-Event-ID": str(lei)}) as b2:
            assert b2.resumed and b2.session_id == b.session_id
            assert (await b.stream.next()).data == {"reason": "replaced"}
            assert await sync(client, b2) == []
            assert await sync(client, a) == []


FULLWIDTH_DIGITS = "\uff11\uff12\uff13"
BAD_LEIS = ["abc", "-1", "1.5", "1e30", "0", "", "9" * 39, "9" * 81, "0x10", "1 2"]


@pytest.mark.parametrize(
    ("via", "lei"),
    [("header", lei) for lei in BAD_LEIS]
    + [("query", lei) for lei in [*BAD_LEIS, FULLWIDTH_DIGITS]],
    ids=lambda v: repr(v),
)
async def test_bad_or_unknown_last_event_id_alone_makes_a_new_session(
    client: httpx.AsyncClient, base: str, room: str, lei: str, via: str
) -> None:
    async with join(client, base, room) as a:
        await send_ok(client, base, a, a, {"own": 1})
        await a.stream.next()
        headers = {"Last-Event-ID": lei} if via == "header" else {}
        params = {"last_event_id": lei} if via == "query" else {}
        async with join(client, base, room, headers=headers, **params) as b:
            assert b.resumed is False
            assert b.session_id != a.session_id
            assert await sync(client, b) == []


@pytest.mark.parametrize("lei", ["abc", "-5", "", "1" * 100, "42"], ids=lambda v: repr(v))
async def test_bad_or_unknown_last_event_id_is_ignored_when_resuming(
    client: httpx.AsyncClient, base: str, room: str, lei: str
) -> None:
    async with join(client, base, room) as a, join(client, base, room) as b:
        await send_ok(client, base, a, b, {"n": 1})
        await signals(b, 1)
        params = {"session_id": b.session_id, "token": b.token}
        for headers, extra in (({"Last-Event-ID": lei}, {}), ({}, {"last_event_id": lei})):
            async with join(client, base, room, headers=headers, **params, **extra) as b2:
                assert b2.resumed
                assert await sync(client, b2) == []  # nothing replayed


async def test_last_event_id_of_another_session_replays_nothing(
    client: httpx.AsyncClient, base: str, room: str
) -> None:
    async with (
        join(client, base, room) as a,
        join(client, base, room) as b,
        join(client, base, room) as c,
    ):
        await b.stream.next()  # roster with c
        await send_ok(client, base, a, b, {"for": "b"})
        b_lei = (await signals(b, 1))[0].id
        params = {"session_id": c.session_id, "token": c.token}
        async with join(client, base, room, headers={"Last-Event-ID": "0"}, **params) as c2:
            assert c2.session_id == c.session_id
        headers = {"Last-Event-ID": str(b_lei - 1)}
        async with join(client, base, room, headers=headers, **params) as c3:
            assert c3.session_id == c.session_id
            assert await sync(client, c3) == []  # b's signal is not c's to replay
        assert await sync(client, b) == []  # and b keeps its stream


async def test_last_event_id_is_no_key_to_another_room(
    client: httpx.AsyncClient, base: str, room: str
) -> None:
    async with join(client, base, room) as b:
        headers = {"Last-Event-ID": str(b.stream.last_id)}
        async with join(client, base, room + "-elsewhere", headers=headers) as other:
            assert not other.resumed and other.session_id != b.session_id
        assert await sync(client, b) == []


async def test_replay_holds_at_least_the_last_256_signals(
    client: httpx.AsyncClient, base: str, room: str
) -> None:
    """256 signals (from two senders, each within its rate limit) all come back."""
    async with (
        join(client, base, room) as a,
        join(client, base, room) as c,
        join(client, base, room) as b,
    ):
        await a.stream.next()
        start = b.stream.last_id
        for n in range(128):
            await send_ok(client, base, a, b, {"n": n})
            await send_ok(client, base, c, b, {"n": n})
        sent = [e.data for e in await signals(b, 256)]
        params = {"session_id": b.session_id, "token": b.token}
        async with join(client, base, room, headers={"Last-Event-ID": str(start)}, **params) as b2:
            replayed = [e.data for e in await signals(b2, 256)]
            assert replayed == sent
            assert await sync(client, b2) == []


# --- under load ----------------------------------------------------------------------------


async def test_no_signal_lost_across_reconnections_while_a_peer_keeps_sending(
    client: httpx.AsyncClient, base: str, room: str
) -> None:
    """b reconnects over and over with the last id it read (as EventSource does) while a
    sends without pause: everything arrives, in order, exactly once."""
    total = 150
    async with join(client, base, room) as a, AsyncExitStack() as stack:
        b = await stack.enter_async_context(join(client, base, room))
        await a.stream.next()
        seen: list[int] = []

        async def sender() -> None:
            for n in range(total):
                await send_ok(client, base, a, b, {"n": n})

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            current = b
            while len(seen) < total:
                for _ in range(10):
                    if len(seen) == total:
                        break
                    event = await current.stream.next()
                    assert event.event == "signal", event
                    seen.append(event.data["signal"]["n"])
                if len(seen) < total:
                    headers = {"Last-Event-ID": str(current.stream.last_id)}
                    # The old stream is abandoned unread, as a dropped connection is.
                    current = await stack.enter_async_context(
                        join(client, base, room, headers=headers)
                    )
                    assert current.resumed and current.session_id == b.session_id
        assert seen == list(range(total))
        assert await sync(client, current) == []


async def _reconnect_at_once(
    client: httpx.AsyncClient, base: str, room: str, b: Peer, n: int, stack: AsyncExitStack
) -> tuple[list[Peer], list[httpx.Response]]:
    """``n`` reconnections of ``b`` at the same moment: the streams opened, and the refusals."""
    streams: list[Peer] = []
    refused: list[httpx.Response] = []

    async def reconnect() -> None:
        params = {"room": room, "session_id": b.session_id, "token": b.token}
        response = await stack.enter_async_context(
            client.stream("GET", f"{base}/api/connect", params=params, timeout=STREAM_TIMEOUT)
        )
        if response.status_code != 200:
            await response.aread()
            refused.append(response)
            return
        stream = EventStream(response)
        session, roster = await stream.next(), await stream.next()
        assert session.data["resumed"] and session.data["session_id"] == b.session_id
        streams.append(Peer(stream, b.session_id, b.token, room, [session, roster], base))

    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(reconnect)
    return streams, refused


async def test_concurrent_reconnections_leave_one_stream(
    client: httpx.AsyncClient, base: str, room: str
) -> None:
    async with join(client, base, room) as a, join(client, base, room) as b:
        await a.stream.next()
        async with AsyncExitStack() as stack:
            streams, refused = await _reconnect_at_once(client, base, room, b, 5, stack)
            assert refused == []  # a stream replaced before it started still opens
            await send_ok(client, base, a, b, {"who": "gets it"})
            open_streams = 0
            for peer in [b, *streams]:
                event = await peer.stream.next()
                if event.event == "bye":
                    assert event.data == {"reason": "replaced"}
                    assert await peer.stream.expect_end() == []
                else:
                    assert event.data["signal"] == {"who": "gets it"}
                    open_streams += 1
            assert open_streams == 1
            assert await sync(client, a) == []


async def test_a_stream_replaced_before_it_started_still_gets_bye(
    client: httpx.AsyncClient, base: str
) -> None:
    """Two reconnections of one session at once: both must get a 200 stream, and the one
    that lost must end with bye replaced. A 503 (with Retry-After) invites the loser to
    retry, and so to take the session back from the winner."""
    for _ in range(20):
        room = new_room()
        async with join(client, base, room) as b, AsyncExitStack() as stack:
            streams, refused = await _reconnect_at_once(client, base, room, b, 2, stack)
            assert [r.status_code for r in refused] == []
            assert len(streams) == 2
