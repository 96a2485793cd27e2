"""One live activation per actor across nodes: leases, fencing, takeover and pick-up of
orphaned alarms, on a ``MemoryCluster`` under MockClock (two systems in one trio run)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from roomkeeper.runtime import Elsewhere, Fenced, WallClock
from roomkeeper.runtime.ids import ActorId
from roomkeeper.runtime.storage import MemoryCluster, WriteSet

from .conftest import EPOCH, system

TTL = 3.0


@pytest.fixture
def cluster() -> MemoryCluster:
    return MemoryCluster(WallClock(EPOCH))


async def drain(chunk: bytes) -> None:
    pass


def actor(name: str = "r") -> ActorId:
    return ActorId("counters", name)


async def test_an_actor_lives_on_one_node_and_the_others_are_told_where(
    autojump_clock: Any, cluster: MemoryCluster
) -> None:
    a_node, b_node = cluster.node("a", "http://a", lease_ttl=TTL), cluster.node("b", "http://b")
    async with (
        system(a_node, clock=cluster.clock, hibernate_after=60) as a,
        system(b_node, clock=cluster.clock) as b,
    ):
        assert await a.get("counters", "r").ask(("add", 1)) == 1
        with pytest.raises(Elsewhere) as info:
            await b.get("counters", "r").ask(("add", 1))
        assert (info.value.owner, info.value.address) == ("a", "http://a")
        assert 0 < info.value.expires_in <= TTL
        assert not b.namespaces["counters"].live  # no activation left behind on b
        await trio.sleep(TTL * 4)  # renewed all along while a keeps it live
        assert cluster.owner(actor()) == "a"
        assert await a.get("counters", "r").ask(("add", 1)) == 2
        assert cluster.epoch(actor()) == 1


async def test_hibernation_releases_the_lease_and_another_node_activates_at_once(
    autojump_clock: Any, cluster: MemoryCluster
) -> None:
    a_node, b_node = cluster.node("a", lease_ttl=TTL), cluster.node("b", lease_ttl=TTL)
    async with (
        system(a_node, clock=cluster.clock, hibernate_after=5) as a,
        system(b_node, clock=cluster.clock) as b,
    ):
        await a.get("counters", "r").ask(("add", 1))
        await trio.sleep(6)
        assert not a.is_live(actor())
        assert a.leases is not None and not a.leases.held
        assert await b.get("counters", "r").ask(("add", 1)) == 2
        assert (cluster.owner(actor()), cluster.epoch(actor())) == ("b", 2)


async def test_a_node_holding_streams_keeps_the_lease_while_hibernated(
    autojump_clock: Any, cluster: MemoryCluster
) -> None:
    a_node, b_node = cluster.node("a", lease_ttl=TTL), cluster.node("b", lease_ttl=TTL)
    async with (
        system(a_node, clock=cluster.clock, hibernate_after=5) as a,
        system(b_node, clock=cluster.clock) as b,
    ):
        stream = a.streams.get(await a.get("counters", "r").ask(("stream", {"who": 1})))
        assert stream is not None
        a.nursery.start_soon(a.streams.pump, stream, drain)
        await trio.sleep(20)
        assert not a.is_live(actor())
        with pytest.raises(Elsewhere):
            await b.get("counters", "r").ask(("get",))
        assert cluster.owner(actor()) == "a"


async def test_a_dead_node_is_taken_over_after_the_ttl_with_its_committed_state(
    autojump_clock: Any, cluster: MemoryCluster
) -> None:
    a_node, b_node = cluster.node("a", lease_ttl=TTL), cluster.node("b", lease_ttl=TTL)
    async with system(b_node, clock=cluster.clock) as b:
        async with system(a_node, clock=cluster.clock) as a:
            await a.get("counters", "r").ask(("add", 5))
            a_node.fail = True  # killed: it renews nothing and releases nothing
        started = trio.current_time()
        with pytest.raises(Elsewhere) as info:
            await b.get("counters", "r").ask(("get",))
        await trio.sleep(info.value.expires_in + 0.01)
        assert await b.get("counters", "r").ask(("add", 1)) == 6
        assert trio.current_time() - started <= TTL + 1
        assert (cluster.owner(actor()), cluster.epoch(actor())) == ("b", 2)


async def test_a_cut_off_node_stops_serving_at_its_deadline_and_ends_its_streams(
    autojump_clock: Any, cluster: MemoryCluster
) -> None:
    events: list[tuple[str, Any]] = []
    a_node = cluster.node("a", lease_ttl=TTL)
    async with system(a_node, events, clock=cluster.clock) as a:
        stream = a.streams.get(await a.get("counters", "r").ask(("stream", {"who": 1})))
        assert stream is not None
        a.nursery.start_soon(a.streams.pump, stream, drain)
        a_node.fail = True
        await trio.sleep(TTL - 0.5)  # the deadline: the TTL less a margin, from the acquire
        assert stream.closed and stream.close_reason == "closed"
        assert not a.is_live(actor())
        assert a.leases is not None and a.leases.stats.lost == 1
        assert ("closed", ({"who": 1}, "disconnected")) not in events  # nobody told


async def test_a_renewal_that_hangs_does_not_hold_the_deadline_back(
    autojump_clock: Any, cluster: MemoryCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL black-holed: the renew neither answers nor fails. The node still stops
    serving at its local deadline and ends its streams."""
    a_node = cluster.node("a", lease_ttl=TTL)
    async with system(a_node, clock=cluster.clock) as a:
        stream = a.streams.get(await a.get("counters", "r").ask(("stream", {"who": 1})))
        assert stream is not None
        a.nursery.start_soon(a.streams.pump, stream, drain)

        async def hang(batch: Any) -> Any:
            await trio.sleep_forever()

        monkeypatch.setattr(a_node, "renew", hang)
        await trio.sleep(TTL - 0.5)
        assert stream.closed and not a.is_live(actor())
        assert a.leases is not None and a.leases.stats.lost == 1


