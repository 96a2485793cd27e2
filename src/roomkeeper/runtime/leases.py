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

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import attrs

from .ids import ActorId


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
        """Actors whose stored alarm is due and whose lease is free or expired (their
        node died or let go), oldest alarm first, at most ``limit``."""
        ...

    async def check(self) -> None:
        """One round trip to the store; raises ``StorageError`` if it cannot be reached
        (the readiness check)."""
        ...


def lease_store(backend: object) -> LeaseStore | None:
    """The backend as a ``LeaseStore`` if it is shared between nodes, else None."""
    return backend if isinstance(backend, LeaseStore) else None


__all__ = ["Granted", "HeldElsewhere", "LeaseStore", "lease_store"]
