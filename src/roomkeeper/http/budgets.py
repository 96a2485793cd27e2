"""Per client address: a token bucket of new sessions (resuming one is free) and a cap on
open event streams. The table of addresses stays bounded: idle addresses with a full
bucket and no stream are forgotten as the table is used. Every call costs the same
however many streams an address holds (a reconnect storm of 10,000 from one address once
spent 40 % of the server's CPU here, checking every stream on every connect).
Synchronous, with the clock as an argument, for tests.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["STREAMS_RETRY_AFTER", "SWEPT", "AddressLimits", "StreamSlot"]

STREAMS_RETRY_AFTER = 5
"""Retry-After (seconds) when an address holds too many streams: one may end soon."""

SWEPT = 2
"""Addresses looked at, and waiting streams checked in each, as the table is used."""


class StreamSlot:
    """One open stream counted against an address. It is freed by ``release`` (the
    response ended), or, if its response body never started (the client went away
    first), as soon as ``alive`` says the runtime closed the stream (unclaimed)."""

    __slots__ = ("_alive", "_entry", "released", "started")

    def __init__(self, entry: _Entry) -> None:
        self._entry = entry
        self.released = False
        self.started = False
        self._alive: Callable[[], bool] | None = None

    def bind(self, alive: Callable[[], bool]) -> None:
        """The stream is open; ``alive()`` tells whether the runtime still holds it."""
        self._alive = alive

    def start(self) -> None:
        self.started = True
        self._entry.waiting.pop(self, None)

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._entry.open -= 1
            self._entry.waiting.pop(self, None)

    def live(self) -> bool:
        alive = self._alive
        if not (self.released or self.started or alive is None or alive()):
            self.release()
        return not self.released


class _Entry:
    """One address: its bucket of new sessions, and its open streams (a count, and the
    few whose response has not started yet, which may need freeing by ``alive``)."""

    __slots__ = ("open", "stamp", "tokens", "waiting")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp
        self.open = 0
        self.waiting: dict[StreamSlot, None] = {}  # oldest first

    def refill(self, now: float, burst: float, rate: float) -> None:
        if now > self.stamp:
            self.tokens = min(burst, self.tokens + (now - self.stamp) * rate)
            self.stamp = now

    def live_slots(self) -> int:
        """Open streams, once every waiting one has been checked."""
        for slot in list(self.waiting):
            slot.live()
        return self.open

    def check_oldest(self, count: int) -> int:
        """Open streams, once the ``count`` waiting longest have been checked (those
        still waiting go to the back)."""
        oldest = iter(self.waiting)
        for slot in [next(oldest) for _ in range(min(count, len(self.waiting)))]:
            if slot.live() and not slot.started:
                del self.waiting[slot]
                self.waiting[slot] = None
        return self.open


class AddressLimits:
    """Per client address: new sessions from a token bucket (``burst`` at once, then
    ``per_minute``), and at most ``streams`` open event streams."""

    def __init__(
        self,
        *,
        per_minute: float,
        burst: float,
        streams: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.streams = streams
        self.clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        """Addresses currently remembered (for tests: the table stays bounded)."""
        return len(self._entries)

    def _entry(self, key: str) -> _Entry:
        now = self.clock()
        self._sweep(now)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(self.burst, now)
        else:
            self._entries.move_to_end(key)
            entry.refill(now, self.burst, self.rate)
        return entry

    def _sweep(self, now: float, count: int = SWEPT) -> None:
        """Look at the least recently used addresses: forget those with nothing to
        remember (a full bucket, no stream), move the others to the back."""
        for _ in range(min(count, len(self._entries))):
            key, entry = next(iter(self._entries.items()))
            entry.refill(now, self.burst, self.rate)
            if entry.tokens >= self.burst and not entry.check_oldest(SWEPT):
                del self._entries[key]
            else:
                self._entries.move_to_end(key)

    def take_session(self, key: str) -> int | None:
        """Spend one new session of ``key``'s budget: None if there was one, else the
        whole seconds until there is (for Retry-After)."""
        entry = self._entry(key)
        if entry.tokens >= 1.0:
            entry.tokens -= 1.0
            return None
        return max(1, math.ceil((1.0 - entry.tokens) / self.rate))

    def refund_session(self, key: str) -> None:
        """Give back what ``take_session`` took: no session was made after all."""
        entry = self._entry(key)
        entry.tokens = min(self.burst, entry.tokens + 1.0)

    def open_stream(self, key: str) -> StreamSlot | None:
        """A slot for one more stream of ``key``, or None if it holds ``streams`` already."""
        entry = self._entry(key)
        # A count that includes streams gone before their answer began is checked
        # stream by stream only at the cap (at most ``streams`` of them).
        if entry.open >= self.streams and entry.live_slots() >= self.streams:
            return None
        slot = StreamSlot(entry)
        entry.open += 1
        entry.waiting[slot] = None
        return slot

    def open_streams(self, key: str) -> int:
        entry = self._entries.get(key)
        return 0 if entry is None else entry.live_slots()
