"""The actor system: namespaces, stubs, activations, alarms, streams and shutdown."""

from __future__ import annotations

import contextvars
import importlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import trio

from ..jsonutil import loads
from .activation import RETRY_DELAYS, Activation
from .actor import DESCRIBE, Actor
from .alarms import AlarmScheduler
from .clock import WallClock
from .errors import ShuttingDown, StorageError, UnknownNamespace
from .idle import IdleSweep
from .ids import ActorId
from .leases import LeaseTable, lease_store
from .mailbox import Envelope, Kind
from .stats import NamespaceSnapshot, NamespaceStats
from .storage import ActorRecord, MemoryBackend, StorageBackend, WriteSet
from .storage.base import UNCHANGED
from .streams import Stream, StreamCodec, StreamInfo, StreamLimits, StreamRegistry
from .trace import Observer, TraceEvent

log = logging.getLogger("roomkeeper.runtime")


@attrs.frozen
class RuntimeConfig:
    """The runtime's settings; every one has a default that works on a fresh machine."""

    mailbox_size: int = 1024
    hibernate_after: float = 10.0
    shutdown_timeout: float = 10.0
    streams: StreamLimits = attrs.Factory(StreamLimits)


@attrs.frozen
class Binding:
    """A namespace's actor class (or its dotted path ``pkg.mod:Class``) and environment."""

    actor: type[Actor] | str
    env: Any = None


def resolve_actor(spec: type[Actor] | str) -> type[Actor]:
    if not isinstance(spec, str):
        return spec
    module, _, name = spec.partition(":")
    cls = getattr(importlib.import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, Actor)):
        raise TypeError(f"{spec} is not an Actor subclass")
    return cls


class Namespace:
    """A set of actors of one class; each name in it is one actor."""

    def __init__(self, name: str, binding: Binding) -> None:
        self.name = name
        self.actor_class = resolve_actor(binding.actor)
        self.env = binding.env
        self.live: dict[ActorId, Activation] = {}
        self.known: set[str] = set()  # hex ids activated here and not gone empty
        self.stats = NamespaceStats()


class ActorStub:
    """A reference to one actor by id; cheap to make, valid across hibernation."""

    __slots__ = ("id", "system")

    def __init__(self, system: ActorSystem, actor_id: ActorId) -> None:
        self.system = system
        self.id = actor_id

    async def ask(self, message: Any) -> Any:
        """Send ``message`` and wait for the reply (after the actor's writes are durable).
        Raises ``MailboxFull``/``ShuttingDown`` (retry later), ``HandlerError`` or
        ``StorageError``."""
        envelope = Envelope(Kind.MESSAGE, message, trio.lowlevel.current_task())
        self.system._deliver(self.id, envelope)
        return await envelope.wait()

    def tell(self, message: Any) -> None:
        """Send ``message`` without waiting; raises ``MailboxFull`` if it cannot be queued."""
        self.system._deliver(self.id, Envelope(Kind.MESSAGE, message))

    async def describe(self) -> dict[str, Any] | None:
        """The actor's ``Actor.describe()`` view (plain JSON data), or None if it shows
        nothing. Delivered like an ``ask`` (same errors; it counts as a message), so it
        wakes a hibernated actor, which hibernates again when idle."""
        view: dict[str, Any] | None = await self.ask(DESCRIBE)
        return view


