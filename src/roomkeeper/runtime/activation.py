"""One live actor: its task, mailbox, instance and the per-message transaction.

An activation sees the system that runs it only through `Host`, the small interface below
(`ActorSystem` is the one implementation), in the manner of hypercorn's protocol classes
and their ``WorkerContext``; the system sees an activation through its mailbox, ``run``
and the few fields `Host` methods read."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import outcome
import trio

from ..jsonutil import loads
from .actor import Actor, ActorContext, receive
from .errors import Elsewhere, Fenced, HandlerError, RuntimeFailure, ShuttingDown, StorageError
from .ids import ActorId
from .mailbox import Envelope, Kind, Mailbox
from .storage import Storage
from .streams import Stream, StreamInfo

if TYPE_CHECKING:
    from .alarms import AlarmScheduler
    from .clock import WallClock
    from .idle import IdleSweep
    from .leases import LeaseTable
    from .storage import ActorRecord, WriteSet
    from .streams import StreamRegistry
    from .system import Namespace, RuntimeConfig
    from .trace import Observer

log = logging.getLogger("roomkeeper.runtime")

RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Back-off for system events (alarms, stream closes) whose handler failed."""


class Host(Protocol):
    """What an activation needs from the system that runs it."""

    config: RuntimeConfig
    clock: WallClock
    streams: StreamRegistry
    alarms: AlarmScheduler
    sweep: IdleSweep
    leases: LeaseTable | None
    observers: list[Observer]
    new_stream_id: Callable[[], str]

    def trace(self, kind: str, actor: ActorId, **fields: Any) -> None: ...

    async def load(self, actor: ActorId) -> ActorRecord:
        """The actor's committed state."""
        ...

    async def commit(self, actor: ActorId, writes: WriteSet) -> None:
        """Make ``writes`` durable, then arm the alarm they set (raises `StorageError`)."""
        ...

    def activated(self, activation: Activation, cause: Kind) -> None:
        """The actor was rebuilt from storage (``cause``: what woke it)."""
        ...

    def hibernated(self, activation: Activation, empty: bool) -> None:
        """The actor was dropped from memory (``empty``: nothing stored, no stream)."""
        ...

    def retired(self, activation: Activation) -> None:
        """The activation's task ends: it takes no more envelopes."""
        ...

    def retry_later(self, actor: ActorId, envelope: Envelope) -> None:
        """Deliver a failed system event (alarm, stream closed) again, with back-off."""
        ...