async def test_a_node_that_wakes_past_its_deadline_writes_nothing(
    autojump_clock: Any, cluster: MemoryCluster
) -> None:
    """A frozen node (its renewals stopped) that wakes after another node took over:
    the local deadline refuses the message before the store's fence is even needed."""
    a_node, b_node = cluster.node("a", lease_ttl=TTL), cluster.node("b", lease_ttl=TTL)
    async with system(a_node, clock=cluster.clock) as a, system(b_node, clock=cluster.clock) as b:
        await a.get("counters", "r").ask(("add", 1))
        assert a.leases is not None
        a.leases.held[actor()] = (1, trio.current_time() + 100)  # a deadline it should not have
        a_node.fail = True
        await trio.sleep(TTL + 1)
        assert await b.get("counters", "r").ask(("add", 10)) == 11
        a_node.fail = False
        with pytest.raises(Fenced):  # the store's fence: epoch 1 is not the owner's
            await a.get("counters", "r").ask(("add", 100))
        assert await b.get("counters", "r").ask(("get",)) == 11
        assert not a.is_live(actor())


async def test_the_fence_refuses_a_commit_after_a_takeover(cluster: MemoryCluster) -> None:
    a_node, b_node = cluster.node("a", lease_ttl=0.01), cluster.node("b")
    await a_node.acquire(actor())
    await trio.sleep(0.02)
    await b_node.acquire(actor())
    with pytest.raises(Fenced):
        await a_node.commit(actor(), WriteSet(puts={"n": b"1"}))
    assert cluster.data.values.get(actor().hex) is None


async def test_a_dead_nodes_alarm_fires_on_a_live_node(
    autojump_clock: Any, cluster: MemoryCluster
) -> None:
    a_events: list[tuple[str, Any]] = []
    b_events: list[tuple[str, Any]] = []
    a_node, b_node = cluster.node("a", lease_ttl=TTL), cluster.node("b", lease_ttl=TTL)
    async with system(b_node, b_events, clock=cluster.clock) as b:
        async with system(a_node, a_events, clock=cluster.clock) as a:
            await a.get("counters", "r").ask(("alarm", cluster.clock.now() + 30))
            a_node.fail = True
        await trio.sleep(31)
        assert [e for e in b_events if e[0] == "alarm"] == [
            ("alarm", pytest.approx(EPOCH + 30, abs=2))
        ]
        assert await b.get("counters", "r").ask(("get",)) == 0
        assert cluster.data.values[actor().hex]["alarms"] == b"1"
        assert not [e for e in a_events if e[0] == "alarm"]