class ActorSystem:
    """Owns every actor's task in one nursery. Use ``open_actor_system``."""

    def __init__(
        self,
        nursery: trio.Nursery,
        backend: StorageBackend,
        namespaces: Mapping[str, Binding],
        codec: StreamCodec,
        config: RuntimeConfig,
        clock: WallClock,
        new_stream_id: Callable[[], str] | None = None,
    ) -> None:
        self.nursery = nursery
        # An actor's task runs in the context the system was opened in, not in a copy of
        # its first caller's: a request's context variables (its request id, say, and
        # the objects they hold) must not live on, and log, with the room.
        self._context = contextvars.copy_context()
        self.new_stream_id = new_stream_id or (lambda: uuid.uuid4().hex)
        self.backend = backend
        self.config = config
        self.clock = clock
        self.namespaces = {name: Namespace(name, b) for name, b in namespaces.items()}
        self.streams = StreamRegistry(codec, clock, config.streams, self._stream_closed)
        self.alarms = AlarmScheduler(clock, self._alarm_due)
        self.sweep = IdleSweep(config.hibernate_after)
        store = lease_store(backend)
        self.leases = LeaseTable(store, self._lease_lost) if store is not None else None
        self.closing = False
        self.observers: list[Observer] = []
        self._idle = trio.Event()
        self._idle.set()

    # -- public ----------------------------------------------------------------------
    def get(self, namespace: str, name: str) -> ActorStub:
        if namespace not in self.namespaces:
            raise UnknownNamespace(namespace)
        return ActorStub(self, ActorId(namespace, name))

    def stats_for(self, namespace: Namespace) -> NamespaceStats:
        return namespace.stats

    def snapshot(self) -> list[NamespaceSnapshot]:
        """Per-namespace counters and gauges (the HTTP layer publishes these)."""
        out = []
        for ns in self.namespaces.values():
            depths = [len(a.mailbox) for a in ns.live.values()]
            s = ns.stats
            out.append(
                NamespaceSnapshot(
                    namespace=ns.name,
                    live=len(ns.live),
                    hibernated=len(ns.known) - len(ns.live),
                    activations=s.activations,
                    hibernations=s.hibernations,
                    wakes=dict(s.wakes),
                    messages=s.messages,
                    errors=s.errors,
                    mailbox_depth=sum(depths),
                    mailbox_max=max(depths, default=0),
                    streams=self.streams.count(ns.name),
                )
            )
        return out

    def trace(self, kind: str, actor: ActorId, **fields: Any) -> None:
        """Tell every observer; callers check ``self.observers`` first to stay free."""
        event = TraceEvent(trio.current_time(), kind, actor.namespace, actor.hex, fields)
        for observer in list(self.observers):
            try:
                observer(event)
            except Exception:  # an observer must never break an actor: drop it
                log.exception("trace observer failed; removing it")
                self.observers.remove(observer)

    def is_live(self, actor: ActorId) -> bool:
        return actor in self.namespaces[actor.namespace].live

    # -- delivery --------------------------------------------------------------------
    def _deliver(self, actor: ActorId, envelope: Envelope) -> None:
        if self.closing:
            raise ShuttingDown("server is shutting down")
        ns = self.namespaces[actor.namespace]
        activation = ns.live.get(actor)
        if activation is None:
            if self.leases is not None:
                seen = self.leases.known_elsewhere(actor)
                if seen is not None:  # live on another node: no activation here
                    if envelope.kind is Kind.MESSAGE:
                        raise seen
                    return
            activation = Activation(self, ns, actor)
            activation.wake = envelope.kind.value
            ns.live[actor] = activation
            self._idle = trio.Event() if self._idle.is_set() else self._idle
            self._spawn(activation.run, f"actor {actor}")
        activation.mailbox.put(envelope)

    def _deliver_system(self, actor: ActorId, envelope: Envelope) -> None:
        if not self.closing:
            self._deliver(actor, envelope)

    def _alarm_due(self, actor: ActorId) -> None:
        self._deliver_system(actor, Envelope(Kind.ALARM, None))

    def _stream_closed(self, stream: Stream, reason: str) -> None:
        if self.observers:
            self.trace("stream_closed", stream.actor, stream=stream.stream_id, reason=reason)
        self._deliver_system(stream.actor, Envelope(Kind.STREAM_CLOSED, (stream.info(), reason)))

    def _lease_lost(self, actor: ActorId) -> None:
        """This node may no longer serve ``actor``: end its streams at once (their clients
        reconnect and reach the new owner) and drop its activation without a commit."""
        if self.observers:
            self.trace("lease_lost", actor)
        for stream in self.streams.of(actor):
            self.streams.close(stream)
        activation = self.namespaces[actor.namespace].live.get(actor)
        if activation is not None:
            activation.mailbox.put_first(Envelope(Kind.LOST, None))

    async def _pick_up_alarms(self) -> None:
        """Wake the actors no node holds that need one (their node died or let go): a due
        alarm fires; streams their node left open are closed as ``lost`` on activation.
        One node wins each actor's lease, the others find it elsewhere."""
        assert self.leases is not None
        period = min(1.0, self.leases.ttl / 3)
        while True:
            await trio.sleep(period)
            try:
                due = await self.leases.store.due_alarms(100)
            except StorageError as exc:
                log.warning("could not look for due alarms: %s", exc)
                continue
            for actor in due:
                ns = self.namespaces.get(actor.namespace)
                if ns is not None and actor not in ns.live:
                    self._deliver_system(actor, Envelope(Kind.ALARM, None))

    # -- the activations' Host (activation.py) ---------------------------------------------
    def retry_later(self, actor: ActorId, envelope: Envelope) -> None:
        if envelope.attempt >= len(RETRY_DELAYS):
            log.error("giving up on %s event for actor %s", envelope.kind.value, actor)
            return
        delay = RETRY_DELAYS[envelope.attempt]
        envelope.attempt += 1

        async def later() -> None:
            await trio.sleep(delay)
            self._deliver_system(actor, envelope)

        self._spawn(later, f"retry {envelope.kind.value} for actor {actor}")

    def _spawn(self, fn: Callable[[], Awaitable[None]], name: str) -> None:
        """Start ``fn`` in the system's nursery, in the system's own context."""
        self._context.run(partial(self.nursery.start_soon, fn, name=name))

    def activated(self, activation: Activation, cause: Kind) -> None:
        ns = activation.namespace
        ns.stats.activations += 1
        key = activation.actor_id.hex
        woke = activation.wake is not None and key in ns.known
        if woke:
            ns.stats.wakes[activation.wake or cause.value] += 1
        if self.observers:
            self.trace("activated", activation.actor_id, cause=activation.wake if woke else "first")
        ns.known.add(key)
        activation.wake = None

    def hibernated(self, activation: Activation, empty: bool) -> None:
        """``empty``: nothing stored, no alarm, no stream. Such an actor is as if it had
        never been (a room whose sessions all ended): it is not kept as hibernated, so
        ``known`` holds only actors with something to come back to."""
        activation.namespace.stats.hibernations += 1
        if empty:
            activation.namespace.known.discard(activation.actor_id.hex)
        if self.observers:
            self.trace("hibernated", activation.actor_id)

    def retired(self, activation: Activation) -> None:
        ns = activation.namespace
        if ns.live.get(activation.actor_id) is activation:
            del ns.live[activation.actor_id]
        if not any(n.live for n in self.namespaces.values()):
            self._idle.set()

    async def load(self, actor: ActorId) -> ActorRecord:
        return await self.backend.load(actor)

    async def commit(self, actor: ActorId, writes: WriteSet) -> None:
        await self.backend.commit(actor, writes)
        if writes.alarm is not UNCHANGED:
            self.alarms.set(actor, writes.alarm)  # type: ignore[arg-type]
            if self.observers:
                self.trace("alarm_set", actor, at=writes.alarm)
        if self.observers:
            for stream_id in writes.streams_added:
                self.trace("stream_opened", actor, stream=stream_id)

    # -- start and stop --------------------------------------------------------------
    async def _recover(self) -> None:
        """Re-arm stored alarms and tell actors of streams the last process left open."""
        for actor, when in await self.backend.alarms():
            if actor.namespace in self.namespaces:
                self.alarms.set(actor, when)
        for stored in await self.backend.streams():
            if stored.actor.namespace in self.namespaces:
                info = StreamInfo(stored.stream_id, loads(stored.attachment), stored.last_id)
                self._deliver(stored.actor, Envelope(Kind.STREAM_CLOSED, (info, "lost")))

    async def shutdown(self) -> None:
        """Stop taking messages, let each actor finish the one in hand and persist, then
        close every stream with the codec's goodbye; bounded by ``shutdown_timeout``."""
        if self.closing:
            return
        self.closing = True
        with trio.move_on_after(self.config.shutdown_timeout) as scope:
            for ns in self.namespaces.values():
                for activation in list(ns.live.values()):
                    activation.mailbox.put_first(Envelope(Kind.STOP, None))
            await self._idle.wait()
        if scope.cancelled_caught:
            log.warning("shutdown timed out with actors still running")
        positions = self.streams.shutdown()
        if positions:
            try:
                await self.backend.save_positions(positions)
            except StorageError as exc:
                log.error("could not save stream positions: %s", exc)
        if self.leases is not None:
            await self.leases.release_all()  # other nodes take over without waiting


