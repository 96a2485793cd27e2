"""Hibernation, alarms (also across a restart on SQLite), shutdown and introspection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from roomkeeper.jsonutil import loads
from roomkeeper.runtime import ShuttingDown, SQLiteBackend, WallClock

from .conftest import EPOCH, system


async def test_idle_actor_hibernates_and_wakes_with_its_state(autojump_clock: Any) -> None:
    events: list[tuple[str, Any]] = []
    async with system(events=events, hibernate_after=10) as sys:
        stub = sys.get("counters", "a")
        await stub.ask(("add", 5))
        await trio.sleep(9)
        assert sys.is_live(stub.id)
        await trio.sleep(2)
        assert not sys.is_live(stub.id)
        assert events == [("hibernate", None)]
        snap = sys.snapshot()[0]
        assert (snap.live, snap.hibernated, snap.hibernations) == (0, 1, 1)
        assert await stub.ask(("add", 1)) == 6  # rebuilt from storage
        snap = sys.snapshot()[0]
        assert (snap.live, snap.activations, snap.wakes["message"]) == (1, 2, 1)


async def test_an_actor_with_nothing_stored_is_forgotten_when_it_hibernates(
    autojump_clock: Any,
) -> None:
    async with system(hibernate_after=10) as sys:
        kept, empty = sys.get("counters", "kept"), sys.get("counters", "empty")
        await kept.ask(("add", 1))
        assert await empty.ask(("get",)) == 0  # reads, stores nothing
        await trio.sleep(11)
        snap = sys.snapshot()[0]
        assert (snap.live, snap.hibernated, snap.hibernations) == (0, 1, 2)
        assert await empty.ask(("get",)) == 0
        snap = sys.snapshot()[0]
        assert (snap.activations, snap.wakes["message"]) == (3, 0)  # a first activation


async def test_busy_actor_does_not_hibernate(autojump_clock: Any) -> None:
    async with system(hibernate_after=10) as sys:
        stub = sys.get("counters", "a")
        for _ in range(5):
            await stub.ask(("add", 1))
            await trio.sleep(6)
        assert sys.is_live(stub.id)
        assert sys.snapshot()[0].hibernations == 0


async def test_alarm_fires_on_time_even_when_hibernated(autojump_clock: Any) -> None:
    events: list[tuple[str, Any]] = []
    async with system(events=events, hibernate_after=10) as sys:
        stub = sys.get("counters", "a")
        await stub.ask(("alarm", EPOCH + 100))
        await trio.sleep(50)
        assert not sys.is_live(stub.id)
        assert [e for e in events if e[0] == "alarm"] == []  # not before its time
        await trio.sleep(60)
        assert [e for e in events if e[0] == "alarm"] == [("alarm", EPOCH + 100)]  # at it
        assert sys.snapshot()[0].wakes["alarm"] == 1
        stored = await sys.backend.load(stub.id)  # what on_alarm wrote was committed
        assert loads(stored.values["alarms"]) == 1 and stored.alarm is None


async def test_replacing_an_alarm_fires_only_the_new_one(autojump_clock: Any) -> None:
    events: list[tuple[str, Any]] = []
    async with system(events=events) as sys:
        stub = sys.get("counters", "a")
        await stub.ask(("alarm", EPOCH + 100))
        await stub.ask(("alarm", EPOCH + 30))
        await stub.ask(("alarm", EPOCH + 60))
        await trio.sleep(200)
        assert [e for e in events if e[0] == "alarm"] == [("alarm", EPOCH + 60)]


async def test_alarm_survives_a_restart_on_the_same_sqlite_file(
    disk_clock: Any, tmp_path: Path
) -> None:
    path = tmp_path / "state.sqlite3"
    clock = WallClock(EPOCH)
    async with system(backend=SQLiteBackend(path), clock=clock) as sys:
        await sys.get("counters", "a").ask(("alarm", EPOCH + 100))
        await sys.get("counters", "b").ask(("alarm", EPOCH + 10))
    await trio.sleep(50)  # "down" past b's alarm, before a's
    events: list[tuple[str, Any]] = []
    async with system(backend=SQLiteBackend(path), clock=clock, events=events) as sys:
        await trio.testing.wait_all_tasks_blocked()
        assert await sys.get("counters", "b").ask(("get",)) == 0  # queued after the alarm
        assert [e for e in events if e[0] == "alarm"] == [("alarm", EPOCH + 50)]  # overdue
        await trio.sleep(100)
        assert [e[1] for e in events if e[0] == "alarm"] == [EPOCH + 50, EPOCH + 100]
        assert await sys.get("counters", "a").ask(("get",)) == 0


async def test_state_survives_a_restart_on_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    async with system(backend=SQLiteBackend(path)) as sys:
        await sys.get("counters", "a").ask(("add", 41))
    async with system(backend=SQLiteBackend(path)) as sys:
        assert await sys.get("counters", "a").ask(("add", 1)) == 42


async def test_unusable_sqlite_path_is_a_storage_error(tmp_path: Path) -> None:
    from roomkeeper.runtime import StorageError

    with pytest.raises(StorageError):
        await SQLiteBackend(tmp_path / "missing" / "dir" / "x.sqlite3").open()


async def test_shutdown_finishes_the_message_in_hand_and_refuses_the_rest(
    autojump_clock: Any,
) -> None:
    results: list[Any] = []
    async with system() as sys:
        stub = sys.get("counters", "a")

        async def ask(message: Any) -> None:
            try:
                results.append(await stub.ask(message))
            except ShuttingDown as exc:
                results.append(type(exc).__name__)

        sys.nursery.start_soon(ask, ("slow", 3))
        await trio.sleep(1)
        sys.nursery.start_soon(ask, ("add", 1))
        await trio.sleep(0.5)
    assert sorted(results) == ["ShuttingDown", "done"]


async def test_shutdown_persists_and_later_asks_are_refused(autojump_clock: Any) -> None:
    async with system() as sys:
        stub = sys.get("counters", "a")
        await stub.ask(("add", 1))
        await sys.shutdown()
        with pytest.raises(ShuttingDown):
            await stub.ask(("get",))


async def test_observers_see_the_lifecycle_in_order(autojump_clock: Any) -> None:
    from roomkeeper.runtime import TraceEvent

    seen: list[TraceEvent] = []
    async with system(hibernate_after=10) as sys:
        sys.observers.append(seen.append)
        stub = sys.get("counters", "a")
        await stub.ask(("add", 1))
        await stub.ask(("alarm", EPOCH + 30))
        await trio.sleep(45)
        kinds = [(e.kind, e.fields.get("cause") or e.fields.get("what")) for e in seen]
    assert kinds == [
        ("activated", "first"),
        ("handled", "message"),
        ("alarm_set", None),
        ("handled", "message"),
        ("handled", "hibernate"),
        ("hibernated", None),
        ("activated", "alarm"),
        ("alarm_set", None),  # cleared as it fires
        ("handled", "alarm"),
        ("handled", "hibernate"),
        ("hibernated", None),
    ]
    alarm_sets = [e.fields["at"] for e in seen if e.kind == "alarm_set"]
    assert alarm_sets == [EPOCH + 30, None]
    assert all(e.actor == stub.id.hex and e.namespace == "counters" for e in seen)
    times = [e.t for e in seen]
    assert times == sorted(times)


async def test_trace_writer_writes_one_json_line_per_event(autojump_clock: Any) -> None:
    import io
    import json

    from roomkeeper.runtime.tracefile import TraceWriter

    out = io.BytesIO()
    async with system(hibernate_after=10) as sys:
        sys.observers.append(TraceWriter(out))
        await sys.get("counters", "a").ask(("add", 1))
        await trio.sleep(15)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["kind"] for line in lines] == ["activated", "handled", "handled", "hibernated"]
    assert lines[1]["what"] == "message" and lines[1]["ok"] is True and lines[1]["wrote"] is True
    assert set(lines[0]) == {"t", "kind", "ns", "actor", "cause"}


async def test_backends_list_stored_names_in_pages(tmp_path: Path) -> None:
    from roomkeeper.runtime import MemoryBackend

    for backend in (MemoryBackend(), SQLiteBackend(tmp_path / "names.sqlite3")):
        async with system(backend=backend) as sys:
            for name in ["c", "a", "b", "d"]:
                await sys.get("counters", name).ask(("add", 1))
            await sys.get("counters", "empty").ask(("get",))  # never wrote: not listed
            assert await backend.names("counters", limit=3) == ["a", "b", "c"]
            assert await backend.names("counters", after="c") == ["d"]
            assert await backend.names("other") == []
