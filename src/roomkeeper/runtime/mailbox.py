"""A bounded mailbox of envelopes, and the one-shot reply an ``ask`` waits on."""

from __future__ import annotations

import enum
from collections import deque
from typing import Any

import outcome
import trio

from .errors import MailboxFull


class Kind(enum.Enum):
    """What an envelope carries; everything but MESSAGE is a system event."""

    MESSAGE = "message"
    ALARM = "alarm"
    STREAM_CLOSED = "stream"
    STOP = "stop"
    LOST = "lost"  # the actor's lease was lost: drop the activation, commit nothing


class Envelope:
    """One item in a mailbox. ``waiter`` is the task blocked in ``ask``, if any."""

    __slots__ = ("attempt", "enqueued_at", "kind", "message", "waited", "waiter")

    def __init__(self, kind: Kind, message: Any, waiter: trio.lowlevel.Task | None = None) -> None:
        self.kind = kind
        self.message = message
        self.waiter = waiter
        self.enqueued_at = trio.current_time()
        self.waited = 0.0
        self.attempt = 0

    def resolve(self, result: outcome.Outcome[Any]) -> None:
        """Wake the asker with ``result``; a no-op for tells and abandoned asks."""
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            trio.lowlevel.reschedule(waiter, result)

    async def wait(self) -> Any:
        """Block the current task (the asker) until ``resolve``; cancellation abandons."""

        def abort(_: Any) -> trio.lowlevel.Abort:
            self.waiter = None
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)


class Mailbox:
    """FIFO of envelopes. Messages are bounded by ``capacity``; system events never are,
    so an alarm or a stream closing is never lost to a busy actor."""

    __slots__ = ("_lot", "_queue", "capacity")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._queue: deque[Envelope] = deque()
        self._lot = trio.lowlevel.ParkingLot()

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, envelope: Envelope) -> None:
        if envelope.kind is Kind.MESSAGE and len(self._queue) >= self.capacity:
            raise MailboxFull(f"mailbox full ({self.capacity} messages)")
        self._queue.append(envelope)
        self._lot.unpark()

    def put_first(self, envelope: Envelope) -> None:
        """Queue ahead of everything else (used for STOP)."""
        self._queue.appendleft(envelope)
        self._lot.unpark()

    def get_nowait(self) -> Envelope | None:
        return self._queue.popleft() if self._queue else None

    @property
    def parked(self) -> bool:
        """Whether the owner waits in ``get`` (so nothing is queued)."""
        return bool(self._lot)

    def wake_idle(self) -> None:
        """Wake the owner parked in ``get`` with nothing to do (the idle sweep's signal)."""
        self._lot.unpark()

    async def get(self) -> Envelope | None:
        """The next envelope; None if ``wake_idle`` woke the owner and nothing came since.
        Parks with no timeout: the idle sweep (idle.py) keeps time for every mailbox."""
        if self._queue:
            await trio.lowlevel.checkpoint()
        else:
            await self._lot.park()  # unparked by put, put_first or wake_idle
        return self._queue.popleft() if self._queue else None

    def drain(self) -> list[Envelope]:
        items = list(self._queue)
        self._queue.clear()
        return items