@asynccontextmanager
async def open_actor_system(
    namespaces: Mapping[str, Binding],
    *,
    codec: StreamCodec,
    backend: StorageBackend | None = None,
    config: RuntimeConfig | None = None,
    clock: WallClock | None = None,
    new_stream_id: Callable[[], str] | None = None,
) -> AsyncIterator[ActorSystem]:
    """Run an actor system for the duration of the block; shuts down gracefully on exit.

    The backend is opened here and closed on exit (default: in memory). ``new_stream_id``
    replaces the random stream ids (uuid4) where runs must be reproducible.
    """
    backend = backend if backend is not None else MemoryBackend()
    await backend.open()
    try:
        async with trio.open_nursery() as nursery:
            system = ActorSystem(
                nursery,
                backend,
                namespaces,
                codec,
                config or RuntimeConfig(),
                clock or WallClock(),
                new_stream_id,
            )
            nursery.start_soon(system.alarms.run, name="alarms")
            nursery.start_soon(system.sweep.run, name="idle sweep")
            nursery.start_soon(system.streams.run_ticker, name="stream ticker")
            if system.leases is not None:
                nursery.start_soon(system.leases.run, name="lease renewal")
                nursery.start_soon(system._pick_up_alarms, name="orphaned alarms")
            await system._recover()
            try:
                yield system
            finally:
                with trio.CancelScope(shield=True):
                    await system.shutdown()
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await backend.close()


__all__ = ["ActorStub", "ActorSystem", "Binding", "RuntimeConfig", "open_actor_system"]
