"""Wall-clock time derived from trio's clock, so that ``MockClock`` drives everything."""

from __future__ import annotations

import time

import trio


class WallClock:
    """Epoch seconds as ``offset + trio.current_time()``.

    The offset is fixed the first time the clock is read (or given), so wall time and
    trio deadlines move together; under ``MockClock`` alarms and ids follow mock time.
    Share one instance between two systems to simulate a restart with time intact.
    """

    def __init__(self, epoch: float | None = None) -> None:
        self._epoch = epoch
        self._offset: float | None = None

    def _bind(self) -> float:
        start = time.time() if self._epoch is None else self._epoch
        self._offset = start - trio.current_time()
        return self._offset

    def now(self) -> float:
        offset = self._offset if self._offset is not None else self._bind()
        return offset + trio.current_time()

    def to_trio(self, wall: float) -> float:
        """The trio deadline of a wall-clock instant."""
        offset = self._offset if self._offset is not None else self._bind()
        return wall - offset
