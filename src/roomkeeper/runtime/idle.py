"""One task that hibernates idle activations: the runtime's only idle timer.

An activation parked on an empty mailbox records when it parked (``idle_since``) and, if
it has no entry here yet, adds one due ``after`` seconds later. A busy actor touches
nothing shared per message (no cancel scope, no deadline on trio's heap): the entry it
added when it first parked is checked when it falls due, and moved then if the actor
has parked again since. So there is at most one entry per live activation.
"""

from __future__ import annotations

import heapq
import itertools
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from .activation import Activation


class IdleSweep:
    """Wakes each activation that has sat parked for ``after`` seconds with nothing
    queued; its ``Mailbox.get`` then returns None and it hibernates.

    When an entry falls due, its activation is either
    - parked since ``due - after`` or earlier: woken (a message queued meanwhile wins:
      ``get`` returns it instead);
    - parked again since: the entry moves to ``idle_since + after``;
    - not parked (handling an envelope, or retired): the entry is dropped, and the
      activation adds a new one the next time it parks.
    """

    __slots__ = ("_heap", "_lot", "_order", "after")

    def __init__(self, after: float) -> None:
        self.after = after
        self._heap: list[tuple[float, int, Activation]] = []
        self._order = itertools.count()  # ties go first-come, never compare activations
        self._lot = trio.lowlevel.ParkingLot()

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, activation: Activation) -> None:
        """Watch ``activation``, parked since ``activation.idle_since``."""
        activation.swept = True
        heapq.heappush(
            self._heap, (activation.idle_since + self.after, next(self._order), activation)
        )
        # A new entry is due no earlier than any other (it parked last), so a sleeping
        # sweeper needs waking only when it had nothing to wait for.
        if len(self._heap) == 1:
            self._lot.unpark()

    async def run(self) -> None:
        heap = self._heap
        while True:
            if not heap:
                await self._lot.park()
                continue
            now = trio.current_time()
            if heap[0][0] > now:
                await trio.sleep_until(heap[0][0])
                continue
            while heap and heap[0][0] <= now:
                _, _, activation = heapq.heappop(heap)
                activation.swept = False
                if not activation.mailbox.parked:
                    continue
                due = activation.idle_since + self.after
                if due <= now:
                    activation.mailbox.wake_idle()
                else:
                    activation.swept = True
                    heapq.heappush(heap, (due, next(self._order), activation))