async def test_streams_a_dead_node_left_are_reported_lost_to_the_new_owner(
    autojump_clock: Any, cluster: MemoryCluster
) -> None:
    b_events: list[tuple[str, Any]] = []
    a_node, b_node = cluster.node("a", lease_ttl=TTL), cluster.node("b", lease_ttl=TTL)
    async with system(b_node, b_events, clock=cluster.clock) as b:
        async with system(a_node, clock=cluster.clock) as a:
            await a.get("counters", "r").ask(("stream", {"who": 1}))
            a_node.fail = True
        await trio.sleep(TTL + 1)
        await b.get("counters", "r").ask(("get",))
        await trio.sleep(0.1)
        assert ("closed", ({"who": 1}, "lost")) in b_events
        assert not cluster.data.open_streams.get(actor().hex)


async def test_streams_a_dead_node_left_are_closed_without_a_visit(
    autojump_clock: Any, cluster: MemoryCluster
) -> None:
    """The node died with its streams open and its clients with it: no request ever comes
    for the actor, yet a live node activates it and learns its streams are lost."""
    b_events: list[tuple[str, Any]] = []
    a_node, b_node = cluster.node("a", lease_ttl=TTL), cluster.node("b", lease_ttl=TTL)
    async with system(b_node, b_events, clock=cluster.clock):
        async with system(a_node, clock=cluster.clock) as a:
            await a.get("counters", "r").ask(("stream", {"who": 1}))
            a_node.fail = True
        await trio.sleep(TTL + 2)
        assert ("closed", ({"who": 1}, "lost")) in b_events
        assert not cluster.data.open_streams.get(actor().hex)


async def test_a_live_nodes_streams_are_left_to_it(
    autojump_clock: Any, cluster: MemoryCluster
) -> None:
    b_events: list[tuple[str, Any]] = []
    a_node, b_node = cluster.node("a", lease_ttl=TTL), cluster.node("b", lease_ttl=TTL)
    async with (
        system(b_node, b_events, clock=cluster.clock),
        system(a_node, clock=cluster.clock, hibernate_after=2) as a,
    ):
        stream = a.streams.get(await a.get("counters", "r").ask(("stream", {"who": 1})))
        assert stream is not None
        a.nursery.start_soon(a.streams.pump, stream, drain)
        await trio.sleep(5 * TTL)
        assert not a.is_live(actor())  # hibernated, its stream open
        assert not [e for e in b_events if e[0] == "closed"]
        assert cluster.data.open_streams[actor().hex]


async def test_a_graceful_stop_releases_every_lease(
    autojump_clock: Any, cluster: MemoryCluster
) -> None:
    a_node, b_node = cluster.node("a", lease_ttl=TTL), cluster.node("b", lease_ttl=TTL)
    async with system(b_node, clock=cluster.clock) as b:
        async with system(a_node, clock=cluster.clock) as a:
            await a.get("counters", "r").ask(("stream", {"who": 1}))
        assert await b.get("counters", "r").ask(("add", 2)) == 2  # no wait for the TTL


async def test_lease_counters_are_published_as_metrics(
    autojump_clock: Any, cluster: MemoryCluster
) -> None:
    from roomkeeper.observe.metrics import Metrics

    a_node, b_node = cluster.node("a", lease_ttl=TTL), cluster.node("b", lease_ttl=TTL)
    async with system(a_node, clock=cluster.clock) as a, system(b_node, clock=cluster.clock) as b:
        await a.get("counters", "r").ask(("add", 1))
        with pytest.raises(Elsewhere):
            await b.get("counters", "r").ask(("add", 1))
        text_a = Metrics(a, process=False).render(None)[0].decode()
        text_b = Metrics(b, process=False).render(None)[0].decode()
    assert "roomkeeper_leases_held 1.0" in text_a
    assert "roomkeeper_leases_acquired_total 1.0" in text_a
    assert "roomkeeper_leases_refused_total 1.0" in text_b
    assert "roomkeeper_leases_held 0.0" in text_b
