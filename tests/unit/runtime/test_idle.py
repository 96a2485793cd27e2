"""The idle sweep: one task keeps every activation's hibernation deadline (idle.py)."""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio

from roomkeeper.runtime import TraceEvent
from roomkeeper.runtime.mailbox import Envelope, Kind, Mailbox

from .conftest import system


def hibernations(seen: list[TraceEvent]) -> list[tuple[float, str]]:
    return [(e.t, e.actor) for e in seen if e.kind == "hibernated"]


async def test_an_actor_that_keeps_getting_messages_never_hibernates(autojump_clock: Any) -> None:
    async with system(hibernate_after=10) as sys:
        stub = sys.get("counters", "a")
        for _ in range(30):  # 297 s, never 10 s idle
            await stub.ask(("add", 1))
            await trio.sleep(9.9)
        for _ in range(1000):
            await stub.ask(("get",))
        assert sys.is_live(stub.id)
        assert sys.snapshot()[0].hibernations == 0
        assert len(sys.sweep) == 1  # one entry per live actor, however many messages


async def test_an_idle_actor_hibernates_hibernate_after_seconds_after_its_last_message(
    autojump_clock: Any,
) -> None:
    seen: list[TraceEvent] = []
    async with system(hibernate_after=10) as sys:
        sys.observers.append(seen.append)
        stub = sys.get("counters", "a")
        await stub.ask(("add", 1))
        await trio.sleep(3)
        await stub.ask(("add", 1))  # its first entry falls due at 10 s and moves to 13 s
        last = trio.current_time()
        await trio.sleep(9.999)
        assert sys.is_live(stub.id)
        await trio.sleep(0.002)
        assert not sys.is_live(stub.id)
        assert hibernations(seen) == [(last + 10, stub.id.hex)]
        assert len(sys.sweep) == 0


async def test_a_message_that_arrives_as_the_sweep_fires_wins(
    autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, Any]] = []
    async with system(events=events, hibernate_after=10) as sys:
        stub = sys.get("counters", "a")
        wake_idle = Mailbox.wake_idle
        late: list[float] = []

        def wake_then_deliver(mailbox: Mailbox) -> None:
            wake_idle(mailbox)  # the sweep has decided: idle for 10 s
            if not late:  # ... and a message comes before the actor runs
                late.append(trio.current_time())
                stub.tell(("add", 10))

        monkeypatch.setattr(Mailbox, "wake_idle", wake_then_deliver)
        await stub.ask(("add", 1))
        await trio.sleep(10.5)
        assert late, "the sweep did not fire"
        assert events == []  # no on_hibernate: the message was handled instead
        assert sys.is_live(stub.id)
        assert await stub.ask(("get",)) == 11  # not lost
        assert sys.snapshot()[0].hibernations == 0
        await trio.sleep(10.5)  # idle again: now it hibernates
        assert events == [("hibernate", None)]
        assert not sys.is_live(stub.id)


async def test_a_mailbox_woken_idle_still_returns_what_came_meanwhile() -> None:
    mailbox = Mailbox(4)
    got: list[Envelope | None] = []

    async def owner() -> None:
        got.append(await mailbox.get())
        got.append(await mailbox.get())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(owner)
        await trio.testing.wait_all_tasks_blocked()
        assert mailbox.parked
        envelope = Envelope(Kind.MESSAGE, "late")
        mailbox.wake_idle()
        mailbox.put(envelope)
        assert not mailbox.parked
        await trio.testing.wait_all_tasks_blocked()
        assert got == [envelope] and mailbox.parked
        mailbox.wake_idle()
    assert got == [envelope, None]


async def test_shutdown_with_entries_pending_in_the_sweep(autojump_clock: Any) -> None:
    events: list[tuple[str, Any]] = []
    async with system(events=events, hibernate_after=10) as sys:
        stubs = [sys.get("counters", str(i)) for i in range(3)]
        for stub in stubs:
            await stub.ask(("add", 1))
            await trio.sleep(3)
        await stubs[0].ask(("add", 1))  # at 9 s; its entry moves at 10 s
        await trio.sleep(2)
        assert len(sys.sweep) == 3 and all(sys.is_live(s.id) for s in stubs)
        closing = trio.current_time()
    assert trio.current_time() == closing  # shutdown waited for no sweep deadline
    assert events == [("hibernate", None)] * 3  # each had its last word, once
    for stub, n in zip(stubs, (2, 1, 1), strict=True):
        assert (await sys.backend.load(stub.id)).values["n"] == str(n).encode()


async def test_many_actors_hibernate_in_deadline_order(autojump_clock: Any) -> None:
    seen: list[TraceEvent] = []
    rng = random.Random(12)
    expected: list[tuple[float, str]] = []
    async with system(hibernate_after=10) as sys:
        sys.observers.append(seen.append)
        stubs = [sys.get("counters", str(i)) for i in range(40)]
        last: dict[str, float] = {}
        for _ in range(300):  # messages at random times, to live and hibernated actors
            now = trio.current_time()
            stub = rng.choice([s for s in stubs if last.get(s.id.hex, -1) + 10 != now])
            if stub.id.hex in last and last[stub.id.hex] + 10 < now:
                expected.append((last[stub.id.hex] + 10, stub.id.hex))  # it slept
            await stub.ask(("add", 1))
            last[stub.id.hex] = now
            await trio.sleep(rng.choice((0, 0.25, 0.5, 1.5)))
        await trio.sleep(11)
        assert not any(sys.is_live(s.id) for s in stubs)
    expected += [(t + 10, actor) for actor, t in last.items()]
    got = hibernations(seen)
    assert len(got) > len(stubs)  # some hibernated and woke again
    assert sorted(got) == sorted(expected)  # each exactly 10 s after its last message
    assert [t for t, _ in got] == sorted(t for t, _ in expected)  # in deadline order
