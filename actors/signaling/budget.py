"""The process-wide account of bytes the rooms hold, against ``--memory-budget``."""

from __future__ import annotations

from collections.abc import Hashable

NEAR = 0.9
"""Share of the budget past which new sessions (and so new rooms) are refused."""


class MemoryAccount:
    """Bytes of signal data held by every room in memory, each room reporting its own
    total as it changes (and 0 when it hibernates); shared by all rooms of a server."""

    def __init__(self, budget: int) -> None:
        if budget < 0:
            raise ValueError("budget must be at least 0")
        self.budget = budget
        self.held = 0
        self._by_owner: dict[Hashable, int] = {}

    def report(self, owner: Hashable, held: int) -> None:
        """``owner`` (a room) now holds ``held`` bytes."""
        before = self._by_owner.pop(owner, 0)
        if held:
            self._by_owner[owner] = held
        self.held += held - before

    @property
    def near(self) -> bool:
        """Near the budget: refuse new sessions before anything accepted is dropped."""
        return self.held >= self.budget * NEAR

    @property
    def full(self) -> bool:
        """At the budget: refuse new signals too."""
        return self.held >= self.budget
