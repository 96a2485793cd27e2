"""A stream's bytes written at once by the task that has them (`WriteNow`), while its
pump's task sleeps: what is taken, what queues behind, and what is owed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing

from roomkeeper.runtime import ActorSystem, Wrote
from roomkeeper.runtime.streams import Stream

from .conftest import system


class Consumer:
    """A stream's consumer: what its pump wrote, what its `WriteNow` took, and what the
    `WriteNow` answers next (``answers``, then ``then``)."""

    def __init__(self) -> None:
        self.by_pump: list[bytes] = []
        self.at_once: list[bytes] = []
        self.answers: list[Wrote] = []
        self.then = Wrote.ALL

    async def write(self, chunk: bytes) -> None:
        self.by_pump.append(chunk)

    def write_now(self, data: bytes) -> Wrote:
        wrote = self.answers.pop(0) if self.answers else self.then
        if wrote is not Wrote.NOTHING:
            self.at_once.append(data)
        return wrote

    def events(self) -> list[bytes]:
        """Every event line written, in the order the consumer got them."""
        return [line for chunk in self.by_pump + self.at_once for line in chunk.splitlines()]


@asynccontextmanager
async def pumped(**kw: Any) -> AsyncIterator[tuple[ActorSystem, Any, str, Stream, Consumer]]:
    """A counter actor's stream, pumped with a `WriteNow`, and waiting."""
    async with system(**kw) as sys:
        stub = sys.get("counters", "a")
        sid = await stub.ask(("stream", {"who": "x"}))
        stream = sys.streams.get(sid)
        assert stream is not None
        consumer = Consumer()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sys.streams.pump, stream, consumer.write, consumer.write_now)
            await trio.testing.wait_all_tasks_blocked()
            yield sys, stub, sid, stream, consumer
            nursery.cancel_scope.cancel()


async def test_a_waiting_pump_is_not_woken_for_bytes_written_at_once(autojump_clock: Any) -> None:
    async with pumped() as (sys, stub, sid, _, consumer):
        for payload in (b"one", b"two"):
            await stub.ask(("send", sid, payload))
        await trio.sleep(25)  # two heartbeats
        await stub.ask(("send_put", sid, b"three"))  # held until its commit, then released
        assert consumer.by_pump == [b"start\n"]
        lines = [line.split() for line in consumer.at_once]
        assert [line[1:] for line in lines[:2]] == [[b"msg", b"one"], [b"msg", b"two"]]
        assert [line[1] for line in lines[2:4]] == [b"hb", b"hb"]
        assert lines[4][1:] == [b"msg", b"three"]
        assert sys.streams.writes_at_once_total == 5 and sys.streams.writes_by_pump_total == 0


async def test_what_is_refused_queues_for_the_pump_and_what_follows_queues_behind_it(
    autojump_clock: Any,
) -> None:
    async with pumped() as (sys, stub, sid, stream, consumer):
        consumer.answers = [Wrote.NOTHING]
        sys.streams.send(stream, "msg", b"one")  # refused: the pump is woken...
        sys.streams.send(stream, "msg", b"two")  # ...and this one, before it ran, queues
        await trio.testing.wait_all_tasks_blocked()
        assert consumer.at_once == []
        assert consumer.by_pump[1].count(b" msg ") == 2
        await stub.ask(("send", sid, b"three"))  # the pump waits again: at once
        assert consumer.at_once[0].endswith(b"msg three\n")
        assert [e.split()[2] for e in consumer.events() if b" msg " in e] == [
            b"one",
            b"two",
            b"three",
        ]


async def test_bytes_taken_in_part_are_sent_by_the_pump_before_anything_else(
    autojump_clock: Any,
) -> None:
    async with pumped() as (sys, _, _, stream, consumer):
        consumer.answers = [Wrote.SOME]
        sys.streams.send(stream, "msg", b"one")  # taken, partly written
        sys.streams.send(stream, "msg", b"two")  # not offered: the pump owes bytes first
        await trio.testing.wait_all_tasks_blocked()
        assert len(consumer.at_once) == 1
        # the pump's next write, which sends the owed bytes first, carries what queued
        assert consumer.by_pump[1].endswith(b"msg two\n") and b"one" not in consumer.by_pump[1]
        assert not stream.due
        consumer.answers = [Wrote.SOME]
        sys.streams.send(stream, "msg", b"three")
        await trio.testing.wait_all_tasks_blocked()
        assert consumer.by_pump[2] == b""  # nothing queued: a write of nothing, to flush


async def test_a_stream_closed_while_its_pump_waits_is_not_written_to_again(
    autojump_clock: Any,
) -> None:
    async with pumped() as (sys, stub, sid, stream, consumer):
        assert stream.write_now is not None
        await stub.ask(("close", sid))  # its last event at once, then closed
        await trio.testing.wait_all_tasks_blocked()
        assert stream.write_now is None
        assert consumer.at_once[-1].endswith(b"end bye\n")
        assert sys.streams.send(stream, "msg", b"late") is None
        await trio.sleep(30)
        assert not any(b"late" in e or b" hb " in e for e in consumer.events())
