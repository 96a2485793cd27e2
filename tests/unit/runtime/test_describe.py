"""``Actor.describe()`` and ``ActorStub.describe()``: an actor's own safe view, taken on its
task between messages, waking it if it hibernated; plain JSON, detached from the actor."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from roomkeeper.runtime import (
    Actor,
    Binding,
    HandlerError,
    MemoryBackend,
    RuntimeConfig,
    open_actor_system,
)

from .conftest import TextCodec


class Shown(Actor):
    """Stores a secret and a count; shows the count and what it has handled."""

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.handled: list[Any] = []

    async def on_message(self, message: Any) -> Any:
        if message == "slow":
            await trio.sleep(5)
        self.handled.append(message)
        self.ctx.storage.put("secret", "s3cret")
        self.ctx.storage.put("n", self.ctx.storage.get("n", 0) + 1)

    def describe(self) -> dict[str, Any]:
        return {"n": self.ctx.storage.get("n", 0), "handled": self.handled}


class Silent(Actor):
    async def on_message(self, message: Any) -> Any:
        return message


class NotJson(Actor):
    def describe(self) -> dict[str, Any]:
        return {"when": object()}


def open_system(actor: type[Actor], hibernate_after: float = 10.0) -> Any:
    return open_actor_system(
        {"things": Binding(actor)},
        codec=TextCodec(),
        backend=MemoryBackend(),
        config=RuntimeConfig(hibernate_after=hibernate_after),
    )


async def test_an_actor_shows_its_view_as_plain_data(autojump_clock: Any) -> None:
    async with open_system(Shown) as system:
        stub = system.get("things", "a")
        await stub.ask("one")
        view = await stub.describe()
        assert view == {"n": 1, "handled": ["one"]}
        assert view is not None
        view["handled"].append("forged")  # a copy: the actor's state is untouched
        assert await stub.describe() == {"n": 1, "handled": ["one"]}


async def test_the_default_shows_nothing_and_actors_never_see_the_request(
    autojump_clock: Any,
) -> None:
    async with open_system(Silent) as system:
        stub = system.get("things", "a")
        assert await stub.describe() is None
        assert await stub.ask("echo") == "echo"


async def test_it_runs_on_the_actors_task_after_the_message_in_hand(
    autojump_clock: Any,
) -> None:
    async with open_system(Shown) as system, trio.open_nursery() as nursery:
        stub = system.get("things", "a")
        nursery.start_soon(stub.ask, "slow")
        await trio.testing.wait_all_tasks_blocked()
        assert await stub.describe() == {"n": 1, "handled": ["slow"]}


async def test_a_hibernated_actor_is_woken_and_hibernates_again(autojump_clock: Any) -> None:
    async with open_system(Shown, hibernate_after=10) as system:
        stub = system.get("things", "a")
        await stub.ask("one")
        await trio.sleep(11)
        assert not system.is_live(stub.id)
        assert await stub.describe() == {"n": 1, "handled": []}  # rebuilt from storage
        assert system.is_live(stub.id)
        await trio.sleep(11)
        assert not system.is_live(stub.id)
        snap = system.snapshot()[0]
        assert (snap.activations, snap.hibernations) == (2, 2)


async def test_a_view_that_is_not_json_fails_as_the_handler(autojump_clock: Any) -> None:
    async with open_system(NotJson) as system:
        with pytest.raises(HandlerError):
            await system.get("things", "a").describe()
