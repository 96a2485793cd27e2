"""Synthetic peers: each joins a room, signals, may drop and reconnect, then leaves or
vanishes, talking to the real Room actor through ``ask`` and reading its real stream.

The signaling follows a mesh call: a peer that starts a session offers to everyone in its
first roster (and again after resuming, if ``ice_restart``); a peer that gets an offer
answers; each offer and answer is followed by a trickle of ICE candidates. Payloads are
``{"t": "offer" | "answer" | "ice", "n": N}``, ``N`` numbering the signal in the ledger.

The network delays each request and each stream chunk by the peer's one-way latency. A
chunk taken off the stream is *in transit* for that long: if the connection breaks
meanwhile it is lost (the peer forgets what it learned from it and resumes from the last
event id that did arrive), as bytes in flight are on a real network. Chunks are handled
when taken and committed when they arrive, so that no task sleeps per chunk (the
simulation's speed is the number of distinct instants trio has to step through).
"""

from __future__ import annotations

import math
import random
from collections import deque
from typing import Any

import attrs
import trio

from roomkeeper.jsonutil import loads
from roomkeeper.runtime import ActorStub, ActorSystem, Overloaded, RuntimeFailure
from roomkeeper.runtime.streams import Stream
from roomkeeper.signaling import Connect, Done, Joined, Leave, Refused, Signal

from .ledger import Ledger
from .workload import Workload

__all__ = ["PEER_COUNTS", "Peer", "World"]

PEER_COUNTS = (
    "rooms",
    "peers",
    "sessions",
    "resumed",
    "resumed_by_last_event_id",
    "expired_before_return",
    "drops",
    "chunks_lost_in_transit",
    "left",
    "vanished",
    "overloaded",
    "connect_refused",
    "ids_not_growing",
)
"""What the peers count, besides signals (the ledger's)."""


@attrs.define
class World:
    """What every peer of one run shares."""

    system: ActorSystem
    workload: Workload
    ledger: Ledger = attrs.Factory(Ledger)
    counts: dict[str, int] = attrs.Factory(lambda: dict.fromkeys(PEER_COUNTS, 0))


Knowledge = tuple[str | None, str, int | None, list[str], bool]
"""What a peer knows from its stream: session id, token, last event id, roster, and
whether its next roster starts an offer round."""


class _InTransit:
    """A chunk the peer took off the stream, on its way: what it held, and what the peer
    knew and did because of it (undone if it never arrives)."""

    __slots__ = ("arrives", "before", "bursts", "signals", "taken")

    def __init__(self, taken: float, arrives: float, before: Knowledge) -> None:
        self.taken = taken
        self.arrives = arrives
        self.before = before
        self.signals: list[tuple[int, bool]] = []  # (n, delivered on reconnect)
        self.bursts: list[trio.CancelScope] = []


