"""One session's mutable bookkeeping: presence, queue, replay history, request ids and
rate bucket. Private to the package; ``RoomState`` is the only writer."""

from __future__ import annotations

import math
from collections import deque

import attrs

from .records import ID_SPAN, Outgoing, RoomConfig

_EPSILON = 1e-9


def size(out: Outgoing) -> int:
    """Bytes a kept signal holds: its encoded data."""
    return len(out.data) if isinstance(out.data, bytes) else 0


@attrs.define
class TokenBucket:
    """Starts full; refills continuously; time only moves it forward."""

    tokens: float
    stamp: float | None = None

    def spend(self, now: float, burst: float, refill: float) -> int | None:
        """Take one token: None if there was one, else the whole seconds until there is."""
        if self.stamp is None or now > self.stamp:
            if self.stamp is not None:
                self.tokens = min(burst, self.tokens + (now - self.stamp) * refill)
            self.stamp = now
        if self.tokens + _EPSILON < 1.0:
            return max(1, math.ceil((1.0 - self.tokens) / refill - _EPSILON))
        self.tokens -= 1.0
        return None


@attrs.define(eq=False)
class Session:
    """A live session of the room (connected, or disconnected within its grace period)."""

    session_id: str
    token: str = attrs.field(repr=False)
    key: int
    seq: int
    hwm: int
    history: deque[tuple[int, Outgoing]]
    requests: dict[str, None]
    bucket: TokenBucket
    connected: bool = False
    expires_at: float | None = None
    queue: deque[tuple[int, Outgoing]] = attrs.Factory(deque)
    next_qseq: int = 0
    held: int = 0
    """Bytes of signal data in ``history`` and ``queue``."""
    stored: set[int] = attrs.Factory(set)
    """Event ids of the history entries that have a key in storage."""

    @classmethod
    def new(cls, session_id: str, token: str, key: int, seq: int, config: RoomConfig) -> Session:
        return cls(
            session_id=session_id,
            token=token,
            key=key,
            seq=seq,
            hwm=key * ID_SPAN,
            history=deque(),
            requests={},
            bucket=TokenBucket(config.rate_burst),
        )

    def owns(self, event_id: int) -> bool:
        """Whether an event id lies in this session's id space."""
        return event_id // ID_SPAN == self.key

    def enqueue(self, out: Outgoing) -> int:
        """Queue a signal for delivery on reconnection; its queue sequence number."""
        qseq = self.next_qseq
        self.next_qseq += 1
        self.queue.append((qseq, out))
        self.held += size(out)
        return qseq

    def take_queue(self) -> list[tuple[int, Outgoing]]:
        """Remove and return the whole queue, oldest first."""
        taken = list(self.queue)
        self.queue.clear()
        self.held -= sum(size(out) for _, out in taken)
        return taken

    def keep(self, event_id: int, out: Outgoing) -> None:
        """Add a sent signal to the replay history."""
        self.history.append((event_id, out))
        self.held += size(out)

    def drop_oldest(self) -> tuple[int, Outgoing]:
        """Remove the oldest replay history entry."""
        entry = self.history.popleft()
        self.held -= size(entry[1])
        return entry

    def take_history_after(self, event_id: int) -> list[tuple[int, Outgoing]]:
        """Remove and return the history entries after ``event_id``, oldest first. They
        come back with new ids through ``delivered`` once they are sent again."""
        taken: list[tuple[int, Outgoing]] = []
        while self.history and self.history[-1][0] > event_id:
            taken.append(self.history.pop())
            self.held -= size(taken[-1][1])
        taken.reverse()
        return taken

    def remember(self, request_id: str, window: int) -> None:
        """Note an accepted request id, keeping only the last ``window``."""
        if window <= 0:
            return
        self.requests.pop(request_id, None)
        self.requests[request_id] = None
        while len(self.requests) > window:
            del self.requests[next(iter(self.requests))]
