"""Runtime-held event streams (the WebSocket Hibernation API's equivalent).

The runtime, not the actor, owns each stream: it survives the actor's hibernation, gets
heartbeats without waking it, and is bounded so a slow consumer never blocks the actor.
Every event gets an id that strictly grows: ``max(last + 1, id_base + wall-clock µs)``,
so ids keep growing across streams and restarts without a write per event.

The output gate: what an actor sends (and its closes) is *held* in the stream, invisible
to the consumer, until the transaction that sent it has committed (`release`); if it
fails, it is dropped (`discard`), so no client sees what storage did not keep. Held
events have their ids already; the ticker sends no heartbeat past them.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs
import trio

from .clock import WallClock
from .ids import ActorId


class StreamCodec(Protocol):
    """How events become bytes on the wire, and the runtime's own events."""

    def preamble(self) -> bytes: ...

    def encode(self, event_id: int, event: str, data: bytes) -> bytes: ...

    def heartbeat(self, now: float) -> tuple[str, bytes]: ...

    def goodbye(self) -> tuple[str, bytes]:
        """The last event of every stream when the server shuts down."""
        ...


class Wrote(enum.Enum):
    """What a `WriteNow` did with the bytes it was given."""

    NOTHING = "nothing"
    """Refused, nothing taken: they are queued for the pump."""
    ALL = "all"
    """Written, all of them."""
    SOME = "some"
    """Taken, not all written: the pump is woken, and its next ``write`` (of ``b""`` if
    nothing else is queued) sends the rest before anything else."""


WriteNow = Callable[[bytes], Wrote]
"""Writes a stream's bytes at once, from whichever task calls it, if that needs no wait;
called only while the stream's pump waits with nothing queued, never concurrently."""


@attrs.frozen
class StreamInfo:
    """What an actor sees of one of its streams."""

    stream_id: str
    attachment: Any
    last_id: int


@attrs.frozen
class StreamLimits:
    max_bytes: int = 1 << 20
    max_events: int = 1024
    heartbeat: float = 10.0
    claim_timeout: float = 10.0


class Stream:
    """One open stream: a bounded buffer of encoded frames and its id counter."""

    __slots__ = (
        "_lot",
        "actor",
        "attachment",
        "buffer",
        "buffered",
        "claimed",
        "close_reason",
        "closed",
        "due",
        "ending",
        "held",
        "held_bytes",
        "id_base",
        "last_id",
        "last_write",
        "opened_at",
        "stream_id",
        "write_now",
    )

    def __init__(
        self, stream_id: str, actor: ActorId, attachment: Any, id_base: int, id_floor: int
    ) -> None:
        self.stream_id = stream_id
        self.actor = actor
        self.attachment = attachment
        self.id_base = id_base
        self.last_id = id_floor
        self.buffer: list[bytes] = []  # a list: an empty deque holds a 500-byte block
        self.buffered = 0
        self.held: list[bytes] | None = None  # frames waiting for their commit
        self.held_bytes = 0
        self.ending = False  # closed by a transaction not yet committed
        self.closed = False
        self.close_reason = ""
        self.claimed = False
        self.write_now: WriteNow | None = None  # set while its pump waits with nothing queued
        self.due = False  # a `WriteNow` owes bytes: the pump's next write sends them
        self.opened_at = self.last_write = trio.current_time()
        self._lot = trio.lowlevel.ParkingLot()  # its consumer, waiting for bytes

    def info(self) -> StreamInfo:
        return StreamInfo(self.stream_id, self.attachment, self.last_id)


