"""Prometheus metrics of one server: HTTP traffic, signals, streams, actors and storage.

Each app has its own ``CollectorRegistry`` (never the process-wide default), so two
servers in one process keep apart. Values the runtime already counts are read afresh at
every scrape by ``RuntimeCollector``; nothing runs in the background.

No label ever holds a token, a session id or a room name: routes are templates
(``/api/signal``, unknown paths are ``other``), namespaces are configuration names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from .. import __version__
from ..runtime import ActorSystem, LeaseTable

__all__ = ["HTTP_METHODS", "Metrics", "RuntimeCollector"]

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods that get their own label value; any other is ``other``."""

_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_DELIVERY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class RuntimeCollector:
    """Per-namespace counters and gauges from ``system.snapshot()``, and the stream
    registry's totals, read at scrape time."""

    def __init__(self, system: ActorSystem) -> None:
        self.system = system

    def collect(self) -> Iterator[Metric]:
        system = self.system
        ns = ["namespace"]
        live = GaugeMetricFamily(
            "roomkeeper_actors_live", "Actors in memory (activated, not hibernated).", labels=ns
        )
        hibernated = GaugeMetricFamily(
            "roomkeeper_actors_hibernated",
            "Actors activated by this process that are now hibernated (only in storage).",
            labels=ns,
        )
        activations = CounterMetricFamily(
            "roomkeeper_actor_activations", "Actor instances built from storage.", labels=ns
        )
        hibernations = CounterMetricFamily(
            "roomkeeper_actor_hibernations", "Actors dropped from memory after idling.", labels=ns
        )
        wakes = CounterMetricFamily(
            "roomkeeper_actor_wakes",
            "Activations of a hibernated actor, by what woke it.",
            labels=["namespace", "cause"],
        )
        messages = CounterMetricFamily(
            "roomkeeper_actor_messages",
            "Envelopes handled (messages, alarms, stream events, hibernation hooks).",
            labels=ns,
        )
        errors = CounterMetricFamily(
            "roomkeeper_actor_handler_errors",
            "Envelopes whose handler or commit failed.",
            labels=ns,
        )
        depth = GaugeMetricFamily(
            "roomkeeper_actor_mailbox_depth",
            "Envelopes waiting in the mailboxes of live actors, summed.",
            labels=ns,
        )
        depth_max = GaugeMetricFamily(
            "roomkeeper_actor_mailbox_depth_max",
            "Envelopes waiting in the fullest mailbox.",
            labels=ns,
        )
        waited = CounterMetricFamily(
            "roomkeeper_actor_mailbox_wait_seconds",
            "Time envelopes spent in mailboxes before handling, summed.",
            labels=ns,
        )
        handling = CounterMetricFamily(
            "roomkeeper_actor_handling_seconds",
            "Time spent handling envelopes, storage commit included, summed.",
            labels=ns,
        )
        for snap in system.snapshot():
            label = [snap.namespace]
            live.add_metric(label, snap.live)
            hibernated.add_metric(label, snap.hibernated)
            activations.add_metric(label, snap.activations)
            hibernations.add_metric(label, snap.hibernations)
            for cause, count in sorted(snap.wakes.items()):
                wakes.add_metric([snap.namespace, cause], count)
            messages.add_metric(label, snap.messages)
            errors.add_metric(label, snap.errors)
            depth.add_metric(label, snap.mailbox_depth)
            depth_max.add_metric(label, snap.mailbox_max)
            namespace = system.namespaces.get(snap.namespace)
            if namespace is not None:
                stats = system.stats_for(namespace)
                waited.add_metric(label, stats.mailbox_wait_total)
                handling.add_metric(label, stats.handling_total)
        streams = system.streams
        yield from (live, hibernated, activations, hibernations, wakes, messages, errors)
        yield from (depth, depth_max, waited, handling)
        yield GaugeMetricFamily("roomkeeper_streams_open", "Open event streams.", len(streams))
        yield CounterMetricFamily(
            "roomkeeper_streams_opened", "Event streams opened.", streams.opened_total
        )
        yield CounterMetricFamily(
            "roomkeeper_streams_overflowed",
            "Event streams closed because their client fell too far behind.",
            streams.overflowed_total,
        )
        yield CounterMetricFamily(
            "roomkeeper_stream_writes_at_once",
            "Event stream writes made by the task that had the bytes (a room, the heartbeat"
            " ticker), the stream's own task not woken.",
            streams.writes_at_once_total,
        )
        yield CounterMetricFamily(
            "roomkeeper_stream_writes_by_pump",
            "Event stream writes made by the stream's own task.",
            streams.writes_by_pump_total,
        )
        if system.leases is not None:
            yield from _lease_metrics(system.leases)


