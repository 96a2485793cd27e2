"""Runtime-held streams: ids, heartbeats without waking, slow consumers, closes, restarts."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import trio

from roomkeeper.runtime import SQLiteBackend, StorageError, StreamLimits, WallClock
from roomkeeper.runtime.ids import ActorId
from roomkeeper.runtime.storage import MemoryBackend, WriteSet
from roomkeeper.runtime.system import ActorSystem

from .conftest import EPOCH, system


async def collect(sys: ActorSystem, stream_id: str, into: list[bytes]) -> None:
    stream = sys.streams.get(stream_id)
    assert stream is not None

    async def write(chunk: bytes) -> None:
        into.extend(line for line in chunk.split(b"\n") if line)

    await sys.streams.pump(stream, write)


def ids(lines: list[bytes]) -> list[int]:
    return [int(line.split()[0]) for line in lines if line != b"start"]


async def test_events_reach_the_consumer_in_order_with_growing_ids(autojump_clock: Any) -> None:
    async with system() as sys:
        stub = sys.get("counters", "a")
        sid = await stub.ask(("stream", {"who": "x"}, 10**20))
        lines: list[bytes] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, sys, sid, lines)
            for i in range(5):
                assert await stub.ask(("send", sid, b"%d" % i)) is not None
            await trio.sleep(1)
            assert await stub.ask(("close", sid)) is not None
        assert lines[0] == b"start"
        assert [line.split()[2] for line in lines[1:]] == [b"0", b"1", b"2", b"3", b"4", b"bye"]
        got = ids(lines)
        assert got == sorted(set(got)) and got[0] >= 10**20 + int(EPOCH * 1e6)


async def test_the_preamble_goes_with_what_is_queued_in_one_write_before_any_wait(
    autojump_clock: Any,
) -> None:
    """So that an HTTP answer's head, held for them, goes out in one write (http/edge.py)."""
    async with system() as sys:
        stub = sys.get("counters", "a")
        queued = await stub.ask(("stream", {"who": "x"}))
        empty = await stub.ask(("stream", {"who": "y"}))
        assert await stub.ask(("send", queued, b"early")) is not None
        for sid in (queued, empty):
            stream = sys.streams.get(sid)
            assert stream is not None
            writes: list[bytes] = []

            async def write(chunk: bytes, into: list[bytes] = writes) -> None:
                into.append(chunk)

            with trio.move_on_after(1):
                await sys.streams.pump(stream, write)
            first, *_ = writes
            assert first.startswith(b"start\n")
            assert (b" early" in first) is (sid == queued)
            assert all(not w.startswith(b"start") for w in writes[1:])


async def test_heartbeats_flow_without_waking_a_hibernated_actor(autojump_clock: Any) -> None:
    async with system(hibernate_after=10) as sys:
        stub = sys.get("counters", "a")
        sid = await stub.ask(("stream", {"who": "x"}))
        lines: list[bytes] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, sys, sid, lines)
            await trio.sleep(60)
            assert not sys.is_live(stub.id)
            beats = [line for line in lines if b" hb " in line]
            assert 5 <= len(beats) <= 12  # never quiet longer than the 10 s interval
            assert sys.snapshot()[0].activations == 1
            # after a wake the actor still sees its stream and attachment
            assert await stub.ask(("streams",)) == [(sid, {"who": "x"})]
            nursery.cancel_scope.cancel()
        got = ids(lines)
        assert got == sorted(set(got))


async def test_a_quiet_stream_gets_one_heartbeat_per_interval_and_no_longer_gap(
    autojump_clock: Any,
) -> None:
    async with system() as sys:  # heartbeat interval: 10 s
        sid = await sys.get("counters", "a").ask(("stream", {"who": "x"}))
        stream = sys.streams.get(sid)
        assert stream is not None
        writes: list[float] = [trio.current_time()]

        async def write(chunk: bytes) -> None:
            writes.extend([trio.current_time()] * chunk.count(b" hb "))

        with trio.move_on_after(300):
            await sys.streams.pump(stream, write)
        gaps = [b - a for a, b in itertools.pairwise(writes)]
        assert 30 <= len(gaps) <= 34  # about one a 10 s, not one every 5 s
        assert max(gaps) <= 10


async def test_consumer_going_away_is_told_to_the_actor(autojump_clock: Any) -> None:
    events: list[tuple[str, Any]] = []
    async with system(events=events) as sys:
        stub = sys.get("counters", "a")
        sid = await stub.ask(("stream", {"who": "x"}))
        with trio.move_on_after(1):
            await collect(sys, sid, [])
        await trio.sleep(1)
        assert ("closed", ({"who": "x"}, "disconnected")) in events
        assert await stub.ask(("streams",)) == []
        assert sys.snapshot()[0].wakes["stream"] == 0


async def test_bytes_wake_a_waiting_consumer_until_it_is_disconnected(
    autojump_clock: Any,
) -> None:
    events: list[tuple[str, Any]] = []
    async with system(events=events) as sys:
        stub = sys.get("counters", "a")
        sid = await stub.ask(("stream", {"who": "x"}))
        stream = sys.streams.get(sid)
        assert stream is not None
        written: list[bytes] = []

        async def write(chunk: bytes) -> None:
            written.append(chunk)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sys.streams.pump, stream, write)
            await stub.ask(("send", sid, b"one"))
            await trio.testing.wait_all_tasks_blocked()
            assert b"one" in written[-1]  # woken, written, waiting again
            sys.streams.disconnect(stream)  # its consumer's connection ended, say
        await trio.sleep(1)
        assert ("closed", ({"who": "x"}, "disconnected")) in events
        assert sys.streams.get(sid) is None and await stub.ask(("streams",)) == []


