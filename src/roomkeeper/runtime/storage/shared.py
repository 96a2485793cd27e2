"""Several nodes on one shared in-memory store, with leases: the cluster in one process.

``MemoryCluster`` keeps what PostgreSQL keeps for a real cluster (values, alarms, streams
and one lease per actor) and hands each node a ``ClusterNode`` backend that is both a
``StorageBackend`` and a ``LeaseStore`` with the same fencing rules. Lease expiry follows
``trio.current_time()``, so tests and simulations of failover run under ``MockClock``,
deterministic and without sleeps.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

import attrs
import trio

from ..clock import WallClock
from ..errors import Fenced, StorageError
from ..ids import ActorId
from ..leases import Granted, HeldElsewhere
from .base import ActorRecord, StoredStream, WriteSet
from .memory import MemoryBackend


@attrs.define
class _Lease:
    owner: str
    address: str
    epoch: int
    expires_at: float


class MemoryCluster:
    """The shared store; ``node(...)`` gives one node's backend onto it. ``clock`` is the
    store's wall clock, which decides when stored alarms are due."""

    def __init__(self, clock: WallClock | None = None) -> None:
        self.clock = clock or WallClock()
        self.data = MemoryBackend()
        self.leases: dict[ActorId, _Lease] = {}
        self.secret = secrets.token_bytes(32)
        self.fail = False  # the store is unreachable for every node

    def node(self, node_id: str, address: str = "", *, lease_ttl: float = 10.0) -> ClusterNode:
        return ClusterNode(self, node_id, address, lease_ttl)

    def epoch(self, actor: ActorId) -> int | None:
        lease = self.leases.get(actor)
        return None if lease is None else lease.epoch

    def owner(self, actor: ActorId) -> str | None:
        lease = self.leases.get(actor)
        return None if lease is None else lease.owner


class ClusterNode:
    """One node's view of a ``MemoryCluster``: storage fenced by the epochs it holds."""

    def __init__(self, cluster: MemoryCluster, node_id: str, address: str, ttl: float) -> None:
        self.cluster = cluster
        self.node_id = node_id
        self.address = address
        self.lease_ttl = ttl
        self.fail = False  # this node is cut off from the store
        self._epochs: dict[ActorId, int] = {}

    def _check(self) -> None:
        if self.fail or self.cluster.fail:
            raise StorageError("storage unavailable (simulated)")

    async def _enter(self) -> None:
        await trio.lowlevel.checkpoint()
        self._check()

    # -- StorageBackend ----------------------------------------------------------------
    async def open(self) -> None:
        await trio.lowlevel.checkpoint()

    async def close(self) -> None:
        await trio.lowlevel.checkpoint()

    async def load(self, actor: ActorId) -> ActorRecord:
        await self._enter()
        data = self.cluster.data
        record = await data.load(actor)
        streams = tuple(
            StoredStream(actor, sid, attachment, data.positions.get((actor.hex, sid), 0))
            for sid, attachment in data.open_streams.get(actor.hex, {}).items()
        )
        return ActorRecord(record.values, record.alarm, streams)

    async def commit(self, actor: ActorId, writes: WriteSet) -> None:
        await self._enter()
        lease = self.cluster.leases.get(actor)
        epoch = self._epochs.get(actor)
        if lease is None or epoch is None or (lease.owner, lease.epoch) != (self.node_id, epoch):
            raise Fenced(f"node {self.node_id} does not hold the lease of {actor}")
        await self.cluster.data.commit(actor, writes)

    async def alarms(self) -> list[tuple[ActorId, float]]:
        await trio.lowlevel.checkpoint()
        return []  # found by due_alarms, armed on activation

    async def streams(self) -> list[StoredStream]:
        await trio.lowlevel.checkpoint()
        return []  # reported per actor on activation (ActorRecord.streams)

    async def save_positions(self, positions: list[tuple[ActorId, str, int]]) -> None:
        await self._enter()
        mine = [p for p in positions if self._epochs.get(p[0]) is not None]
        await self.cluster.data.save_positions(mine)

    async def names(self, namespace: str, *, after: str = "", limit: int = 100) -> list[str]:
        await self._enter()
        return await self.cluster.data.names(namespace, after=after, limit=limit)

    # -- LeaseStore --------------------------------------------------------------------
    async def acquire(self, actor: ActorId) -> Granted | HeldElsewhere:
        await self._enter()
        now = trio.current_time()
        lease = self.cluster.leases.get(actor)
        if lease is None or lease.expires_at < now or lease.owner == self.node_id:
            epoch = 1 if lease is None else lease.epoch + 1
            self.cluster.leases[actor] = _Lease(
                self.node_id, self.address, epoch, now + self.lease_ttl
            )
            self._epochs[actor] = epoch
            return Granted(epoch)
        return HeldElsewhere(lease.owner, lease.address, lease.expires_at - now)

    async def renew(self, held: Mapping[ActorId, int]) -> set[ActorId]:
        await self._enter()
        now = trio.current_time()
        renewed = set()
        for actor, epoch in held.items():
            lease = self.cluster.leases.get(actor)
            mine = lease is not None and (lease.owner, lease.epoch) == (self.node_id, epoch)
            if mine and lease is not None and lease.expires_at > now:
                lease.expires_at = now + self.lease_ttl
                renewed.add(actor)
            else:
                self._epochs.pop(actor, None)
        return renewed

    async def release(self, actor: ActorId, epoch: int) -> None:
        self._epochs.pop(actor, None)
        await self._enter()
        lease = self.cluster.leases.get(actor)
        if lease is not None and (lease.owner, lease.epoch) == (self.node_id, epoch):
            lease.expires_at = float("-inf")

    def forget(self, actor: ActorId) -> None:
        self._epochs.pop(actor, None)

    async def due_alarms(self, limit: int) -> list[ActorId]:
        await self._enter()
        now, wall = trio.current_time(), self.cluster.clock.now()
        due = []
        data = self.cluster.data

        def free(actor: ActorId) -> bool:
            lease = self.cluster.leases.get(actor)
            return lease is None or lease.expires_at < now

        for actor, when in sorted(data.alarm_at.values(), key=lambda a: a[1]):
            if when <= wall and free(actor):
                due.append(actor)
        # and those with streams left open by a node that died: their sessions must end
        orphans = [a for a in data.actors_with_streams() if free(a) and a not in due]
        return (orphans + due)[:limit]

    async def check(self) -> None:
        await self._enter()

    async def shared_secret(self) -> bytes:
        await self._enter()
        return self.cluster.secret
