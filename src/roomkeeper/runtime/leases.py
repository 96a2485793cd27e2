"""Leases: at most one live activation of an actor across every node sharing storage.

A storage backend shared by several processes (PostgreSQL) also implements
``LeaseStore``: each actor has one lease row carrying an owner and an epoch that grows on
every grant. Every commit of the actor is fenced by that epoch inside the storage
transaction, so a node that lost the lease can never write after the new owner took it.
Only the store's clock decides expiry; the runtime keeps a local deadline besides, so a
node that cannot renew stops serving on its own (see ``LeaseTable``). Backends of one
process (memory, SQLite) have no leases: the runtime then never asks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

import attrs
import trio

from .errors import Elsewhere, StorageError
from .ids import ActorId

log = logging.getLogger("roomkeeper.runtime")


@attrs.frozen
class Granted:
    """The lease is this node's, with this epoch (the fencing token)."""

    epoch: int


@attrs.frozen
class HeldElsewhere:
    """Another live node holds the lease: where it serves and how long the lease runs
    (by the store's clock) unless it is renewed."""

    owner: str
    address: str
    expires_in: float


@runtime_checkable
class LeaseStore(Protocol):
    """What a shared storage backend offers the runtime for single activation."""

    node_id: str
    address: str  # where this node serves, recorded with each lease it takes
    lease_ttl: float

    async def acquire(self, actor: ActorId) -> Granted | HeldElsewhere:
        """Take the actor's lease if it is free, expired, or already this node's (a new
        epoch then), else say who holds it. Commits of ``actor`` are fenced by the
        granted epoch from here on."""
        ...

    async def renew(self, held: Mapping[ActorId, int]) -> set[ActorId]:
        """Extend every lease in ``held`` (actor -> epoch) by the TTL in one statement;
        the actors whose lease was renewed. The others are lost (and forgotten)."""
        ...

    async def release(self, actor: ActorId, epoch: int) -> None:
        """Give the lease up (it expires at once), so the next request anywhere
        activates without waiting; commits of ``actor`` are fenced from here on."""
        ...

    def forget(self, actor: ActorId) -> None:
        """Drop the local record of the lease without a round trip (its local deadline
        passed): commits of ``actor`` are fenced from here on."""
        ...

    async def due_alarms(self, limit: int) -> list[ActorId]:
        """Actors whose lease is free or expired (their node died or let go) that need a
        node: their stored alarm is due, or they have streams recorded open (left by a
        node that died, whose sessions must still end); at most ``limit``."""
        ...

    async def check(self) -> None:
        """One round trip to the store; raises ``StorageError`` if it cannot be reached
        (the readiness check)."""
        ...

    async def shared_secret(self) -> bytes:
        """A random key every node of this store reads alike (made by the first one), with
        which nodes authenticate what they forward to each other."""
        ...


def lease_store(backend: object) -> LeaseStore | None:
    """The backend as a ``LeaseStore`` if it is shared between nodes, else None."""
    return backend if isinstance(backend, LeaseStore) else None


@attrs.define
class LeaseStats:
    """Counters of one node's leases (the metrics publish them)."""

    acquired: int = 0
    lost: int = 0
    released: int = 0
    refused: int = 0  # acquires that found the lease held by another node
    fenced: int = 0  # commits refused because the lease had moved
    renew_failures: int = 0


