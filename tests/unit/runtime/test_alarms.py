"""The alarm scheduler's bookkeeping (its timing is tested in test_lifecycle.py)."""

from __future__ import annotations

import gc

from roomkeeper.runtime.alarms import AlarmScheduler
from roomkeeper.runtime.clock import WallClock
from roomkeeper.runtime.ids import ActorId


def _tracked_entries(alarms: AlarmScheduler) -> int:
    """The scheduler's entries the cyclic collector still tracks after a collection (it
    untracks a tuple that holds only atomic values). Counted on the scheduler alone: a
    count of the whole process's objects moved with whatever other threads made."""
    gc.collect()
    entries = [*alarms._due.values(), *alarms._heap]
    return sum(gc.is_tracked(entry) for entry in entries)


def test_pending_alarms_give_the_cyclic_gc_nothing_to_scan() -> None:
    """A hibernated actor with an alarm leaves only strings and floats behind: a full
    collection's pause must not grow with the number of hibernated rooms."""
    alarms = AlarmScheduler(WallClock(0.0), fire=lambda actor: None)
    for i in range(2_000):
        alarms.set(ActorId("rooms", f"room-{i}"), 1e9 + i)
    assert len(alarms) == 2_000
    assert _tracked_entries(alarms) == 0
    assert alarms.due(ActorId("rooms", "room-7")) == 1e9 + 7


def test_a_cleared_alarm_is_forgotten() -> None:
    alarms = AlarmScheduler(WallClock(0.0), fire=lambda actor: None)
    actor = ActorId("rooms", "a")
    alarms.set(actor, 100.0)
    alarms.set(actor, None)
    assert len(alarms) == 0 and alarms.due(actor) is None
