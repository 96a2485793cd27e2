"""Mailbox, ordering, one instance per id, errors and the output gate."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from roomkeeper.runtime import HandlerError, MailboxFull, MemoryBackend, StorageError
from roomkeeper.runtime.ids import ActorId
from roomkeeper.runtime.storage import WriteSet

from .conftest import CALLER, Counter, system


async def test_ask_replies_and_state_persists_between_messages() -> None:
    async with system() as sys:
        stub = sys.get("counters", "a")
        assert await stub.ask(("add", 2)) == 2
        assert await stub.ask(("add", 3)) == 5
        assert await sys.get("counters", "b").ask(("get",)) == 0


async def test_an_actor_does_not_run_in_its_first_callers_context() -> None:
    async with system() as sys:
        CALLER.set("first request")
        assert await sys.get("counters", "a").ask(("caller",)) == "none"


async def test_messages_are_handled_one_at_a_time_in_arrival_order() -> None:
    async with system() as sys:
        stub = sys.get("counters", "a")
        for i in range(100):
            stub.tell(("seq", i))
        assert await stub.ask(("seq", 100)) == list(range(101))


async def test_one_instance_per_id_when_first_messages_race() -> None:
    Counter.instances = 0
    async with system() as sys:
        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(sys.get("counters", "race").ask, ("add", 1))
        assert await sys.get("counters", "race").ask(("get",)) == 50
    assert Counter.instances == 1


async def test_handler_error_fails_only_that_message_and_commits_nothing() -> None:
    async with system() as sys:
        stub = sys.get("counters", "a")
        await stub.ask(("add", 7))
        with pytest.raises(HandlerError) as info:
            await stub.ask(("boom",))
        assert isinstance(info.value.__cause__, ValueError)
        assert await stub.ask(("get",)) == 7  # the put before the raise was dropped
        assert await stub.ask(("add", 1)) == 8
        assert sys.snapshot()[0].errors == 1


async def test_full_mailbox_is_a_typed_error(autojump_clock: Any) -> None:
    async with system(mailbox_size=4) as sys:
        stub = sys.get("counters", "a")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stub.ask, ("slow", 5))
            await trio.sleep(1)  # the slow message is in hand; the mailbox is empty
            for _ in range(4):
                stub.tell(("add", 1))
            with pytest.raises(MailboxFull) as info:
                stub.tell(("add", 1))
            assert info.value.retry_after > 0
        assert await stub.ask(("get",)) == 4


class GatedBackend(MemoryBackend):
    """Commits wait for ``release``, so a test can see what happens before durability."""

    def __init__(self) -> None:
        super().__init__()
        self.release = trio.Event()
        self.committing = trio.Event()

    async def commit(self, actor: ActorId, writes: WriteSet) -> None:
        self.committing.set()
        await self.release.wait()
        await super().commit(actor, writes)


async def test_reply_waits_for_the_durable_write() -> None:
    backend = GatedBackend()
    replies: list[int] = []
    async with system(backend=backend) as sys:
        stub = sys.get("counters", "a")

        async def add() -> None:
            replies.append(await stub.ask(("add", 1)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(add)
            await backend.committing.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert replies == []  # the handler ran, but the write is not durable yet
            assert backend.values == {}
            backend.release.set()
        assert replies == [1]
        assert b"1" in backend.values[stub.id.hex].values()


async def test_read_only_messages_do_not_touch_storage() -> None:
    backend = MemoryBackend()
    async with system(backend=backend) as sys:
        stub = sys.get("counters", "a")
        await stub.ask(("add", 1))
        before = backend.commits
        for _ in range(10):
            await stub.ask(("get",))
        assert backend.commits == before


async def test_storage_failure_fails_the_message_and_recovers() -> None:
    backend = MemoryBackend()
    async with system(backend=backend) as sys:
        stub = sys.get("counters", "a")
        await stub.ask(("add", 1))
        backend.fail = True
        with pytest.raises(StorageError):
            await stub.ask(("add", 1))
        with pytest.raises(StorageError):  # a rebuild from storage fails the same way
            await stub.ask(("get",))
        backend.fail = False
        assert await stub.ask(("get",)) == 1  # nothing was reported done that was not
        assert await stub.ask(("add", 1)) == 2


async def test_cancelled_ask_does_not_break_the_actor(autojump_clock: Any) -> None:
    async with system() as sys:
        stub = sys.get("counters", "a")
        with trio.move_on_after(1):
            await stub.ask(("slow", 5))
        assert await stub.ask(("get",)) == 0
        assert await stub.ask(("add", 1)) == 1


async def test_after_commit_runs_only_once_the_writes_are_durable() -> None:
    backend = GatedBackend()
    events: list[tuple[str, Any]] = []
    async with system(backend=backend, events=events) as sys:
        stub = sys.get("counters", "a")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stub.ask, ("after", 1))
            await backend.committing.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert events == []  # not before the commit
            backend.release.set()
        assert events == [("after", 1)]
        backend.fail = True
        with pytest.raises(StorageError):
            await stub.ask(("after", 2))
        backend.fail = False
        assert await stub.ask(("get",)) == 1
        assert events == [("after", 1)]  # never for a commit that failed


class FailSecondCommit(MemoryBackend):
    """Commits the first write set of a message, fails the follow-up one."""

    async def commit(self, actor: ActorId, writes: WriteSet) -> None:
        self.fail = "late" in writes.puts
        await super().commit(actor, writes)


async def test_a_failed_follow_up_commit_fails_the_message() -> None:
    """A 200 means committed on every path: what after-commit callbacks write is part
    of the message, so its commit failing fails the ask (and nothing of it is kept)."""
    backend = FailSecondCommit()
    async with system(backend=backend) as sys:
        stub = sys.get("counters", "a")
        with pytest.raises(StorageError):
            await stub.ask(("after_put", 7))
        assert "late" not in backend.values.get(stub.id.hex, {})
        backend.fail = False
        assert await stub.ask(("get",)) == 7  # the first commit stands; the actor recovers


async def test_an_after_commit_callback_that_raises_fails_the_message() -> None:
    async with system() as sys:
        stub = sys.get("counters", "a")
        with pytest.raises(HandlerError):
            await stub.ask(("after_boom", 3))
        assert await stub.ask(("get",)) == 3