class StreamRegistry:
    """Every open stream of the system, by id and by actor."""

    def __init__(
        self,
        codec: StreamCodec,
        clock: WallClock,
        limits: StreamLimits,
        on_closed: Callable[[Stream, str], None],
    ) -> None:
        self.codec = codec
        self.clock = clock
        self.limits = limits
        self._on_closed = on_closed
        self._streams: dict[str, Stream] = {}
        self._by_actor: dict[ActorId, dict[str, Stream]] = {}
        self.opened_total = 0
        self.overflowed_total = 0
        self.writes_at_once_total = 0  # taken by a `WriteNow`: the pump's task not woken
        self.writes_by_pump_total = 0

    def __len__(self) -> int:
        return sum(len(owned) for owned in self._by_actor.values())

    def count(self, namespace: str) -> int:
        return sum(len(s) for a, s in self._by_actor.items() if a.namespace == namespace)

    def get(self, stream_id: str) -> Stream | None:
        return self._streams.get(stream_id)

    def of(self, actor: ActorId) -> list[Stream]:
        return list(self._by_actor.get(actor, {}).values())

    def open(
        self, stream_id: str, actor: ActorId, attachment: Any, id_base: int, id_floor: int
    ) -> Stream:
        stream = Stream(stream_id, actor, attachment, id_base, id_floor)
        self._streams[stream_id] = stream
        self._by_actor.setdefault(actor, {})[stream_id] = stream
        self.opened_total += 1
        return stream

    def send(self, stream: Stream, event: str, data: bytes, *, hold: bool = False) -> int | None:
        """Queue one event (``hold``: until `release`); the id it got, or None if the
        stream is closed (or closing) or overflowed."""
        if stream.closed or stream.ending:
            return None
        now_us = int(self.clock.now() * 1_000_000)
        event_id = max(stream.last_id + 1, stream.id_base + now_us)
        frame = self.codec.encode(event_id, event, data)
        limits = self.limits
        # Limits bind once a consumer reads: an actor may load a fresh stream with its
        # whole backlog (bounded by its own queues) before the consumer starts.
        held = stream.held or ()
        if stream.claimed and (
            stream.buffered + stream.held_bytes + len(frame) > limits.max_bytes
            or len(stream.buffer) + len(held) >= limits.max_events
        ):
            self.overflowed_total += 1
            self._close(stream, "overflow", notify=True, keep_buffer=False)
            return None
        stream.last_id = event_id
        if hold:
            if stream.held is None:
                stream.held = []
            stream.held.append(frame)
            stream.held_bytes += len(frame)
            return event_id
        self._out(stream, frame)
        return event_id

    def _out(self, stream: Stream, data: bytes) -> None:
        """``data`` to its consumer: written at once if its pump waits with nothing
        queued and has a `WriteNow` that can, else queued for the pump."""
        stream.last_write = trio.current_time()
        write_now = stream.write_now
        if write_now is not None:
            wrote = write_now(data)
            if wrote is not Wrote.NOTHING:
                self.writes_at_once_total += 1
            if wrote is Wrote.ALL:
                return
            stream.write_now = None  # the pump is woken: what follows queues behind
            if wrote is Wrote.SOME:
                stream.due = True
                stream._lot.unpark()
                return
        stream.buffer.append(data)
        stream.buffered += len(data)
        stream._lot.unpark()

    def close(
        self, stream: Stream, final: tuple[str, bytes] | None = None, *, hold: bool = False
    ) -> int:
        """Close on the actor's behalf (after an optional last event; ``hold``: both at
        `release`); the last id sent."""
        if final is not None:
            self.send(stream, *final, hold=hold)
        if hold and not stream.closed:
            stream.ending = True
        else:
            self._close(stream, "closed", notify=False)
        return stream.last_id

    def release(self, stream: Stream) -> None:
        """The transaction that held events (or a close) on ``stream`` committed: out
        they go."""
        if stream.held is not None:
            if not stream.closed:
                self._out(stream, b"".join(stream.held))  # (one frame: itself, not a copy)
            stream.held, stream.held_bytes = None, 0
        if stream.ending:
            stream.ending = False
            self._close(stream, "closed", notify=False)

    def discard(self, stream: Stream) -> None:
        """The transaction that held events (or a close) on ``stream`` failed: they never
        happened (their ids are not reused: ids only grow)."""
        stream.held, stream.held_bytes, stream.ending = None, 0, False

    def _close(
        self, stream: Stream, reason: str, *, notify: bool, keep_buffer: bool = True
    ) -> None:
        if stream.closed:
            return
        stream.closed = True
        stream.write_now = None
        stream.close_reason = reason
        stream.held, stream.held_bytes, stream.ending = None, 0, False
        if not keep_buffer:
            stream.buffer = []
            stream.buffered = 0
        if stream.claimed or not stream.buffer:
            self._streams.pop(stream.stream_id, None)
        # else: kept findable until its consumer claims it and reads what it holds (a
        # stream replaced before its HTTP response started still gets its bye).
        owned = self._by_actor.get(stream.actor)
        if owned is not None:
            owned.pop(stream.stream_id, None)
            if not owned:
                del self._by_actor[stream.actor]
        stream._lot.unpark_all()
        if notify:
            self._on_closed(stream, reason)

    async def pump(
        self,
        stream: Stream,
        write: Callable[[bytes], Awaitable[None]],
        write_now: WriteNow | None = None,
    ) -> None:
        """Hand the stream's bytes to ``write`` as they come (bursts joined into one
        write; the codec's preamble first, before any wait, with what is queued) until
        the stream is closed (`disconnect` closes it when its consumer goes away); while
        it waits with nothing queued, events are given to ``write_now`` first, by the
        task that sends them. If this is cancelled, or ``write`` fails first, the
        consumer has gone away: the actor is told ("disconnected")."""
        stream.claimed = True
        preamble = self.codec.preamble()  # first, with what is queued, in one write
        try:
            while True:
                if stream.buffer or stream.due:
                    chunk = preamble + b"".join(stream.buffer)
                    preamble = b""
                    stream.buffer = []
                    stream.buffered = 0
                    stream.due = False
                    self.writes_by_pump_total += 1
                    await write(chunk)
                elif preamble:
                    await write(preamble)
                    preamble = b""
                elif stream.closed:
                    return
                else:
                    stream.write_now = write_now
                    try:
                        await stream._lot.park()
                    finally:
                        stream.write_now = None
        finally:
            self.disconnect(stream)

    def disconnect(self, stream: Stream) -> None:
        """The stream's consumer has gone away: it is closed, its actor told
        ("disconnected"), and its `pump` returns."""
        self._close(stream, "disconnected", notify=True)
        self._streams.pop(stream.stream_id, None)

    def shutdown(self) -> list[tuple[ActorId, str, int]]:
        """Send every stream the codec's goodbye and close it, telling no actor: the
        streams stay recorded in storage, so their actors learn of it after a restart.
        Returns each stream's last event id, for the caller to persist."""
        final = self.codec.goodbye()
        positions = []
        for stream in [s for s in self._streams.values() if not s.closed]:
            self.discard(stream)  # held by a transaction that did not finish in time
            self.send(stream, *final)
            self._close(stream, "shutdown", notify=False)
            positions.append((stream.actor, stream.stream_id, stream.last_id))
        return positions

    async def run_ticker(self) -> None:
        """Heartbeats on quiet streams; close streams nobody claimed in time.

        It ticks ten times per interval and writes to a stream quiet for the interval
        less one tick, so no stream is quiet for longer than the interval, and a quiet
        one gets about one heartbeat per interval (ticking at half the interval would
        need a heartbeat every half interval: twice the writes)."""
        tick = self.limits.heartbeat / 10
        quiet = self.limits.heartbeat - tick
        while True:
            await trio.sleep(tick)
            now = trio.current_time()
            event, data = self.codec.heartbeat(self.clock.now())
            for stream in list(self._streams.values()):
                if not stream.claimed and now - stream.opened_at >= self.limits.claim_timeout:
                    self._close(stream, "unclaimed", notify=True)
                    self._streams.pop(stream.stream_id, None)
                elif stream.closed or stream.held is not None:
                    continue  # (a heartbeat must not overtake held events' ids)
                elif now - stream.last_write >= quiet:
                    self.send(stream, event, data)
