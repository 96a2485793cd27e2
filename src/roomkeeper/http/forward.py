"""Any node answers any request: a request for a room that another node serves is
forwarded to that node once, the event stream relayed as it comes.

A forwarded request carries the forwarding node's id, the client's address as that node
saw it, and an HMAC of both (and of the method, target and time) under a key every node
of the cluster shares (kept in the shared storage). The owner trusts an authentic hop: it
does not forward again (no loops), and it leaves per-address limits to the node the
client is connected to, which has already applied them. A hop that is not authentic is
ignored, so a client cannot switch a node's limits off by sending the headers.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Iterable

import attrs
import httpx
import trio

from .parsing import HeaderLookup

__all__ = [
    "CLIENT_HEADER",
    "HOP_AUTH_HEADER",
    "HOP_HEADER",
    "NODE_HEADER",
    "Hop",
    "Peers",
    "Relayed",
    "Unreachable",
]

NODE_HEADER = "X-Roomkeeper-Node"
"""On every answer: the node that served it."""
HOP_HEADER = "X-Roomkeeper-Hop"
HOP_AUTH_HEADER = "X-Roomkeeper-Hop-Auth"
CLIENT_HEADER = "X-Roomkeeper-Client"
HOP_MAX_AGE = 60.0
"""Seconds a hop's signature stays valid (the nodes' clocks must agree that closely)."""

# Request headers a forwarded request keeps: what the owner's handlers read.
_PASSED = (
    "content-type",
    "content-length",
    "authorization",
    "x-token",
    "x-session-id",
    "last-event-id",
    "x-request-id",
    "origin",
)
# Answer headers relayed back: the owner's, less what this node sets itself (CORS).
_RETURNED = (
    "content-type",
    "cache-control",
    "retry-after",
    "x-accel-buffering",
    "x-request-id",
    NODE_HEADER.lower(),
)


class Unreachable(Exception):
    """The owner could not be reached (refused, timed out before answering)."""


@attrs.frozen
class Hop:
    """An authentic forwarded request: who forwarded it, and for which client."""

    node: str
    client: str


@attrs.frozen
class Relayed:
    """The owner's answer: status, headers to pass on, and its body as it comes."""

    status: int
    headers: dict[str, str]
    body: AsyncIterator[bytes]


def _signature(key: bytes, node: str, client: str, method: str, target: str, stamp: str) -> str:
    text = "\n".join((node, client, method.upper(), target, stamp)).encode()
    return hmac.new(key, text, hashlib.sha256).hexdigest()


class Peers:
    """This node's side of forwarding: signs its hops, checks others', and relays."""

    def __init__(
        self,
        node_id: str,
        key: bytes,
        *,
        connect_timeout: float = 1.0,
        answer_timeout: float = 10.0,
        idle_timeout: float = 30.0,
    ) -> None:
        self.node_id = node_id
        self._key = key
        self.answer_timeout = answer_timeout
        self.idle_timeout = idle_timeout
        self.forwarded = 0
        self.unreachable = 0
        timeout = httpx.Timeout(answer_timeout, connect=connect_timeout)
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    async def aclose(self) -> None:
        await self._client.aclose()

    def __repr__(self) -> str:
        return f"Peers(node_id={self.node_id!r})"

    # -- hops --------------------------------------------------------------------------
    def sign(
        self, client: str, method: str, target: str, *, now: float | None = None
    ) -> dict[str, str]:
        """Headers that make a request to ``target`` an authentic hop from this node."""
        stamp = str(int(time.time() if now is None else now))
        mac = _signature(self._key, self.node_id, client, method, target, stamp)
        return {HOP_HEADER: self.node_id, CLIENT_HEADER: client, HOP_AUTH_HEADER: f"{stamp}.{mac}"}

    def verify(
        self, headers: HeaderLookup, method: str, target: str, *, now: float | None = None
    ) -> Hop | None:
        """The hop a request is, if its headers are authentic and fresh; else None."""
        node, client = headers.get(HOP_HEADER), headers.get(CLIENT_HEADER)
        stamp, _, mac = (headers.get(HOP_AUTH_HEADER) or "").partition(".")
        if not node or client is None or not stamp.isascii() or not stamp.isdigit() or not mac:
            return None
        if abs((time.time() if now is None else now) - int(stamp)) > HOP_MAX_AGE:
            return None
        expected = _signature(self._key, node, client, method, target, stamp)
        return Hop(node, client) if hmac.compare_digest(mac, expected) else None

    def _headers(
        self, incoming: Iterable[tuple[str, str]], client: str, method: str, target: str
    ) -> dict[str, str]:
        passed = {k: v for k, v in incoming if k.lower() in _PASSED}
        return {**passed, **self.sign(client, method, target)}

    # -- relaying ----------------------------------------------------------------------
    async def forward(
        self,
        address: str,
        method: str,
        target: str,
        incoming: Iterable[tuple[str, str]],
        client: str,
        body: bytes = b"",
    ) -> Relayed:
        """Send the request to the node at ``address``; its answer, the body streamed.
        Raises ``Unreachable`` if that node does not answer within the timeouts: then
        nothing reached it (refused) or its outcome is unknown (timed out)."""
        headers = self._headers(incoming, client, method, target)
        request = self._client.build_request(
            method, address + target, headers=headers, content=body
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            self.unreachable += 1
            raise Unreachable(f"{address}: {exc.__class__.__name__}") from exc
        self.forwarded += 1
        returned = {k: v for k, v in response.headers.items() if k.lower() in _RETURNED}
        return Relayed(response.status_code, returned, self._body(response))

    async def _body(self, response: httpx.Response) -> AsyncIterator[bytes]:
        """The answer's bytes as they come; ends if the owner goes quiet for longer than
        ``idle_timeout`` (its heartbeats stopped: frozen or cut off), or drops."""
        chunks = response.aiter_raw()
        try:
            while True:
                chunk: bytes | None = None
                with trio.move_on_after(self.idle_timeout):
                    try:
                        chunk = await chunks.__anext__()
                    except (StopAsyncIteration, httpx.TransportError):
                        return
                if chunk is None:
                    return  # quiet too long
                yield chunk
        finally:
            with trio.CancelScope(shield=True):
                await response.aclose()
