"""One live actor: its task, mailbox, instance and the per-message transaction."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import outcome
import trio

from .actor import Actor, ActorContext
from .errors import HandlerError, RuntimeFailure, ShuttingDown, StorageError
from .ids import ActorId
from .mailbox import Envelope, Kind, Mailbox
from .storage import Storage

if TYPE_CHECKING:
    from .system import ActorSystem, Namespace

log = logging.getLogger("roomkeeper.runtime")

RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Back-off for system events (alarms, stream closes) whose handler failed."""


class Activation:
    """The live form of one actor. Its task handles envelopes one at a time."""

    __slots__ = (
        "actor_id",
        "after",
        "instance",
        "mailbox",
        "namespace",
        "storage",
        "system",
        "wake",
    )

    def __init__(self, system: ActorSystem, namespace: Namespace, actor_id: ActorId) -> None:
        self.system = system
        self.namespace = namespace
        self.actor_id = actor_id
        self.mailbox = Mailbox(system.config.mailbox_size)
        self.instance: Actor | None = None
        self.storage: Storage | None = None
        self.wake: str | None = None
        self.after: list[Callable[[], None]] = []

    async def run(self) -> None:
        """Handle envelopes until idle for ``hibernate_after`` (or told to stop)."""
        idle = self.system.config.hibernate_after
        try:
            while True:
                envelope = await self.mailbox.get(idle)
                if envelope is None:
                    if await self._hibernate():
                        return
                elif envelope.kind is Kind.STOP:
                    await self._stop()
                    return
                else:
                    await self._handle(envelope)
        finally:
            self._reset()  # no activation <-> actor cycle left for the cyclic GC
            self.system._retire(self)

    # -- lifecycle -------------------------------------------------------------------
    async def _ensure_instance(self, cause: Kind) -> Actor:
        if self.instance is None:
            record = await self.system.backend.load(self.actor_id)
            self.storage = Storage(record.values, record.alarm)
            self.instance = self.namespace.actor_class(ActorContext(self, self.storage))
            self.system._activated(self, cause)
        return self.instance

    def _reset(self) -> None:
        """Forget the instance; the next envelope rebuilds it from storage."""
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
        empty = storage is not None and storage.empty and not self.system.streams.of(self.actor_id)
        self.system._hibernated(self, empty)
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
        self.system.stats_for(self.namespace).on_dequeue(envelope)
        if kind is Kind.MESSAGE:
            message = envelope.message
            await self._transact(envelope, lambda actor: actor.on_message(message))
        elif kind is Kind.ALARM:
            await self._alarm(envelope)
        elif kind is Kind.STREAM_CLOSED:
            info, reason = envelope.message

            async def closed(actor: Actor) -> None:
                assert self.storage is not None
                self.storage.pending.streams_removed.add(info.stream_id)
                await actor.on_stream_closed(info, reason)

            if not await self._transact(envelope, closed):
                self.system._retry_later(self.actor_id, envelope)

    async def _alarm(self, envelope: Envelope) -> None:
        async def fire(actor: Actor) -> None:
            assert self.storage is not None
            due = self.storage.alarm
            if due is None or due > self.system.clock.now():
                return  # deleted or moved since it was scheduled
            self.storage.set_alarm(None)
            await actor.on_alarm()

        if not await self._transact(envelope, fire):
            self.system._retry_later(self.actor_id, envelope)

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
        assert self.storage is not None
        writes = self.storage.take()
        if writes:
            try:
                await self.system._commit(self.actor_id, writes)
            except StorageError as exc:
                log.error("commit failed in actor %s: %s", self.actor_id, exc)
                self._close_uncommitted(writes.streams_added)
                self._reset()
                return self._fail(envelope, exc)
            if self.storage is not None:
                self.storage.apply(writes)
        if self.after:
            await self._after_commit()
        took = trio.current_time() - started
        if envelope is not None:
            self.system.stats_for(self.namespace).on_handled(took)
        if self.system.observers:
            self._trace_handled(envelope, took, ok=True, wrote=bool(writes))
        if envelope is not None:
            envelope.resolve(outcome.Value(result))
        return True

    async def _after_commit(self) -> None:
        """Run what the handler deferred until its writes were durable, then commit what
        those callbacks wrote, before the reply (so the output gate still holds)."""
        callbacks, self.after = self.after, []
        try:
            for callback in callbacks:
                callback()
        except Exception:
            log.exception("after-commit callback failed in actor %s", self.actor_id)
            self._reset()
            return
        if self.storage is None:
            return
        writes = self.storage.take()
        if writes:
            try:
                await self.system._commit(self.actor_id, writes)
            except StorageError as exc:
                log.error("follow-up commit failed in actor %s: %s", self.actor_id, exc)
                self._close_uncommitted(writes.streams_added)
                self._reset()
                return
            if self.storage is not None:
                self.storage.apply(writes)

    def _trace_handled(
        self, envelope: Envelope | None, took: float, *, ok: bool, wrote: bool
    ) -> None:
        what = envelope.kind.value if envelope is not None else "hibernate"
        wait = envelope.waited if envelope is not None else 0.0
        self.system.trace(
            "handled", self.actor_id, what=what, wait=wait, took=took, ok=ok, wrote=wrote
        )

    def _fail(
        self, envelope: Envelope | None, error: RuntimeFailure, cause: Exception | None = None
    ) -> bool:
        if cause is not None:
            error.__cause__ = cause
        self.system.stats_for(self.namespace).errors += 1
        if self.system.observers:
            self._trace_handled(envelope, 0.0, ok=False, wrote=False)
        if self.storage is not None:
            self._close_uncommitted(self.storage.pending.streams_added)
        self._reset()
        if envelope is not None:
            envelope.resolve(outcome.Error(error))
        return False

    def _close_uncommitted(self, added: dict[str, bytes]) -> None:
        registry = self.system.streams
        for stream_id in added:
            stream = registry.get(stream_id)
            if stream is not None:
                registry.close(stream)
