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

    A heap with lazy deletion: an entry is current only if it matches ``_due``.
    """

    def __init__(self, clock: WallClock, fire: Callable[[ActorId], None]) -> None:
        self._clock = clock
        self._fire = fire
        self._due: dict[ActorId, float] = {}
        self._heap: list[tuple[float, str, ActorId]] = []
        self._changed = trio.Event()

    def __len__(self) -> int:
        return len(self._due)

    def due(self, actor: ActorId) -> float | None:
        return self._due.get(actor)

    def set(self, actor: ActorId, when: float | None) -> None:
        if when is None:
            self._due.pop(actor, None)
            return
        self._due[actor] = when
        heapq.heappush(self._heap, (when, actor.hex, actor))
        if len(self._heap) > 2 * len(self._due) + 64:
            self._compact()
        if self._heap[0][0] == when:
            self._changed.set()

    def _compact(self) -> None:
        self._heap = [(when, actor.hex, actor) for actor, when in self._due.items()]
        heapq.heapify(self._heap)

    async def run(self) -> None:
        while True:
            self._changed = trio.Event()
            now = self._clock.now()
            while self._heap and self._heap[0][0] <= now:
                when, _, actor = heapq.heappop(self._heap)
                if self._due.get(actor) == when:
                    del self._due[actor]
                    self._fire(actor)
            deadline = self._clock.to_trio(self._heap[0][0]) if self._heap else math.inf
            with trio.move_on_at(deadline):
                await self._changed.wait()
