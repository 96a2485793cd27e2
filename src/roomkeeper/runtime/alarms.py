"""One task that sleeps until the earliest alarm of any actor, live or hibernated."""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable

import trio

from .clock import WallClock
from .ids import ActorId


class AlarmScheduler:
    """Keeps each actor's next alarm (one per actor) and calls ``fire`` when it is due.

    A heap with lazy deletion: an entry is current only if it matches ``_due``. Entries
    hold only strings and floats, never an `ActorId`: tuples and dicts of those drop out
    of the cyclic GC's scans, which would otherwise grow with every hibernated actor
    that has an alarm (a full pass over 100,000 of them shows in wake latencies).
    """

    def __init__(self, clock: WallClock, fire: Callable[[ActorId], None]) -> None:
        self._clock = clock
        self._fire = fire
        self._due: dict[str, tuple[float, str, str]] = {}  # hex -> (when, namespace, name)
        self._heap: list[tuple[float, str]] = []
        self._changed = trio.Event()

    def __len__(self) -> int:
        return len(self._due)

    def due(self, actor: ActorId) -> float | None:
        entry = self._due.get(actor.hex)
        return None if entry is None else entry[0]

    def set(self, actor: ActorId, when: float | None) -> None:
        key = actor.hex
        if when is None:
            self._due.pop(key, None)
            return
        self._due[key] = (when, actor.namespace, actor.name)
        heapq.heappush(self._heap, (when, key))
        if len(self._heap) > 2 * len(self._due) + 64:
            self._compact()
        if self._heap[0][0] == when:
            self._changed.set()

    def _compact(self) -> None:
        self._heap = [(entry[0], key) for key, entry in self._due.items()]
        heapq.heapify(self._heap)

    async def run(self) -> None:
        while True:
            self._changed = trio.Event()
            now = self._clock.now()
            while self._heap and self._heap[0][0] <= now:
                when, key = heapq.heappop(self._heap)
                entry = self._due.get(key)
                if entry is not None and entry[0] == when:
                    del self._due[key]
                    self._fire(ActorId(entry[1], entry[2]))
            deadline = self._clock.to_trio(self._heap[0][0]) if self._heap else math.inf
            with trio.move_on_at(deadline):
                await self._changed.wait()
