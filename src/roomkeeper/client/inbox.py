"""An unbounded queue between the peer's background task and its reader, on anyio (so
on trio and asyncio alike), that ends with `EndOfEvents` once closed and drained."""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

import anyio
import trio

__all__ = ["EndOfEvents", "Inbox"]

T = TypeVar("T")


class EndOfEvents(anyio.EndOfStream, trio.EndOfChannel):
    """No more events: the session is over. It is a `trio.EndOfChannel` (what the
    trio-only client raised) and an `anyio.EndOfStream`."""


class Inbox(Generic[T]):
    """``put`` never blocks; ``get`` waits for an item. (anyio's memory streams would
    do, but warn when a reader drops an unclosed one, which a peer's user may.)"""

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._closed = False
        self._wakeup: anyio.Event | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: T) -> None:
        self._items.append(item)
        self._wake()

    def close(self) -> None:
        self._closed = True
        self._wake()

    async def get(self) -> T:
        while not self._items:
            if self._closed:
                raise EndOfEvents
            if self._wakeup is None:
                self._wakeup = anyio.Event()
            await self._wakeup.wait()
        return self._items.popleft()

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None