class Peer:
    """One participant of one room, from its arrival to its leaving (or vanishing)."""

    def __init__(self, world: World, room: ActorStub, seed: int, start: float) -> None:
        self.world = world
        self.room = room
        self.start = start
        rng = random.Random(seed)
        # One generator per task, so no draw depends on how the tasks interleave.
        self.life = random.Random(rng.getrandbits(64))
        self.talk = random.Random(rng.getrandbits(64))
        self.again = random.Random(rng.getrandbits(64))
        self.latency = 0.0
        self.sid: str | None = None  # what the peer learned from its stream
        self.token = ""
        self.last_id: int | None = None
        self.roster: list[str] = []
        self.offer_on_roster = False
        self.reader: trio.CancelScope | None = None
        self.reader_done = trio.Event()
        self.nursery: trio.Nursery | None = None
        self._bursts: list[trio.CancelScope] | None = None  # of the chunk being handled

    @property
    def reading(self) -> bool:
        return self.reader is not None and not self.reader_done.is_set()

    async def run(self) -> None:
        w, counts = self.world.workload, self.world.counts
        await trio.sleep_until(self.start)
        end = self.start + w.session_length.draw(self.life)
        self.latency = w.latency.draw(self.life)
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            if w.renegotiate_per_hour > 0:
                nursery.start_soon(self._renegotiate, w.renegotiate_per_hour / 3600)
            await self._connect()
            while self.life.random() < w.drop_probability:
                await trio.sleep_until(self.life.uniform(trio.current_time(), end))
                await self._drop()
                counts["drops"] += 1
                back = trio.current_time() + w.reconnect_delay.draw(self.life)
                if back >= end:
                    break  # gone for good while away
                await trio.sleep_until(back)
                await self._connect()
            else:
                await trio.sleep_until(end)
            if self.reading and self.life.random() < w.leave_probability:
                await self._leave()
            else:
                await self._drop()
                counts["vanished"] += 1
            nursery.cancel_scope.cancel()

    # -- the stream ----------------------------------------------------------------------
    async def _connect(self) -> None:
        counts = self.world.counts
        await self._wire(self.latency)
        if self.last_id is None:
            message = Connect()
        elif self.life.random() < self.world.workload.last_event_id_only:
            message = Connect(last_event_id=self.last_id)
        else:
            message = Connect(self.sid, self.token, self.last_id)
        reply = await self._ask(message)
        if isinstance(reply, Refused):
            counts["connect_refused"] += 1
            reply = await self._ask(Connect())
        assert isinstance(reply, Joined), reply
        if reply.resumed:
            counts["resumed"] += 1
            if message.session_id is None:
                counts["resumed_by_last_event_id"] += 1
        else:
            counts["sessions"] += 1
            if self.last_id is not None:
                counts["expired_before_return"] += 1
        self.reader = trio.CancelScope()
        self.reader_done = trio.Event()
        stream = self.world.system.streams.get(reply.stream_id)
        assert self.nursery is not None
        self.nursery.start_soon(self._read, stream, reply, self.reader, self.reader_done)

    async def _drop(self) -> None:
        """The connection breaks: the stream is cancelled under the reader."""
        if self.reader is not None:
            self.reader.cancel()
            await self.reader_done.wait()

    async def _read(
        self, stream: Stream | None, joined: Joined, scope: trio.CancelScope, done: trio.Event
    ) -> None:
        """Read the stream until it ends or breaks. The ledger then learns how far the
        session's events got through: up to when the last chunk that arrived was taken."""
        transit: deque[_InTransit] = deque()
        horizon = -math.inf
        complete = False
        try:
            with scope:
                if stream is not None:
                    preamble = self.world.system.streams.codec.preamble()

                    async def take(chunk: bytes) -> None:
                        nonlocal preamble, horizon
                        if preamble:  # the codec's `retry:`, before any event (or with them)
                            chunk, preamble = chunk.removeprefix(preamble), b""
                            if not chunk:
                                return
                        now = trio.current_time()
                        horizon = self._arrived(transit, now, joined, horizon)
                        transit.append(self._take(chunk, joined, now))

                    await self.world.system.streams.pump(stream, take)
                complete = True  # the server ended it: what is in transit arrives
        finally:
            now = math.inf if complete else trio.current_time()
            horizon = self._arrived(transit, now, joined, horizon)
            if transit:
                self._lost(transit)
            if horizon > -math.inf:
                self.world.ledger.stream_ended(joined.session_id, horizon)
            done.set()

    def _arrived(
        self, transit: deque[_InTransit], until: float, joined: Joined, horizon: float
    ) -> float:
        """Commit the chunks that arrived by ``until``; the new horizon."""
        ledger = self.world.ledger
        while transit and transit[0].arrives <= until:
            chunk = transit.popleft()
            for n, redelivered in chunk.signals:
                ledger.received(n, joined.session_id, chunk.arrives, redelivered=redelivered)
            horizon = chunk.taken
        return horizon

    def _lost(self, transit: deque[_InTransit]) -> None:
        """The connection broke with these chunks on the way: undo them."""
        self.world.counts["chunks_lost_in_transit"] += len(transit)
        self._know(transit[0].before)
        for chunk in transit:
            for scope in chunk.bursts:
                scope.cancel()
        transit.clear()

    def _knowledge(self) -> Knowledge:
        return (self.sid, self.token, self.last_id, self.roster, self.offer_on_roster)

    def _know(self, knowledge: Knowledge) -> None:
        self.sid, self.token, self.last_id, self.roster, self.offer_on_roster = knowledge

    def _take(self, chunk: bytes, joined: Joined, now: float) -> _InTransit:
        """Handle a chunk of the SSE frames ``SseCodec`` writes (``id``, ``event``,
        ``data``); what it changes and starts is recorded, to undo if it is lost."""
        taken = _InTransit(now, now + self.latency, self._knowledge())
        self._bursts = taken.bursts
        reply_after = 2 * self.latency  # the chunk's trip, then the reply's
        hello = False  # the chunk that opened a resumed stream: queued or replayed signals
        for frame in chunk.split(b"\n\n"):
            if not frame.startswith(b"id: "):
                continue  # a comment or nothing
            head, _, data = frame.partition(b"\ndata: ")
            id_text, _, event = head.partition(b"\nevent: ")
            event_id = int(id_text[4:])
            if event == b"session":
                hello = True
                self._on_session(loads(data))
            if self.last_id is not None and event_id <= self.last_id:
                self.world.counts["ids_not_growing"] += 1
            self.last_id = event_id
            if event == b"signal":
                message = loads(data)
                signal = message["signal"]
                taken.signals.append((signal["n"], hello and joined.resumed))
                if signal["t"] == "offer":
                    self._burst(message["from"], "answer", self.talk, reply_after)
            elif event == b"roster":
                self.roster = loads(data)["peers"]
                if self.offer_on_roster:
                    self.offer_on_roster = False
                    self._offer_to_all(self.talk, reply_after)
        self._bursts = None
        return taken

    def _on_session(self, data: dict[str, Any]) -> None:
        if not data["resumed"]:
            self.last_id = None  # a new session numbers its events afresh
        self.sid, self.token = data["session_id"], data["token"]
        self.offer_on_roster = not data["resumed"] or self.world.workload.ice_restart

    # -- signals -------------------------------------------------------------------------
    async def _renegotiate(self, rate: float) -> None:
        while True:
            await trio.sleep(self.again.expovariate(rate))
            if self.reading:
                self._offer_to_all(self.again, self.latency)

    def _offer_to_all(self, rng: random.Random, after: float) -> None:
        for other in self.roster:
            if other != self.sid:
                self._burst(other, "offer", rng, after)

    def _burst(self, to: str, kind: str, rng: random.Random, after: float) -> None:
        """In ``after`` seconds, ``kind`` then its ICE candidates, each after a gap (all
        drawn now, in order)."""
        w = self.world.workload
        gaps = [w.ice_gap.draw(rng) for _ in range(max(0, w.ice.count(rng)))]
        scope = trio.CancelScope()
        if self._bursts is not None:
            self._bursts.append(scope)
        assert self.nursery is not None
        self.nursery.start_soon(self._send_burst, scope, after, to, kind, gaps)

    async def _send_burst(
        self, scope: trio.CancelScope, after: float, to: str, kind: str, gaps: list[float]
    ) -> None:
        with scope:
            await self._wire(after)
            if not await self._send(to, kind):
                return
            for gap in gaps:
                await trio.sleep(gap)
                if not await self._send(to, "ice"):
                    return

    async def _send(self, to: str, kind: str) -> bool:
        """Post one signal until the room answers for good; whether it was accepted.
        Every attempt carries the same request id, so a retry never delivers twice."""
        if self.sid is None:
            return False
        ledger = self.world.ledger
        n = ledger.sending(to, trio.current_time() - self.latency)  # when the peer sent it
        settled = False
        try:
            while True:
                signal = Signal(self.sid, self.token, to, {"t": kind, "n": n}, str(n))
                try:
                    reply = await self.room.ask(signal)
                except Overloaded as exc:
                    ledger.counts["retried"] += 1
                    await trio.sleep(exc.retry_after)
                    continue
                except RuntimeFailure:
                    settled = True
                    ledger.failed(n)
                    return False
                if isinstance(reply, Refused) and reply.status in (429, 503):
                    ledger.counts["retried"] += 1
                    await trio.sleep(reply.retry_after or 1)
                    continue
                break
            settled = True
            if isinstance(reply, Done):
                ledger.accepted(n, trio.current_time())
                return True
            assert isinstance(reply, Refused), reply
            ledger.refused(n, reply.status)
            return False
        finally:
            if not settled:
                ledger.abandoned(n)

    # -- leaving -------------------------------------------------------------------------
    async def _leave(self) -> None:
        await self._wire(self.latency)
        reply = await self._ask(Leave(self.sid or "", self.token))
        if isinstance(reply, Done):
            self.world.counts["left"] += 1
            with trio.move_on_after(60):
                await self.reader_done.wait()  # the stream ends with `bye`
        else:
            await self._drop()
            self.world.counts["vanished"] += 1

    # -- plumbing ------------------------------------------------------------------------
    @staticmethod
    async def _wire(seconds: float) -> None:
        """A trip over the network (no checkpoint at all when it takes no time)."""
        if seconds:
            await trio.sleep(seconds)

    async def _ask(self, message: Any) -> Any:
        while True:
            try:
                return await self.room.ask(message)
            except Overloaded as exc:
                self.world.counts["overloaded"] += 1
                await trio.sleep(exc.retry_after)
