"""Metrics in process: the per-app registry, route labels, request ids, the runtime
collector and the timed storage backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from httpx import AsyncClient as Client
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from roomkeeper.http.app import ROOMS, create_app
from roomkeeper.http.codec import SseCodec
from roomkeeper.observe import TimedBackend
from roomkeeper.observe.storage import StorageMetrics
from roomkeeper.runtime import (
    ActorSystem,
    Binding,
    MemoryBackend,
    StorageBackend,
    StorageError,
    open_actor_system,
)
from roomkeeper.runtime.ids import ActorId
from roomkeeper.runtime.storage import WriteSet
from roomkeeper_actors.signaling.messages import Connect

from ..support.asgi import asgi_client

ROOM_ACTOR = "roomkeeper_actors.signaling.room:Room"


@pytest.fixture
async def system() -> AsyncIterator[ActorSystem]:
    backend = TimedBackend(MemoryBackend())
    async with open_actor_system(
        {ROOMS: Binding(ROOM_ACTOR)}, codec=SseCodec(1000), backend=backend
    ) as system:
        yield system


@pytest.fixture
async def client(system: ActorSystem) -> AsyncIterator[Client]:
    app = create_app(system)
    async with asgi_client(app) as client:
        yield client


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


async def scrape(client: Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return samples(response.content.decode())


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def test_requests_are_counted_by_route_template(client: Client) -> None:
    await client.get("/healthz")
    await client.get("/no/such/path/with-a-secret-in-it")
    await client.get("/api/signal")  # 405: no rule matched, but the path is a template
    await client.post("/api/signal?room=r", content=b"{}")
    found = await scrape(client)
    total = "roomkeeper_http_requests_total"
    assert value(found, total, route="/healthz", method="GET", status="200") == 1
    assert value(found, total, route="other", method="GET", status="404") == 1
    assert value(found, total, route="/api/signal", method="GET", status="405") == 1
    assert value(found, total, route="/api/signal", method="POST", status="400") == 1
    count = "roomkeeper_http_request_duration_seconds_count"
    assert value(found, count, route="/api/signal") == 2
    assert not any("secret" in v for _, labels in found for _, v in labels)
    # only a 200 counts as a relayed signal
    assert value(found, "roomkeeper_signals_relayed_total") == 0


async def test_odd_methods_collapse(client: Client) -> None:
    await client.request("BREW", "/healthz")
    found = await scrape(client)
    assert value(
        found, "roomkeeper_http_requests_total", route="/healthz", method="other", status="405"
    )


async def test_the_runtime_collector_reads_the_snapshot(
    client: Client, system: ActorSystem
) -> None:
    await system.get(ROOMS, "one").ask(Connect())
    await system.get(ROOMS, "two").ask(Connect())
    found = await scrape(client)
    (snap,) = system.snapshot()
    ns = {"namespace": ROOMS}
    assert value(found, "roomkeeper_actors_live", **ns) == snap.live == 2
    assert value(found, "roomkeeper_actor_activations_total", **ns) == snap.activations
    assert value(found, "roomkeeper_actor_messages_total", **ns) == snap.messages
    assert value(found, "roomkeeper_streams_open") == 2
    assert value(found, "roomkeeper_streams_opened_total") == 2
    for cause in ("message", "alarm", "stream"):
        assert ("roomkeeper_actor_wakes_total", frozenset({**ns, "cause": cause}.items())) in found
    assert value(found, "roomkeeper_storage_operation_duration_seconds_count", operation="commit")
    assert value(found, "roomkeeper_build_info", version=__import__("roomkeeper").__version__) == 1


async def test_request_ids_are_echoed_or_made(client: Client) -> None:
    given = await client.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert given.headers["X-Request-Id"] == "abc-123"
    made = await client.get("/healthz", headers={"X-Request-Id": "no spaces allowed"})
    assert made.headers["X-Request-Id"] != "no spaces allowed"
    assert len(made.headers["X-Request-Id"]) == 32
    error = await client.get("/nowhere")
    assert error.status_code == 404 and "X-Request-Id" in error.headers


async def test_two_apps_in_one_process_keep_apart(system: ActorSystem) -> None:
    first, second = create_app(system), create_app(system)
    async with asgi_client(first) as a, asgi_client(second) as b:
        await a.get("/healthz")
        found_a = await scrape(a)
        found_b = await scrape(b)
    total = "roomkeeper_http_requests_total"
    assert value(found_a, total, route="/healthz", method="GET", status="200") == 1
    assert value(found_b, total, route="/healthz", method="GET", status="200") == 0
    assert first.observability.metrics.registry is not second.observability.metrics.registry
    assert REGISTRY.get_sample_value("roomkeeper_http_requests_total") is None


async def test_openmetrics_when_asked(client: Client) -> None:
    response = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.endswith(b"# EOF\n")


# -- the timed backend ----------------------------------------------------------------------


def storage_value(metrics: StorageMetrics, name: str, operation: str) -> float:
    for metric in [*metrics.duration.collect(), *metrics.errors.collect()]:
        for s in metric.samples:
            if s.name == name and s.labels == {"operation": operation}:
                return s.value
    return 0.0


async def test_timed_backend_times_and_counts_failures() -> None:
    inner = MemoryBackend()
    backend = TimedBackend(inner)
    typed: StorageBackend = backend  # the protocol holds
    await typed.open()
    actor = ActorId("rooms", "a")
    await typed.commit(actor, WriteSet(puts={"k": b"1"}))
    assert (await typed.load(actor)).values == {"k": b"1"}
    assert await typed.names("rooms") == ["a"]
    await typed.save_positions([])
    assert await typed.alarms() == [] and await typed.streams() == []
    inner.fail = True
    with pytest.raises(StorageError):
        await typed.load(actor)
    await typed.close()
    m = backend.metrics
    count = "roomkeeper_storage_operation_duration_seconds_count"
    assert storage_value(m, count, "commit") == 1
    assert storage_value(m, count, "load") == 2
    assert storage_value(m, "roomkeeper_storage_errors_total", "load") == 1
    assert storage_value(m, "roomkeeper_storage_errors_total", "commit") == 0
    assert backend.commits == 1  # read through to the wrapped backend


async def test_cancelled_operations_are_not_errors() -> None:
    class Slow(MemoryBackend):
        async def load(self, actor: ActorId) -> Any:
            await trio.sleep_forever()

    backend = TimedBackend(Slow())
    with trio.move_on_after(0.01):
        await backend.load(ActorId("rooms", "a"))
    m = backend.metrics
    assert storage_value(m, "roomkeeper_storage_errors_total", "load") == 0
    assert storage_value(m, "roomkeeper_storage_operation_duration_seconds_count", "load") == 1
