"""Test actors and a plain-text codec for the runtime's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from roomkeeper.runtime import (
    Actor,
    ActorSystem,
    Binding,
    MemoryBackend,
    RuntimeConfig,
    StorageBackend,
    StreamInfo,
    StreamLimits,
    WallClock,
    open_actor_system,
)

EPOCH = 1_800_000_000.0


@pytest.fixture
def disk_clock() -> trio.testing.MockClock:
    """A MockClock for tests that touch SQLite: it jumps only after 20 ms of real
    quiet, so time does not run away while a storage thread is busy."""
    return trio.testing.MockClock(autojump_threshold=0.02)


class TextCodec:
    def preamble(self) -> bytes:
        return b"start\n"

    def encode(self, event_id: int, event: str, data: bytes) -> bytes:
        return b"%d %s %s\n" % (event_id, event.encode(), data)

    def heartbeat(self, now: float) -> tuple[str, bytes]:
        return "hb", b"%d" % int(now)

    def goodbye(self) -> tuple[str, bytes]:
        return "bye", b"shutdown"


CALLER: ContextVar[str] = ContextVar("caller", default="none")


class Counter(Actor):
    """Counts in storage; messages are tuples naming what to do."""

    instances = 0

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        Counter.instances += 1
        self.seen: list[Any] = []
        self.events: list[tuple[str, Any]] = ctx.env if ctx.env is not None else []

    async def on_message(self, message: Any) -> Any:
        op, *args = message
        if op == "add":
            value = self.ctx.storage.get("n", 0) + args[0]
            self.ctx.storage.put("n", value)
            return value
        if op == "get":
            return self.ctx.storage.get("n", 0)
        if op == "caller":  # what the caller set in its context, as the actor sees it
            return CALLER.get()
        if op == "seq":
            self.seen.append(args[0])
            await trio.lowlevel.checkpoint()
            return list(self.seen)
        if op == "after":  # a write, and an event once it is durable
            self.ctx.storage.put("n", args[0])
            self.ctx.after_commit(lambda: self.events.append(("after", args[0])))
            return None
        if op == "after_put":  # an after-commit callback that writes (a second commit)
            self.ctx.storage.put("n", args[0])
            self.ctx.after_commit(lambda: self.ctx.storage.put("late", args[0]))
            return None
        if op == "after_boom":  # an after-commit callback that raises
            self.ctx.storage.put("n", args[0])
            self.ctx.after_commit(lambda: self.events.append(("boom", 1 // 0)))
            return None
        if op == "boom":
            self.ctx.storage.put("n", -1)
            raise ValueError("boom")
        if op == "slow":
            await trio.sleep(args[0])
            self.ctx.storage.put("slow", True)
            return "done"
        if op == "alarm":
            self.ctx.set_alarm(args[0])
            return None
        if op == "stream":
            return self.ctx.accept_stream(args[0], id_base=args[1] if len(args) > 1 else 0)
        if op == "send":
            return self.ctx.send(args[0], "msg", args[1])
        if op == "send_put":  # an event and a write: the event waits for the commit
            self.ctx.storage.put("sent", args[1].decode())
            return self.ctx.send(args[0], "msg", args[1])
        if op == "close_put":
            self.ctx.storage.put("closing", True)
            return self.ctx.close_stream(args[0], ("end", b"bye"))
        if op == "streams":
            return [(s.stream_id, s.attachment) for s in self.ctx.streams()]
        if op == "close":
            return self.ctx.close_stream(args[0], ("end", b"bye"))
        raise AssertionError(op)

    async def on_alarm(self) -> None:
        self.events.append(("alarm", self.ctx.now()))
        self.ctx.storage.put("alarms", self.ctx.storage.get("alarms", 0) + 1)

    async def on_stream_closed(self, stream: StreamInfo, reason: str) -> None:
        self.events.append(("closed", (stream.attachment, reason)))

    async def on_hibernate(self) -> None:
        self.events.append(("hibernate", None))


def runtime_config(**kw: Any) -> RuntimeConfig:
    streams = kw.pop("streams", StreamLimits(heartbeat=10.0, claim_timeout=5.0))
    return RuntimeConfig(hibernate_after=kw.pop("hibernate_after", 10.0), streams=streams, **kw)


@asynccontextmanager
async def system(
    backend: StorageBackend | None = None,
    events: list[tuple[str, Any]] | None = None,
    clock: WallClock | None = None,
    **kw: Any,
) -> AsyncIterator[ActorSystem]:
    async with open_actor_system(
        {"counters": Binding(Counter, env=events)},
        codec=TextCodec(),
        backend=backend or MemoryBackend(),
        config=runtime_config(**kw),
        clock=clock or WallClock(EPOCH),
    ) as sys:
        yield sys