async def test_slow_consumer_is_cut_off_with_bounded_memory(autojump_clock: Any) -> None:
    events: list[tuple[str, Any]] = []
    limits = StreamLimits(max_bytes=10_000, max_events=1000, heartbeat=10, claim_timeout=60)
    async with system(events=events, streams=limits) as sys:
        stub = sys.get("counters", "a")
        sid = await stub.ask(("stream", {"who": "slow"}))
        stream = sys.streams.get(sid)
        assert stream is not None
        first: list[bytes] = []

        async def read_once(chunk: bytes) -> None:  # claimed, then never read again
            first.append(chunk)
            await trio.sleep_forever()

        reader = trio.CancelScope()

        async def consume() -> None:
            with reader:
                await sys.streams.pump(stream, read_once)

        sys.nursery.start_soon(consume)
        await trio.sleep(0.1)
        assert first == [b"start\n"]
        payload = b"x" * 1000
        sent = 0
        while await stub.ask(("send", sid, payload)) is not None:
            sent += 1
            assert stream.buffered <= 10_000
        assert 5 <= sent <= 10
        await trio.sleep(1)
        assert ("closed", ({"who": "slow"}, "overflow")) in events
        assert stream.buffered == 0 and sys.streams.get(sid) is None
        reader.cancel()


async def test_limits_bind_only_once_a_consumer_reads(autojump_clock: Any) -> None:
    limits = StreamLimits(max_bytes=10_000, max_events=1000, heartbeat=10, claim_timeout=60)
    async with system(streams=limits) as sys:
        stub = sys.get("counters", "a")
        sid = await stub.ask(("stream", {"who": "x"}))
        for _ in range(30):  # a backlog loaded before the consumer starts is kept whole
            assert await stub.ask(("send", sid, b"x" * 1000)) is not None
        lines: list[bytes] = []
        with trio.move_on_after(1):
            await collect(sys, sid, lines)
        assert len(lines) == 31


async def test_unclaimed_stream_is_closed(autojump_clock: Any) -> None:
    events: list[tuple[str, Any]] = []
    async with system(events=events) as sys:
        await sys.get("counters", "a").ask(("stream", {"who": "x"}))
        await trio.sleep(20)
        assert ("closed", ({"who": "x"}, "unclaimed")) in events


async def test_shutdown_says_goodbye_and_a_restart_reports_lost_streams(
    disk_clock: Any, tmp_path: Path
) -> None:
    path = tmp_path / "s.sqlite3"
    clock = WallClock(EPOCH)
    lines: list[bytes] = []
    async with (
        trio.open_nursery() as outer,
        system(backend=SQLiteBackend(path), clock=clock) as sys,
    ):
        sid = await sys.get("counters", "a").ask(("stream", {"who": "x"}))
        outer.start_soon(collect, sys, sid, lines)
        await trio.sleep(1)
    assert lines[-1].endswith(b"bye shutdown")
    events: list[tuple[str, Any]] = []
    async with system(backend=SQLiteBackend(path), clock=clock, events=events) as sys:
        await trio.testing.wait_all_tasks_blocked()
        assert await sys.get("counters", "a").ask(("get",)) == 0
        assert ("closed", ({"who": "x"}, "lost")) in events
    events.clear()
    async with system(backend=SQLiteBackend(path), clock=clock, events=events) as sys:
        assert await sys.get("counters", "a").ask(("get",)) == 0
        assert not [e for e in events if e[0] == "closed"]  # reported once, then forgotten


# --- the output gate -------------------------------------------------------------------------


class SlowCommits(MemoryBackend):
    """Commits wait for ``go`` while ``slow``; fail while ``fail``."""

    def __init__(self) -> None:
        super().__init__()
        self.slow = False
        self.go = trio.Event()

    async def commit(self, actor: ActorId, writes: WriteSet) -> None:
        if self.slow:
            await self.go.wait()
        await super().commit(actor, writes)


async def test_what_a_message_sends_goes_out_once_its_writes_are_durable(
    autojump_clock: Any,
) -> None:
    backend = SlowCommits()
    async with system(backend) as sys:
        stub = sys.get("counters", "a")
        sid = await stub.ask(("stream", {"who": "x"}))
        lines: list[bytes] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, sys, sid, lines)
            await stub.ask(("send", sid, b"free"))  # nothing to commit: out at once
            await trio.sleep(1)
            backend.slow = True
            nursery.start_soon(stub.ask, ("send_put", sid, b"gated"))
            await trio.sleep(25)  # the commit takes long: past two heartbeat intervals
            assert [line.split()[1:] for line in lines[1:]] == [[b"msg", b"free"]]
            backend.go.set()
            await trio.sleep(1)
            await stub.ask(("close", sid))
        sent = [line.split()[1:] for line in lines[1:]]
        assert sent[:2] == [[b"msg", b"free"], [b"msg", b"gated"]]
        assert sent[-1] == [b"end", b"bye"]
        got = ids(lines)
        assert got == sorted(set(got))  # no heartbeat overtook the held event's id


async def test_what_a_failed_commit_sent_is_never_seen(autojump_clock: Any) -> None:
    backend = MemoryBackend()
    async with system(backend) as sys:
        stub = sys.get("counters", "a")
        sid = await stub.ask(("stream", {"who": "x"}))
        lines: list[bytes] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, sys, sid, lines)
            backend.fail = True
            with pytest.raises(StorageError):
                await stub.ask(("send_put", sid, b"dropped"))
            with pytest.raises(StorageError):
                await stub.ask(("close_put", sid))  # nor a close it made
            backend.fail = False
            assert await stub.ask(("send_put", sid, b"kept")) is not None
            await stub.ask(("close", sid))
        assert [line.split()[2] for line in lines[1:] if b" hb " not in line] == [b"kept", b"bye"]
