"""Where a request for a room is served: here, on the node that holds the room, or here
again after that node's lease ran out.

``Placement.call`` runs the request on this node; if the room is live on another node
(``Elsewhere``) it forwards it there once; if that node cannot be reached it waits for
its lease to expire (the store's word, at most the TTL) and serves the room here. A
request that was itself forwarded is never forwarded again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from ..runtime import ActorSystem, Elsewhere, Fenced
from .errors import ApiError
from .forward import Hop, Peers, Unreachable

__all__ = ["MOVING", "Placement"]

log = logging.getLogger("roomkeeper.http")

T = TypeVar("T")
U = TypeVar("U")

MOVING = "Service Unavailable: the room is moving between nodes"
_SETTLE = 2.0
"""Seconds a request may wait beyond one TTL for a room to settle on a node."""
_POLL = 0.05


class Placement:
    """Runs requests for a namespace's actors where they live (see the module)."""

    def __init__(self, system: ActorSystem, namespace: str, peers: Peers | None) -> None:
        self.system = system
        self.namespace = namespace
        self.peers = peers
        ttl = system.leases.ttl if system.leases is not None else 0.0
        self.patience = ttl + _SETTLE
        self.waited = 0.0  # seconds requests spent waiting for a takeover
        self.takeovers_waited = 0

    async def call(
        self,
        name: str,
        local: Callable[[], Awaitable[T]],
        remote: Callable[[Peers, Elsewhere], Awaitable[U]],
        hop: Hop | None,
    ) -> T | U:
        """``local()`` if this node may serve the actor; else ``remote(peers, where)``
        on the node that does. Raises ``ApiError`` 503 when the room cannot settle."""
        deadline = trio.current_time() + self.patience
        while True:
            try:
                return await local()
            except Fenced:  # the lease moved under this node: ask again where it is
                if trio.current_time() >= deadline:
                    raise ApiError(503, MOVING, {"Retry-After": "1"}) from None
                await trio.sleep(_POLL)
                continue
            except Elsewhere as where:
                if hop is not None or self.peers is None:  # never a second hop
                    raise ApiError(503, MOVING, {"Retry-After": "1"}) from where
                try:
                    return await remote(self.peers, where)
                except Unreachable as exc:
                    log.warning("node %s unreachable for %s: %s", where.owner, name, exc)
                    await self._wait_for_expiry(name, where, deadline)

    async def _wait_for_expiry(self, name: str, where: Elsewhere, deadline: float) -> None:
        """Let the unreachable owner's lease run out, then try again from the store."""
        leases = self.system.leases
        assert leases is not None
        actor = self.system.get(self.namespace, name).id
        leases.forget_elsewhere(actor)
        wait = max(where.expires_in, _POLL)
        if trio.current_time() + wait > deadline:
            raise ApiError(503, MOVING, {"Retry-After": "1"})
        self.takeovers_waited += 1
        self.waited += wait
        await trio.sleep(wait)
