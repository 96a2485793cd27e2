"""The actor's view of its storage: writes buffered per message, none made for a read."""

from __future__ import annotations

from roomkeeper.runtime import Storage
from roomkeeper.runtime.storage.base import UNCHANGED


def test_a_message_that_writes_nothing_makes_no_write_set() -> None:
    storage = Storage({"a": b"1"}, None)
    assert storage.get("a") == 1 and storage.list() == {"a": 1} and storage.alarm is None
    assert storage.take() is None
    assert storage._writes is None  # nothing allocated for the next message either


def test_writes_are_seen_at_once_and_taken_together() -> None:
    storage = Storage({"a": b"1", "b": b"2"}, 5.0)
    storage.put("c", [3])
    storage.delete("a")
    storage.set_alarm(None)
    assert storage.list() == {"b": 2, "c": [3]} and storage.get("a") is None
    assert storage.alarm is None and len(storage) == 2
    writes = storage.take()
    assert writes is not None
    assert (writes.puts, writes.deletes, writes.alarm) == ({"c": b"[3]"}, {"a"}, None)
    assert storage.take() is None  # the buffer starts empty again
    storage.apply(writes)
    assert storage.list_raw() == {"b": b"2", "c": b"[3]"} and storage.alarm is None


def test_pending_is_made_on_first_use_and_an_unused_one_is_not_taken() -> None:
    storage = Storage({}, None)
    assert storage.empty
    pending = storage.pending
    assert storage.pending is pending and pending.alarm is UNCHANGED
    assert storage.take() is None  # made, but nothing written in it
    storage.pending.streams_removed.add("s")
    assert storage.take() is not None


def test_rollback_drops_the_pending_writes() -> None:
    storage = Storage({"a": b"1"}, None)
    storage.put("a", 2)
    storage.rollback()
    assert storage.get("a") == 1 and storage.take() is None