class LeaseTable:
    """The leases this node holds, each with a local deadline, and the loop renewing them.

    A lease is valid here until ``deadline``: trio time taken *before* the acquire or
    renew was sent, plus the TTL, less ``margin``. Past it the actor is not served even if
    the store cannot be reached, so a node that was frozen or cut off never acts on state
    another node may have taken over. ``on_lost`` is called (on the system's task) for
    every lease that is lost, by a failed renew or a passed deadline.
    """

    def __init__(
        self,
        store: LeaseStore,
        on_lost: Callable[[ActorId], None],
        *,
        margin: float | None = None,
    ) -> None:
        self.store = store
        self.ttl = store.lease_ttl
        self.margin = margin if margin is not None else min(1.0, self.ttl / 5)
        self.on_lost = on_lost
        self.held: dict[ActorId, tuple[int, float]] = {}  # epoch, local deadline
        self._elsewhere: dict[ActorId, tuple[HeldElsewhere, float]] = {}
        self.stats = LeaseStats()
        self.renewed_at: float | None = None  # trio time of the last successful renew

    # -- queries -----------------------------------------------------------------------
    def holds(self, actor: ActorId) -> bool:
        """Whether this node may serve ``actor`` now (a lease whose deadline is ahead)."""
        lease = self.held.get(actor)
        return lease is not None and trio.current_time() < lease[1]

    def epoch(self, actor: ActorId) -> int | None:
        lease = self.held.get(actor)
        return None if lease is None else lease[0]

    def known_elsewhere(self, actor: ActorId) -> Elsewhere | None:
        """The owner last seen for ``actor``, while that sighting is fresh."""
        seen = self._elsewhere.get(actor)
        if seen is None:
            return None
        holder, until = seen
        now = trio.current_time()
        if now >= until:
            del self._elsewhere[actor]
            return None
        return Elsewhere(holder.owner, holder.address, until - now)

    def healthy(self) -> bool:
        """Renewals are going through: the last one succeeded within the margin of a TTL
        (always true while no lease is held and none was tried)."""
        if self.renewed_at is None:
            return self.stats.renew_failures == 0
        return trio.current_time() - self.renewed_at < self.ttl - self.margin

    # -- changes -----------------------------------------------------------------------
    async def acquire(self, actor: ActorId) -> int:
        """Make sure this node holds ``actor``'s lease; its epoch. Raises ``Elsewhere``
        when another node holds it, ``StorageError`` when the store cannot be reached."""
        lease = self.held.get(actor)
        if lease is not None and trio.current_time() < lease[1]:
            return lease[0]
        if lease is not None:  # deadline passed: it is not ours to extend
            self._lose(actor)
        seen = self.known_elsewhere(actor)
        if seen is not None:
            raise seen
        sent = trio.current_time()
        result = await self.store.acquire(actor)
        if isinstance(result, HeldElsewhere):
            self.stats.refused += 1
            # Believe the sighting for at most the lease's remaining time: then ask again.
            until = trio.current_time() + max(0.0, min(result.expires_in, self.ttl))
            self._elsewhere[actor] = (result, until)
            raise Elsewhere(result.owner, result.address, max(0.0, result.expires_in))
        self._elsewhere.pop(actor, None)
        self.held[actor] = (result.epoch, sent + self.ttl - self.margin)
        self.stats.acquired += 1
        return result.epoch

    def forget_elsewhere(self, actor: ActorId) -> None:
        """The owner last seen could not be reached: ask the store again next time."""
        self._elsewhere.pop(actor, None)

    async def release(self, actor: ActorId) -> None:
        """Give the lease up so that any node can activate the actor at once."""
        lease = self.held.pop(actor, None)
        if lease is None:
            return
        self.stats.released += 1
        try:
            await self.store.release(actor, lease[0])
        except StorageError as exc:  # it will expire by itself within the TTL
            log.warning("could not release the lease of %s: %s", actor, exc)
            self.store.forget(actor)

    async def release_all(self) -> None:
        for actor in list(self.held):
            await self.release(actor)

    def _lose(self, actor: ActorId) -> None:
        if self.held.pop(actor, None) is None:
            return
        self.stats.lost += 1
        self.store.forget(actor)
        self.on_lost(actor)

    def lose(self, actor: ActorId, *, fenced: bool = False) -> None:
        """The lease is gone (a commit was fenced, or its deadline passed): drop it and
        tell ``on_lost``."""
        if fenced:
            self.stats.fenced += 1
        self._lose(actor)

    def expire_passed(self) -> None:
        """Lose every lease whose local deadline has passed."""
        now = trio.current_time()
        for actor, (_, deadline) in list(self.held.items()):
            if now >= deadline:
                self._lose(actor)

    async def renew_once(self) -> None:
        """Renew every held lease in one round trip; lose those not renewed."""
        self.expire_passed()
        if not self.held:
            self.renewed_at = trio.current_time()
            return
        batch = {actor: epoch for actor, (epoch, _) in self.held.items()}
        sent = trio.current_time()
        try:
            renewed = await self.store.renew(batch)
        except StorageError as exc:
            self.stats.renew_failures += 1
            log.warning("could not renew %d leases: %s", len(batch), exc)
            self.expire_passed()
            return
        self.renewed_at = trio.current_time()
        deadline = sent + self.ttl - self.margin
        for actor, epoch in batch.items():
            lease = self.held.get(actor)
            if lease is None or lease[0] != epoch:
                continue  # released or re-acquired meanwhile
            if actor in renewed:
                self.held[actor] = (epoch, deadline)
            else:
                self._lose(actor)
        self.expire_passed()

    async def run(self) -> None:
        """Renew every TTL/3, and lose each lease the moment its deadline passes, until
        cancelled. The deadlines are kept by a loop of their own: a renew that hangs (a
        connection whose packets are black-holed answers nothing, not even an error)
        must not hold them back."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._expire_at_deadlines)
            period = self.ttl / 3
            while True:
                await trio.sleep(period)
                await self.renew_once()

    async def _expire_at_deadlines(self) -> None:
        period = self.ttl / 3
        while True:
            # A lease acquired meanwhile is due no sooner than TTL - margin > period away.
            deadlines = [deadline for _, deadline in self.held.values()]
            await trio.sleep_until(min([trio.current_time() + period, *deadlines]))
            self.expire_passed()


__all__ = [
    "Granted",
    "HeldElsewhere",
    "LeaseStats",
    "LeaseStore",
    "LeaseTable",
    "lease_store",
]