class Activation:
    """The live form of one actor. Its task handles envelopes one at a time."""

    __slots__ = (
        "actor_id",
        "after",
        "elsewhere",
        "held",
        "host",
        "idle_since",
        "instance",
        "mailbox",
        "namespace",
        "storage",
        "swept",
        "wake",
    )

    def __init__(self, host: Host, namespace: Namespace, actor_id: ActorId) -> None:
        self.host = host
        self.namespace = namespace
        self.actor_id = actor_id
        self.mailbox = Mailbox(host.config.mailbox_size)
        self.instance: Actor | None = None
        self.storage: Storage | None = None
        self.wake: str | None = None
        self.after: list[Callable[[], None]] = []
        self.held: list[Stream] = []  # streams holding what this transaction sent
        self.elsewhere = False  # the last envelope found the actor live on another node
        self.idle_since = 0.0  # when it last parked on an empty mailbox (trio time)
        self.swept = False  # whether the idle sweep holds an entry for it

    async def run(self) -> None:
        """Handle envelopes until idle for ``hibernate_after`` (or told to stop)."""
        mailbox, sweep = self.mailbox, self.host.sweep
        try:
            while True:
                if not len(mailbox):  # about to park: the sweep wakes it if nothing comes
                    self.idle_since = trio.current_time()
                    if not self.swept:
                        sweep.add(self)
                envelope = await mailbox.get()
                if envelope is None:
                    if await self._hibernate():
                        return
                elif envelope.kind is Kind.STOP:
                    await self._stop()
                    return
                elif envelope.kind is Kind.LOST:
                    self._drop(Fenced("the actor moved to another node"))
                    return
                else:
                    await self._handle(envelope)
                    if self.elsewhere and self.instance is None and not len(mailbox):
                        return  # served by another node: nothing to keep here
        finally:
            self._reset()  # no activation <-> actor cycle left for the cyclic GC
            self.host.retired(self)

    # -- lifecycle -------------------------------------------------------------------
    async def _ensure_instance(self, cause: Kind) -> Actor:
        leases = self.host.leases
        if self.instance is None:
            if leases is not None:
                await leases.acquire(self.actor_id)  # Elsewhere: another node serves it
            record = await self.host.load(self.actor_id)
            self.storage = Storage(record.values, record.alarm)
            self.instance = self.namespace.actor_class(ActorContext(self, self.storage, self.host))
            self.host.activated(self, cause)
            due = record.alarm is not None and record.alarm <= self.host.clock.now()
            if record.alarm is not None and not (cause is Kind.ALARM and due):
                # Armed here too: its node may have died (a due alarm that wakes the
                # actor is being handled now, so it needs no arming).
                self.host.alarms.set(self.actor_id, record.alarm)
            for stored in record.streams:  # left open by a node that no longer serves it
                if self.host.streams.get(stored.stream_id) is None:
                    info = StreamInfo(stored.stream_id, loads(stored.attachment), stored.last_id)
                    self.mailbox.put(Envelope(Kind.STREAM_CLOSED, (info, "lost")))
        elif leases is not None and not leases.holds(self.actor_id):
            # The lease's local deadline passed (a frozen node, or renewals failing):
            # another node may own the actor by now, so this memory is not to be trusted.
            leases.lose(self.actor_id)
            raise Fenced("the actor's lease expired on this node")
        return self.instance

    def hold(self, stream: Stream) -> None:
        """``stream`` holds what this transaction sent until it commits."""
        if not self.held or self.held[-1] is not stream:
            self.held.append(stream)

    def _release(self) -> None:
        streams, self.held = self.held, []
        for stream in streams:
            self.host.streams.release(stream)

    def _discard(self) -> None:
        streams, self.held = self.held, []
        for stream in streams:
            self.host.streams.discard(stream)

    def _drop(self, error: RuntimeFailure) -> None:
        """Forget the actor without committing anything; fail what waits in the mailbox."""
        for envelope in self.mailbox.drain():
            if envelope.kind is Kind.MESSAGE:
                envelope.resolve(outcome.Error(error))
        self._reset()

    def _reset(self) -> None:
        """Forget the instance (and what it sent but did not commit); the next envelope
        rebuilds it from storage."""
        self._discard()
        self.instance = None
        self.storage = None
        self.after.clear()

    async def _hibernate(self) -> bool:
        """Give the actor its last word and drop it; False if work arrived meanwhile."""
        if self.instance is not None:
            await self._transact(None, lambda actor: actor.on_hibernate())
        if len(self.mailbox):
            return False
        storage = self.storage
        streams = self.host.streams.of(self.actor_id)
        empty = storage is not None and storage.empty and not streams
        leases = self.host.leases
        if leases is not None and not streams:
            # Nothing holds the actor to this node: any node may activate it next.
            await leases.release(self.actor_id)
            if len(self.mailbox):  # work arrived meanwhile: start again from storage
                self._reset()
                return False
        self.host.hibernated(self, empty)
        return True

    async def _stop(self) -> None:
        for envelope in self.mailbox.drain():
            if envelope.kind is Kind.MESSAGE:
                envelope.resolve(outcome.Error(ShuttingDown("server is shutting down")))
        if self.instance is not None:
            await self._transact(None, lambda actor: actor.on_hibernate())

    # -- one envelope ----------------------------------------------------------------
    async def _handle(self, envelope: Envelope) -> None:
        kind = envelope.kind
        self.namespace.stats.on_dequeue(envelope)
        if kind is Kind.MESSAGE:
            message = envelope.message
            await self._transact(envelope, lambda actor: receive(actor, message))
        elif kind is Kind.ALARM:
            await self._alarm(envelope)
        elif kind is Kind.STREAM_CLOSED:
            info, reason = envelope.message

            async def closed(actor: Actor) -> None:
                assert self.storage is not None
                self.storage.pending.streams_removed.add(info.stream_id)
                await actor.on_stream_closed(info, reason)

            if not await self._transact(envelope, closed) and not self.elsewhere:
                self.host.retry_later(self.actor_id, envelope)

    async def _alarm(self, envelope: Envelope) -> None:
        async def fire(actor: Actor) -> None:
            assert self.storage is not None
            due = self.storage.alarm
            if due is None or due > self.host.clock.now():
                return  # deleted or moved since it was scheduled
            self.storage.set_alarm(None)
            await actor.on_alarm()

        if not await self._transact(envelope, fire) and not self.elsewhere:
            self.host.retry_later(self.actor_id, envelope)

    async def _transact(self, envelope: Envelope | None, body: Any) -> bool:
        """Run ``body(actor)``; commit its writes; only then reply (the output gate)."""
        cause = envelope.kind if envelope is not None else Kind.MESSAGE
        started = trio.current_time()
        try:
            actor = await self._ensure_instance(cause)
            result = await body(actor)
        except RuntimeFailure as exc:  # storage failed while loading
            return self._fail(envelope, exc)
        except Exception as exc:
            log.exception("handler failed in actor %s", self.actor_id)
            return self._fail(envelope, HandlerError(f"actor {self.actor_id} failed: {exc!r}"), exc)
        try:
            wrote = await self._commit_pending()
            if self.after:
                # What the handler deferred until its writes were durable; what those
                # callbacks write commits before the reply too (the output gate holds).
                callbacks, self.after = self.after, []
                for callback in callbacks:
                    callback()
                wrote = await self._commit_pending() or wrote
        except StorageError as exc:
            return self._fail(envelope, exc)
        except Exception as exc:  # an after-commit callback raised
            log.exception("after-commit callback failed in actor %s", self.actor_id)
            return self._fail(envelope, HandlerError(f"actor {self.actor_id} failed: {exc!r}"), exc)
        self._release()  # the output gate: what it sent goes out once durable
        self.elsewhere = False
        took = trio.current_time() - started
        if envelope is not None:
            self.namespace.stats.on_handled(took)
        if self.host.observers:
            self._trace_handled(envelope, took, ok=True, wrote=wrote)
        if envelope is not None:
            envelope.resolve(outcome.Value(result))
        return True

    async def _commit_pending(self) -> bool:
        """Commit what the actor wrote since the last commit; whether there was anything.
        On failure, streams it opened are closed and the error is raised."""
        if self.storage is None:
            return False
        writes = self.storage.take()
        if writes is None:  # the message wrote nothing: no WriteSet was made for it
            return False
        try:
            await self.host.commit(self.actor_id, writes)
        except StorageError as exc:
            log.error("commit failed in actor %s: %s", self.actor_id, exc)
            self._close_uncommitted(writes.streams_added)
            if isinstance(exc, Fenced) and self.host.leases is not None:
                self.host.leases.lose(self.actor_id, fenced=True)
            raise
        if self.storage is not None:
            self.storage.apply(writes)
        return True

    def _trace_handled(
        self, envelope: Envelope | None, took: float, *, ok: bool, wrote: bool
    ) -> None:
        what = envelope.kind.value if envelope is not None else "hibernate"
        wait = envelope.waited if envelope is not None else 0.0
        self.host.trace(
            "handled", self.actor_id, what=what, wait=wait, took=took, ok=ok, wrote=wrote
        )

    def _fail(
        self, envelope: Envelope | None, error: RuntimeFailure, cause: Exception | None = None
    ) -> bool:
        if cause is not None:
            error.__cause__ = cause
        self.elsewhere = isinstance(error, Elsewhere)
        if not self.elsewhere:
            self.namespace.stats.errors += 1
        if self.host.observers:
            self._trace_handled(envelope, 0.0, ok=False, wrote=False)
        if self.storage is not None:
            self._close_uncommitted(self.storage.pending.streams_added)
        self._reset()
        if envelope is not None:
            envelope.resolve(outcome.Error(error))
        return False

    def _close_uncommitted(self, added: dict[str, bytes]) -> None:
        registry = self.host.streams
        for stream_id in added:
            stream = registry.get(stream_id)
            if stream is not None:
                registry.close(stream)