def _lease_metrics(leases: LeaseTable) -> Iterator[Metric]:
    """Leases of actors this node holds, with several nodes on one storage."""
    stats = leases.stats
    yield GaugeMetricFamily(
        "roomkeeper_leases_held", "Actor leases this node holds.", len(leases.held)
    )
    for name, value, text in (
        ("acquired", stats.acquired, "Leases this node took (a room activated here)."),
        ("lost", stats.lost, "Leases lost: taken over, fenced, or their deadline passed."),
        ("released", stats.released, "Leases given up when a room hibernated here."),
        ("refused", stats.refused, "Activations refused: another node held the lease."),
        ("fenced_writes", stats.fenced, "Commits refused because the lease had moved."),
        ("renew_failures", stats.renew_failures, "Lease renewals that failed."),
    ):
        yield CounterMetricFamily(f"roomkeeper_leases_{name}", text, value)


class ExtraCounters:
    """Counters kept elsewhere (the HTTP layer's forwarding), read at each scrape."""

    def __init__(self) -> None:
        self.sources: list[tuple[str, str, Callable[[], float]]] = []

    def add(self, name: str, text: str, read: Callable[[], float]) -> None:
        self.sources.append((name, text, read))

    def collect(self) -> Iterator[Metric]:
        for name, text, read in self.sources:
            yield CounterMetricFamily(name, text, read())


class MemoryCollector:
    """Bytes of signals held against the process's memory budget, from the account a
    namespace's environment carries as ``account`` (``held`` and ``budget``, in bytes)."""

    def __init__(self, system: ActorSystem) -> None:
        self.system = system

    def collect(self) -> Iterator[Metric]:
        held = GaugeMetricFamily(
            "roomkeeper_memory_held_bytes",
            "Bytes of signals the rooms in memory hold (replay histories and queues).",
            labels=["namespace"],
        )
        budget = GaugeMetricFamily(
            "roomkeeper_memory_budget_bytes",
            "The process's memory budget for them (--memory-budget).",
            labels=["namespace"],
        )
        for name, namespace in sorted(self.system.namespaces.items()):
            account = getattr(namespace.env, "account", None)
            if account is not None:
                held.add_metric([name], account.held)
                budget.add_metric([name], account.budget)
        yield from (held, budget)


class Metrics:
    """The registry of one app and the metrics the HTTP layer updates."""

    def __init__(self, system: ActorSystem, *, process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.http_requests = Counter(
            "roomkeeper_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.http_duration = Histogram(
            "roomkeeper_http_request_duration_seconds",
            "Time from a request's arrival to its response headers (for event streams: "
            "until the stream opens), by route template.",
            ["route"],
            buckets=_HTTP_BUCKETS,
            registry=registry,
        )
        self.signals_relayed = Counter(
            "roomkeeper_signals_relayed",
            "Signals accepted by POST /api/signal (200): on the recipient's stream, or "
            "queued while it reconnects. A retried request id counts again.",
            registry=registry,
        )
        self.signal_delivery = Histogram(
            "roomkeeper_signal_delivery_seconds",
            "Time from a signal POST's arrival until the signal is on the recipient's "
            "stream buffer (or in its queue), i.e. until the 200 answer.",
            buckets=_DELIVERY_BUCKETS,
            registry=registry,
        )
        info = Gauge(
            "roomkeeper_build_info",
            "The running roomkeeper version.",
            ["version"],
            registry=registry,
        )
        info.labels(__version__).set(1)
        registry.register(RuntimeCollector(system))
        registry.register(MemoryCollector(system))
        self.extra = ExtraCounters()
        registry.register(self.extra)
        if process:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition for a scrape, in the format its ``Accept`` header asks for,
        and the content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
