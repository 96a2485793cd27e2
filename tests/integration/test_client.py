"""The Python client (roomkeeper.client) against an embedded server, and against a
scripted transport for the cases a real server does not produce on demand."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import attrs
import httpx
import pytest
import trio

from roomkeeper.client import (
    Bye,
    ClientError,
    ConnectionLost,
    EndOfEvents,
    Event,
    IceServersUnsupported,
    Peer,
    Reconnected,
    RequestRejected,
    Roster,
    SignalReceived,
    join,
)
from roomkeeper.client.sse import SseDecoder, SseEvent
from roomkeeper.signaling import MAX_BATCH
from roomkeeper.testing import AsyncEmbeddedServer, serve_async

# --- helpers ------------------------------------------------------------------------------


@pytest.fixture
async def embedded() -> AsyncIterator[AsyncEmbeddedServer]:
    """An embedded server in the test's loop, with a grace period long enough that no
    session expires while a test keeps a peer away."""
    async with serve_async(grace=15) as server:
        yield server


async def until(peer: Peer, done: Callable[[Event], bool], wait: float = 10) -> list[Event]:
    """Events of ``peer`` up to and including the first for which ``done`` is true."""
    seen: list[Event] = []
    with trio.fail_after(wait):
        async for event in peer:
            seen.append(event)
            if done(event):
                return seen
    raise AssertionError(f"iteration ended first: {seen}")


async def next_signal(peer: Peer) -> SignalReceived:
    """The next signal ``peer`` receives (other events are skipped)."""
    [*_, event] = await until(peer, lambda e: isinstance(e, SignalReceived))
    assert isinstance(event, SignalReceived)
    return event


async def quiet(peer: Peer, wait: float = 0.3) -> list[Event]:
    """Whatever ``peer`` yields in the next ``wait`` seconds."""
    seen: list[Event] = []
    with trio.move_on_after(wait):
        async for event in peer:
            seen.append(event)
    return seen


def signals(events: list[Event]) -> list[Any]:
    return [e.signal for e in events if isinstance(e, SignalReceived)]


def has_peers(*peers: Peer) -> Callable[[Event], bool]:
    wanted = {p.session_id for p in peers}
    return lambda e: isinstance(e, Roster) and set(e.peers) == wanted


async def connected(server: AsyncEmbeddedServer, room: str, session_id: str) -> bool:
    return any(s.connected for s in await server.sessions(room) if s.session_id == session_id)


@attrs.define(eq=False)
class Link:
    down: trio.SocketStream
    up: trio.SocketStream
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    freeze: bool = False


@attrs.define(eq=False)
class Proxy:
    """A TCP proxy in front of the server, whose connections a test can break:
    ``cut()`` closes them (both ends see it), ``freeze()`` stops forwarding and keeps
    them open (nobody notices but by a timeout). ``refusing`` closes new ones at once."""

    target: str
    url: str = ""
    refusing: bool = False
    links: list[Link] = attrs.Factory(list)
    held: list[trio.SocketStream] = attrs.Factory(list)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        task_status.started()
        try:
            await trio.serve_listeners(self._link, listeners)
        finally:
            for stream in self.held:
                stream.socket.close()

    async def _link(self, down: trio.SocketStream) -> None:
        if self.refusing:
            await down.aclose()
            return
        host, port = self.target.rsplit("/", 1)[1].rsplit(":", 1)
        link = Link(down, await trio.open_tcp_stream(host, int(port)))
        self.links.append(link)
        with link.scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, link.down, link.up, nursery.cancel_scope)
                nursery.start_soon(self._pump, link.up, link.down, nursery.cancel_scope)
        if link.freeze:  # keep both ends open and silent (trio closes ``down`` on return)
            self.held.append(link.up)
            await trio.sleep_forever()
        link.down.socket.close()
        link.up.socket.close()

    @staticmethod
    async def _pump(src: trio.SocketStream, dst: trio.SocketStream, done: trio.CancelScope) -> None:
        try:
            async for data in src:
                await dst.send_all(data)
        except trio.BrokenResourceError:
            pass
        done.cancel()

    def _break(self, freeze: bool) -> None:
        for link in self.links:
            link.freeze = freeze
            link.scope.cancel()
        self.links.clear()

    def cut(self) -> None:
        self._break(freeze=False)

    def freeze(self) -> None:
        self._break(freeze=True)


@pytest.fixture
async def proxy(embedded: AsyncEmbeddedServer, nursery: trio.Nursery) -> Proxy:
    proxy = Proxy(embedded.url)
    await nursery.start(proxy.run)
    return proxy


# --- against a real server ----------------------------------------------------------------


async def test_two_peers_see_each_other_and_exchange_signals(
    embedded: AsyncEmbeddedServer,
) -> None:
    async with join(embedded.url, "pair") as alice:
        assert list(alice.roster) == [alice.session_id]
        assert uuid.UUID(alice.session_id).version == 4 and alice.token
        async with join(embedded.url, "pair") as bob:
            assert bob.roster == (alice.session_id, bob.session_id)  # join order
            await until(alice, has_peers(alice, bob))
            assert alice.roster == bob.roster

            offer = {"type": "offer", "sdp": "v=0\r\n", "odd": "a\u2028b", "big": 2**70}
            await alice.send(bob.session_id, offer)
            got = await next_signal(bob)
            assert got == SignalReceived(alice.session_id, offer, got.event_id)

            await bob.send(alice.session_id, {"type": "answer"})
            await alice.send(alice.session_id, {"to": "myself"})
            answer = await next_signal(alice)
            mine = await next_signal(alice)
            assert (answer.from_, answer.signal) == (bob.session_id, {"type": "answer"})
            assert (mine.from_, mine.signal) == (alice.session_id, {"to": "myself"})


async def test_leaving_on_exit_takes_the_peer_out_of_the_roster(
    embedded: AsyncEmbeddedServer,
) -> None:
    async with join(embedded.url, "exit") as alice:
        async with join(embedded.url, "exit") as bob:
            await until(alice, has_peers(alice, bob))
            gone = bob.session_id
        await until(alice, has_peers(alice))
        assert gone not in alice.roster
        assert [s.session_id for s in await embedded.sessions("exit")] == [alice.session_id]


async def test_leave_ends_iteration_with_bye_left(embedded: AsyncEmbeddedServer) -> None:
    async with join(embedded.url, "leave") as alice:
        await alice.leave()
        await alice.leave()  # harmless
        events = [event async for event in alice]
        assert events[-1] == Bye("left")
        with pytest.raises(Exception, match="left the room"):
            await alice.send(alice.session_id, {})


async def hold_stream(
    url: str, room: str, headers: dict[str, str], *, task_status: trio.TaskStatus[None]
) -> None:
    """Open a stream with ``headers``, tell the caller once it began, and keep it open."""
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream("GET", f"{url}/api/connect", params={"room": room}, headers=headers) as r,
    ):
        assert r.status_code == 200
        async for _ in r.aiter_raw():
            task_status.started()
            await trio.sleep_forever()


async def test_a_replaced_stream_ends_and_does_not_leave(embedded: AsyncEmbeddedServer) -> None:
    async with trio.open_nursery() as nursery:
        async with join(embedded.url, "twice") as first:
            sid, token = first.session_id, first.token
            credentials = {"X-Session-Id": sid, "X-Token": token}
            await nursery.start(hold_stream, embedded.url, "twice", credentials)
            events = [event async for event in first]
            assert events[-1] == Bye("replaced")
        # the session lives on in the other stream: leaving would have ended it
        assert await connected(embedded, "twice", sid)
        nursery.cancel_scope.cancel()


async def test_errors_are_typed(embedded: AsyncEmbeddedServer) -> None:
    with pytest.raises(RequestRejected) as bad_room:
        async with join(embedded.url, ""):
            pass
    assert bad_room.value.status == 400
    async with join(embedded.url, "errors") as alice:
        with pytest.raises(RequestRejected) as stranger:
            await alice.send(str(uuid.uuid4()), {"hello": 1})
        assert stranger.value.status == 404
        with pytest.raises(RequestRejected) as thief:
            async with join(embedded.url, "errors", session_id=alice.session_id, token="x"):
                pass
        assert thief.value.status == 403
    with pytest.raises(ConnectionLost):
        async with join("http://127.0.0.1:9", "nowhere", retries=1):
            pass


async def test_a_resent_signal_id_is_delivered_once(embedded: AsyncEmbeddedServer) -> None:
    async with join(embedded.url, "once") as alice, join(embedded.url, "once") as bob:
        await alice.send(bob.session_id, {"n": 1}, id="offer-1")
        await alice.send(bob.session_id, {"n": 1}, id="offer-1")  # as a retry would
        await alice.send(bob.session_id, {"n": 2})
        events = await until(bob, lambda e: isinstance(e, SignalReceived) and e.signal["n"] == 2)
        assert signals(events) == [{"n": 1}, {"n": 2}]


async def test_send_waits_out_the_rate_limit() -> None:
    async with (
        serve_async(rate_burst=1, rate_refill=1) as server,
        join(server.url, "slow") as alice,
        join(server.url, "slow") as bob,
    ):
        await alice.send(bob.session_id, {"n": 1})
        await alice.send(bob.session_id, {"n": 2})  # 429, Retry-After: 1, then 200
        events = await until(bob, lambda e: isinstance(e, SignalReceived) and e.signal["n"] == 2)
        assert signals(events) == [{"n": 1}, {"n": 2}]


async def test_a_session_resumes_in_a_new_join(embedded: AsyncEmbeddedServer) -> None:
    async with join(embedded.url, "later") as bob:
        async with join(embedded.url, "later", leave_on_exit=False) as alice:
            await until(bob, has_peers(bob, alice))
            await bob.send(alice.session_id, {"n": 1})
            await until(alice, lambda e: isinstance(e, SignalReceived))
            saved = (alice.session_id, alice.token, alice.last_event_id)
        await bob.send(saved[0], {"n": 2})  # queued while alice is away
        sid, token, last = saved
        async with join(
            embedded.url, "later", session_id=sid, token=token, last_event_id=last
        ) as again:
            assert (again.session_id, again.resumed) == (sid, True)
            events = await until(again, lambda e: isinstance(e, SignalReceived))
            assert signals(events) == [{"n": 2}]
            assert signals(await quiet(again)) == []


async def test_resumes_after_a_dropped_connection_losing_nothing(
    embedded: AsyncEmbeddedServer, proxy: Proxy
) -> None:
    """Both ends see the drop: the server queues what is sent meanwhile."""
    async with (
        join(proxy.url, "drop") as alice,
        join(embedded.url, "drop") as bob,
    ):
        sid = alice.session_id
        await until(alice, has_peers(alice, bob))
        await until(bob, has_peers(alice, bob))
        await bob.send(sid, {"n": 0})
        await until(alice, lambda e: isinstance(e, SignalReceived))

        proxy.refusing = True
        proxy.cut()
        with trio.fail_after(10):
            # polling the server's view of the session: there is no event to wait for
            while await connected(embedded, "drop", sid):  # noqa: ASYNC110
                await trio.sleep(0.02)
        for n in range(1, 6):
            await bob.send(sid, {"n": n})
        proxy.refusing = False

        events = await until(alice, lambda e: isinstance(e, SignalReceived) and e.signal["n"] == 5)
        assert Reconnected(sid, resumed=True) in events
        assert signals(events) == [{"n": n} for n in range(1, 6)]  # once, in order
        assert signals(await quiet(alice)) == []
        assert (alice.session_id, alice.roster) == (sid, (sid, bob.session_id))
        assert not [e for e in await quiet(bob) if isinstance(e, Roster)]  # peers saw nothing


async def test_resumes_after_a_silent_network_failure(embedded: AsyncEmbeddedServer) -> None:
    """Nobody sees the drop: the client notices by the missing heartbeats, the server
    keeps writing to the dead connection; Last-Event-ID brings those signals back."""
    async with trio.open_nursery() as nursery:
        proxy = Proxy(embedded.url)
        await nursery.start(proxy.run)
        async with (
            join(proxy.url, "silent", idle_timeout=2.5) as alice,
            join(embedded.url, "silent") as bob,
        ):
            sid = alice.session_id
            await until(alice, has_peers(alice, bob))
            await bob.send(sid, {"n": 0})
            await until(alice, lambda e: isinstance(e, SignalReceived))

            proxy.freeze()
            for n in range(1, 6):
                await bob.send(sid, {"n": n})
            assert await connected(embedded, "silent", sid)  # the server did not notice

            last = lambda e: isinstance(e, SignalReceived) and e.signal["n"] == 5  # noqa: E731
            events = await until(alice, last)
            assert Reconnected(sid, resumed=True) in events
            assert signals(events) == [{"n": n} for n in range(1, 6)]
            assert signals(await quiet(alice)) == []
        nursery.cancel_scope.cancel()


async def test_comes_back_as_a_new_session_after_expiry() -> None:
    async with (
        serve_async(grace=0.5) as server,
        trio.open_nursery() as nursery,
    ):
        proxy = Proxy(server.url)
        await nursery.start(proxy.run)
        async with (
            join(proxy.url, "expiry", reconnect_timeout=60) as alice,
            join(server.url, "expiry") as bob,
        ):
            old = alice.session_id
            await until(bob, has_peers(alice, bob))
            proxy.refusing = True
            proxy.cut()
            await until(bob, lambda e: isinstance(e, Roster) and e.peers == (bob.session_id,))
            proxy.refusing = False

            events = await until(alice, lambda e: isinstance(e, Reconnected))
            new = alice.session_id
            assert events[-1] == Reconnected(new, resumed=False) and new != old
            await until(bob, lambda e: isinstance(e, Roster) and new in e.peers)
            await bob.send(new, {"after": "expiry"})
            got = await until(alice, lambda e: isinstance(e, SignalReceived))
            assert signals(got) == [{"after": "expiry"}]  # ids of the new session get through
        nursery.cancel_scope.cancel()


# --- against a scripted transport ---------------------------------------------------------

HOLD = object()
"""In a scripted stream: stay open until cancelled."""


def sse(event_id: int, event: str, data: Any) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (
        event_id,
        event.encode(),
        json.dumps(data).encode(),
    )


SID, TOKEN = str(uuid.uuid4()), str(uuid.uuid4())
OTHER = str(uuid.uuid4())


def hello(event_id: int, *, resumed: bool, sid: str = SID) -> bytes:
    session = {"session_id": sid, "token": TOKEN, "room": "r", "resumed": resumed}
    return b"retry: 100\n\n" + sse(event_id, "session", session)


@attrs.define
class Script:
    """A fake server: each GET /api/connect plays the next scripted stream (chunks,
    exceptions to raise, or HOLD) or returns the next scripted response; each POST
    gets the next scripted answer (default 200)."""

    streams: list[list[Any] | httpx.Response | Exception]
    posts: list[httpx.Response | Exception] = attrs.Factory(list)
    requests: list[httpx.Request] = attrs.Factory(list)
    times: list[float] = attrs.Factory(list)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(trio.current_time())
        answer: list[Any] | httpx.Response | Exception
        if request.method == "POST":
            answer = self.posts.pop(0) if self.posts else httpx.Response(200, json={})
        elif self.streams:
            answer = self.streams.pop(0)
        else:
            answer = httpx.ConnectError("no more streams")
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer

        async def body() -> AsyncIterator[bytes]:
            for part in answer:
                if part is HOLD:
                    await trio.sleep_forever()
                if isinstance(part, Exception):
                    raise part
                yield part

        return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, content=body())

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self))

    def connects(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "GET"]

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if r.method == "POST"]


def signal_event(event_id: int, n: int) -> bytes:
    return sse(event_id, "signal", {"from": OTHER, "signal": {"n": n}})


async def test_reconnects_after_a_clean_end_and_drops_repeated_ids(autojump_clock: Any) -> None:
    script = Script(
        [
            [hello(10, resumed=False), sse(11, "roster", {"peers": [SID]}), signal_event(12, 1)],
            [
                hello(20, resumed=True),
                sse(21, "roster", {"peers": [SID]}),
                signal_event(12, 1),  # an id already seen: dropped
                signal_event(22, 2),
                HOLD,
            ],
        ]
    )
    async with script.client() as http, join("http://rk", "r", http=http) as peer:
        events = await until(peer, lambda e: isinstance(e, SignalReceived) and e.signal["n"] == 2)
    assert signals(events) == [{"n": 1}, {"n": 2}]
    assert Reconnected(SID, resumed=True) in events
    first, second = script.connects()[:2]
    assert "Last-Event-ID" not in first.headers and "X-Session-Id" not in first.headers
    assert second.headers["Last-Event-ID"] == "12"
    assert second.headers["X-Session-Id"] == SID
    assert second.headers["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in str(second.url)


async def test_reconnects_after_bye_shutdown_and_a_network_error(autojump_clock: Any) -> None:
    script = Script(
        [
            [
                hello(10, resumed=False),
                sse(11, "roster", {"peers": [SID]}),
                sse(12, "bye", {"reason": "shutdown"}),
            ],
            httpx.ConnectError("refused"),
            [
                hello(20, resumed=True),
                sse(21, "roster", {"peers": [SID]}),
                httpx.ReadError("reset"),
            ],
            [hello(30, resumed=True), sse(31, "roster", {"peers": [SID]}), HOLD],
        ]
    )
    async with script.client() as http, join("http://rk", "r", http=http) as peer:
        events = await until(peer, lambda e: e == Reconnected(SID, True))
        assert events[-2:] == [Bye("shutdown"), Reconnected(SID, True)]
        await until(peer, lambda e: e == Reconnected(SID, True))
        assert peer.last_event_id == 31


async def test_an_expired_session_comes_back_as_a_new_one(autojump_clock: Any) -> None:
    new = str(uuid.uuid4())
    script = Script(
        [
            [hello(10**20, resumed=False), sse(10**20 + 1, "roster", {"peers": [OTHER, SID]})],
            [
                hello(5, resumed=False, sid=new),  # another id space, lower ids
                sse(6, "roster", {"peers": [OTHER, new]}),
                signal_event(7, 1),
                HOLD,
            ],
        ]
    )
    async with script.client() as http, join("http://rk", "r", http=http) as peer:
        events = await until(peer, lambda e: isinstance(e, SignalReceived))
        assert Reconnected(new, resumed=False) in events
        assert Roster((OTHER, new)) in events
        assert (peer.session_id, peer.last_event_id) == (new, 7)


async def test_gives_up_after_the_reconnect_timeout(autojump_clock: Any) -> None:
    script = Script([[hello(10, resumed=False), sse(11, "roster", {"peers": [SID]})]])
    async with script.client() as http, join("http://rk", "r", http=http) as peer:
        start = trio.current_time()
        with pytest.raises(ConnectionLost):
            async for _ in peer:
                pass
        assert 30 <= trio.current_time() - start < 40
        assert len(script.connects()) > 5
    assert script.bodies() == []  # no leave once the server is gone


async def test_a_fatal_answer_on_reconnect_ends_iteration(autojump_clock: Any) -> None:
    script = Script(
        [
            [hello(10, resumed=False), sse(11, "roster", {"peers": [SID]})],
            httpx.Response(503, json={"error": "busy"}, headers={"Retry-After": "2"}),
            httpx.Response(403, json={"error": "wrong or missing token"}),
        ]
    )
    async with script.client() as http, join("http://rk", "r", http=http) as peer:
        with pytest.raises(RequestRejected) as caught:
            async for _ in peer:
                pass
    assert caught.value.status == 403 and caught.value.reason == "wrong or missing token"
    assert len(script.connects()) == 3
    assert script.bodies() == []  # no leave after the session was refused


async def test_send_retries_with_one_id_and_honours_retry_after(autojump_clock: Any) -> None:
    script = Script(
        [[hello(10, resumed=False), sse(11, "roster", {"peers": [SID]}), HOLD]],
        posts=[
            httpx.ReadError("reset"),
            httpx.Response(
                429, json={"error": "rate limit exceeded"}, headers={"Retry-After": "3"}
            ),
            httpx.Response(
                503, json={"error": "peer's queue is full"}, headers={"Retry-After": "1"}
            ),
            httpx.Response(200, json={"success": True}),
        ],
    )
    async with script.client() as http, join("http://rk", "r", http=http) as peer:
        start = trio.current_time()
        await peer.send(OTHER, {"n": 1})
        assert trio.current_time() - start >= 4
        sent = script.bodies()
        assert len(sent) == 4 and len({body["id"] for body in sent}) == 1
        assert sent[0] == {
            "sender": SID,
            "to": OTHER,
            "token": TOKEN,
            "signal": {"n": 1},
            "id": sent[0]["id"],
        }

        script.posts[:] = [httpx.Response(429, headers={"Retry-After": "1"})] * 6
        with pytest.raises(RequestRejected) as caught:
            await peer.send(OTHER, {"n": 2}, id="mine")
        assert caught.value.status == 429
        assert script.bodies()[-1]["id"] == "mine"

        script.posts[:] = [httpx.Response(400, json={"error": "signal must be an object"})]
        with pytest.raises(RequestRejected, match="400: signal must be an object"):
            await peer.send(OTHER, {"n": 3})


async def test_leave_counts_a_403_after_a_lost_answer_as_done(autojump_clock: Any) -> None:
    script = Script(
        [[hello(10, resumed=False), sse(11, "roster", {"peers": [SID]}), HOLD]],
        posts=[httpx.ReadError("lost"), httpx.Response(403, json={"error": "unknown sender"})],
    )
    async with script.client() as http, join("http://rk", "r", http=http) as peer:
        await peer.leave()
    assert script.bodies() == [{"sender": SID, "token": TOKEN}] * 2


# --- ICE servers, from recorded event data -----------------------------------------------

STUN = {"urls": ["stun:127.0.0.1:3478"]}
TURN = {
    "urls": ["turn:127.0.0.1:3478?transport=udp"],
    "username": "1700000000:" + SID,
    "credential": "c2VjcmV0LWJ5dGVz",
}


def hello_with(event_id: int, *, resumed: bool, **extra: Any) -> bytes:
    session = {"session_id": SID, "token": TOKEN, "room": "r", "resumed": resumed, **extra}
    return b"retry: 100\n\n" + sse(event_id, "session", session)


async def test_ice_servers_come_with_the_session_event(autojump_clock: Any) -> None:
    script = Script(
        [
            [
                hello_with(10, resumed=False, ice_servers=[STUN, TURN]),
                sse(11, "roster", {"peers": [SID]}),
            ],
            [hello(20, resumed=True), sse(21, "roster", {"peers": [SID]})],  # without the field
            [
                hello_with(30, resumed=True, ice_servers=[{"urls": 5}]),  # malformed: ignored
                sse(31, "roster", {"peers": [SID]}),
            ],
            [hello_with(40, resumed=True, ice_servers=[STUN]), sse(41, "roster", {"peers": [SID]})],
            [
                hello_with(50, resumed=True, ice_servers=[]),
                sse(51, "roster", {"peers": [SID]}),
                HOLD,
            ],
        ]
    )
    async with script.client() as http, join("http://rk", "r", http=http) as peer:
        assert peer.ice_servers == [STUN, TURN] and peer.ice_servers_ttl is None
        await until(peer, lambda e: isinstance(e, Reconnected))
        assert peer.ice_servers == [STUN, TURN]
        await until(peer, lambda e: isinstance(e, Reconnected))
        assert peer.ice_servers == [STUN, TURN]
        await until(peer, lambda e: isinstance(e, Reconnected))
        assert peer.ice_servers == [STUN]
        await until(peer, lambda e: isinstance(e, Reconnected))
        assert peer.ice_servers == []


async def test_a_session_without_ice_servers_has_none() -> None:
    script = Script([[hello(10, resumed=False), sse(11, "roster", {"peers": [SID]}), HOLD]])
    async with script.client() as http, join("http://rk", "r", http=http) as peer:
        assert peer.ice_servers == []


async def test_refresh_ice_servers_posts_the_session_credentials(autojump_clock: Any) -> None:
    fresh = {**TURN, "username": "1700003600:" + SID, "credential": "bmV3"}
    script = Script(
        [
            [
                hello_with(10, resumed=False, ice_servers=[TURN]),
                sse(11, "roster", {"peers": [SID]}),
                HOLD,
            ]
        ],
        posts=[
            httpx.Response(503, json={"error": "busy"}, headers={"Retry-After": "1"}),
            httpx.Response(200, json={"ice_servers": [STUN, fresh], "ttl": 3600}),
        ],
    )
    async with (
        script.client() as http,
        join("http://rk", "r", http=http, refresh_ice=False) as peer,
    ):
        assert await peer.refresh_ice_servers() == [STUN, fresh]
        assert peer.ice_servers == [STUN, fresh] and peer.ice_servers_ttl == 3600.0
        await peer.leave()
    refresh, _, leave = (r for r in script.requests if r.method == "POST")
    assert refresh.url.path == "/api/ice-servers" and refresh.url.params["room"] == "r"
    assert (
        json.loads(refresh.content) == json.loads(leave.content) == {"sender": SID, "token": TOKEN}
    )
    assert refresh.headers["Content-Type"] == leave.headers["Content-Type"]


async def test_refresh_ice_servers_says_when_the_server_has_no_endpoint(
    autojump_clock: Any,
) -> None:
    script = Script(
        [
            [
                hello_with(10, resumed=False, ice_servers=[STUN]),
                sse(11, "roster", {"peers": [SID]}),
                HOLD,
            ]
        ],
        posts=[
            httpx.Response(404, json={"error": "Not Found"}),
            httpx.Response(403, json={"error": "wrong or missing token"}),
            httpx.Response(200, json={"ice_servers": [{"urls": []}], "ttl": 60}),
            httpx.Response(200, json={"ice_servers": [STUN]}),
        ],
    )
    async with script.client() as http, join("http://rk", "r", http=http) as peer:
        with pytest.raises(IceServersUnsupported) as caught:
            await peer.refresh_ice_servers()
        assert isinstance(caught.value, RequestRejected) and caught.value.status == 404
        with pytest.raises(RequestRejected) as refused:
            await peer.refresh_ice_servers()
        assert type(refused.value) is RequestRejected and refused.value.status == 403
        for _ in range(2):  # an empty urls list; no ttl
            with pytest.raises(ClientError, match="malformed answer"):
                await peer.refresh_ice_servers()
        assert peer.ice_servers == [STUN] and peer.ice_servers_ttl is None


def ice_posts(script: Script) -> list[float]:
    """When the client posted to /api/ice-servers."""
    return [
        at
        for at, r in zip(script.times, script.requests, strict=True)
        if r.url.path == "/api/ice-servers"
    ]


async def test_ice_servers_are_refreshed_before_the_credentials_expire(
    autojump_clock: Any,
) -> None:
    turn = {**TURN, "username": f"{int(time.time()) + 1000}:{SID}"}
    fresh = {**TURN, "credential": "bmV3"}
    script = Script(
        [
            [
                hello_with(10, resumed=False, ice_servers=[turn]),
                sse(11, "roster", {"peers": [SID]}),
                HOLD,
            ]
        ],
        posts=[
            httpx.Response(200, json={"ice_servers": [fresh], "ttl": 100}),
            httpx.Response(403, json={"error": "wrong or missing token"}),
            httpx.Response(404, json={"error": "Not Found"}),
        ],
    )
    async with script.client() as http, join("http://rk", "r", http=http) as peer:
        start = trio.current_time()
        await trio.sleep(10_000)  # (and after the 404, no more tries)
        # At 80% of the credentials' life (1000 s, then 100 s); 10 s after the refused try,
        # 80% of what is left (10 s).
        times = [at - start for at in ice_posts(script)]
        assert times == pytest.approx([800, 880, 898], abs=1)
        assert peer.ice_servers == [fresh] and peer.ice_servers_ttl == 100
    assert script.bodies()[:3] == [{"sender": SID, "token": TOKEN}] * 3


@pytest.mark.parametrize(
    ("servers", "refresh"),
    [([STUN], True), ([{**TURN, "username": "bob"}], True), ([TURN], False)],
    ids=["stun-only", "no-expiry-in-username", "refresh-off"],
)
async def test_no_refresh_without_expiring_credentials_or_when_off(
    autojump_clock: Any, servers: list[dict[str, Any]], refresh: bool
) -> None:
    script = Script(
        [
            [
                hello_with(10, resumed=False, ice_servers=servers),
                sse(11, "roster", {"peers": [SID]}),
                HOLD,
            ]
        ]
    )
    async with script.client() as http, join("http://rk", "r", http=http, refresh_ice=refresh):
        await trio.sleep(80_000)
    assert ice_posts(script) == []


async def test_ice_servers_from_a_server_with_turn_settings() -> None:
    """Against a real server with STUN and TURN settings: the session event's list, then
    fresh credentials from POST /api/ice-servers, shaped as coturn checks them."""
    turn = {
        "stun_uris": ("stun:127.0.0.1:3478",),
        "turn_uris": ("turn:127.0.0.1:3478?transport=udp",),
        "turn_secret": "coturn-static-secret-0123",
        "turn_ttl": 600,
    }
    async with serve_async(**turn) as server, join(server.url, "turn") as alice:
        stun, relay = alice.ice_servers
        assert stun == {"urls": ["stun:127.0.0.1:3478"]}
        assert relay["urls"] == ["turn:127.0.0.1:3478?transport=udp"]
        expiry, _, session = relay["username"].partition(":")
        assert session == alice.session_id and int(expiry) > time.time()
        fresh = await alice.refresh_ice_servers()
        assert alice.ice_servers == fresh and alice.ice_servers_ttl == 600
        assert fresh[1]["username"].endswith(":" + alice.session_id)
        assert "coturn-static-secret-0123" not in repr(fresh)


# --- batches ------------------------------------------------------------------------------


async def test_send_batch_carries_many_signals_per_post(embedded: AsyncEmbeddedServer) -> None:
    async with join(embedded.url, "batch") as alice, join(embedded.url, "batch") as bob:
        await until(alice, has_peers(alice, bob))
        assert alice.max_batch == MAX_BATCH
        await alice.send_batch([(bob.session_id, {"n": n}) for n in range(MAX_BATCH + 8)])
        got = await until(bob, lambda e: isinstance(e, SignalReceived) and e.signal["n"] == 39)
        assert signals(got) == [{"n": n} for n in range(MAX_BATCH + 8)]


async def test_a_batch_taken_in_part_is_resent_from_the_first_not_taken(
    autojump_clock: Any,
) -> None:
    cut = httpx.Response(
        429, json={"error": "rate limit exceeded", "accepted": 2}, headers={"Retry-After": "1"}
    )
    script = Script(
        [[hello_with(10, resumed=False, max_batch=4), sse(11, "roster", {"peers": [SID]}), HOLD]],
        posts=[cut, httpx.Response(200, json={"success": True, "accepted": 2})],
    )
    async with script.client() as http, join("http://rk", "r", http=http) as peer:
        await peer.send_batch([(OTHER, {"n": n}) for n in range(6)])
        sent = script.bodies()
        assert [[s["signal"]["n"] for s in body["signals"]] for body in sent] == [
            [0, 1, 2, 3],
            [2, 3],  # the same signals, with the same ids
            [4, 5],
        ]
        assert sent[1]["signals"] == sent[0]["signals"][2:]

        gone = httpx.Response(404, json={"error": "no such peer in this room", "accepted": 1})
        script.posts[:] = [httpx.Response(200, json={"success": True}), gone]
        with pytest.raises(RequestRejected) as caught:
            await peer.send_batch([(OTHER, {"n": n}) for n in range(7)])
        assert (caught.value.status, caught.value.accepted) == (404, 5)


async def test_send_batch_posts_one_signal_at_a_time_to_a_server_without_batches(
    autojump_clock: Any,
) -> None:
    script = Script([[hello(10, resumed=False), sse(11, "roster", {"peers": [SID]}), HOLD]])
    async with script.client() as http, join("http://rk", "r", http=http) as peer:
        assert peer.max_batch == 0
        await peer.send_batch([(OTHER, {"n": 1}), (OTHER, {"n": 2})])
        assert [(b["to"], b["signal"]) for b in script.bodies()] == [
            (OTHER, {"n": 1}),
            (OTHER, {"n": 2}),
        ]


# --- under asyncio ------------------------------------------------------------------------


async def test_runs_under_asyncio(embedded: AsyncEmbeddedServer) -> None:
    """The same client in an asyncio program (in a thread), against the embedded server."""

    async def program(url: str) -> tuple[list[Event], list[Event], type[BaseException]]:
        with anyio.fail_after(10):
            async with join(url, "asyncio") as alice, join(url, "asyncio") as bob:
                await until_anyio(alice, has_peers(alice, bob))
                await alice.send(bob.session_id, {"hello": "from asyncio"})
                got = await until_anyio(bob, lambda e: isinstance(e, SignalReceived))
                await bob.leave()
                ended = await until_anyio(bob, lambda e: e == Bye("left"))
                try:
                    await bob.receive()
                except Exception as exc:
                    end = type(exc)
                await until_anyio(alice, lambda e: e == Roster((alice.session_id,)))
        return got, ended, end

    got, ended, end = await trio.to_thread.run_sync(asyncio.run, program(embedded.url))
    assert signals(got) == [{"hello": "from asyncio"}]
    assert ended[-1] == Bye("left")
    assert end is EndOfEvents and issubclass(end, trio.EndOfChannel | anyio.EndOfStream)


async def until_anyio(peer: Peer, done: Callable[[Event], bool]) -> list[Event]:
    """`until` without trio (the caller bounds the wait)."""
    seen: list[Event] = []
    async for event in peer:
        seen.append(event)
        if done(event):
            return seen
    raise AssertionError(f"iteration ended first: {seen}")


# --- the SSE decoder ----------------------------------------------------------------------


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
@pytest.mark.parametrize("size", [1, 2, 3, 1000])
def test_sse_decoder_splits_lines_as_sse_says(eol: str, size: int) -> None:
    text = eol.join(
        [
            "retry: 250",
            "",
            ": a comment",
            "id: 7",
            "event: signal",
            'data: {"s":"a\u2028b\u0085c"}',
            "",
            "id: 8",
            "data: one",
            "data:two",
            "",
            "",
        ]
    ).encode()
    decoder = SseDecoder()
    events = []
    for start in range(0, len(text), size):
        events += decoder.feed(text[start : start + size])
    assert events == [
        SseEvent(7, "signal", '{"s":"a\u2028b\u0085c"}'),
        SseEvent(8, "message", "one\ntwo"),
    ]
    assert decoder.retry == 250
