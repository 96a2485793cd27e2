"""The signaling API's handlers (the Worker's ``fetch``): parse, check, ask the room, shape
the answer. No HTTP framework here: `edge.py` serves these handlers on the wire.

No room logic lives here. Every request reaches its room's actor through the runtime by
name hash (or the node that serves the room, with several nodes); errors are `ApiError`
with the protocol's statuses.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

import attrs

from ..admission import Admission
from ..jsonutil import dumps, loads_untrusted
from ..runtime import ActorSystem, Elsewhere, RuntimeFailure, StorageError
from ..runtime.streams import Stream
from ..signaling import (
    Connect,
    GetIceServers,
    IceConfig,
    Leave,
    PartlyRefused,
    Refused,
    Signal,
    SignalBatch,
)
from .addresses import ClientAddresses, address_key
from .budgets import STREAMS_RETRY_AFTER, AddressLimits, StreamSlot
from .cors import CorsPolicy
from .errors import ApiError, runtime_failure
from .forward import NODE_HEADER, Hop, Peers, Relayed
from .parsing import (
    MAX_BODY,
    HeaderLookup,
    batch_fields,
    connect_credentials,
    ice_credentials,
    last_event_id,
    post_credentials,
    signal_fields,
    ticket_from,
)
from .placement import Placement
from .sse import comment, sse_headers

__all__ = [
    "CONNECT_ROUTE",
    "POST_ROUTES",
    "ROOMS",
    "Api",
    "AppSettings",
    "PostAnswer",
    "StreamAnswer",
    "Via",
]

log = logging.getLogger("roomkeeper.http")

ROOMS = "rooms"
SUCCESS = b'{"success":true}'
CONNECT_ROUTE = "/api/connect"


@attrs.frozen
class AppSettings:
    cors_origins: tuple[str, ...] = ("*",)
    max_body: int = MAX_BODY
    # Hardening (docs/reliability.md); the defaults are `Config`'s.
    body_timeout: float = 10.0
    new_sessions_per_minute: float = 60.0
    new_sessions_burst: float = 30.0
    streams_per_address: int = 200
    trust_proxy: int = 0
    admission: Admission | None = None  # see admission.py; its repr shows no secret


@attrs.frozen
class Via:
    """How a request reached this node, for forwarding it to the node that serves its
    room: method, target (path and query), the client's address, the authentic hop it
    came by (if another node forwarded it), its headers (read only to forward) and body."""

    method: str
    target: str
    client: str
    hop: Hop | None = None
    headers: Callable[[], Iterable[tuple[str, str]]] = list
    body: bytes = b""


@attrs.frozen
class StreamAnswer:
    """A connect's answer: its status and headers, its body (bytes that end it, the
    room's stream, or the owning node's stream relayed as it comes), and the address's
    stream slot that the body holds until it ends."""

    status: int
    headers: Mapping[str, str]
    body: bytes | Stream | AsyncIterator[bytes]
    slot: StreamSlot | None = None


class Api:
    """The signaling API over one actor system: one method per route. With ``peers``
    (several nodes on one storage), a request for a room another node serves is
    forwarded there (`Placement`)."""

    def __init__(
        self, system: ActorSystem, settings: AppSettings, peers: Peers | None = None
    ) -> None:
        self.system = system
        self.settings = settings
        self.peers = peers
        self.placement = Placement(system, ROOMS, peers)
        self.cors = CorsPolicy(settings.cors_origins)
        self.addresses = ClientAddresses(settings.trust_proxy)
        self.limits = AddressLimits(
            per_minute=settings.new_sessions_per_minute,
            burst=settings.new_sessions_burst,
            streams=settings.streams_per_address,
        )
        self.admission = settings.admission

    # -- where a request is served ----------------------------------------------------------
    def hop(self, headers: HeaderLookup, method: str, target: str) -> Hop | None:
        """The authentic hop a request came by, if another node forwarded it here."""
        if self.peers is None:
            return None
        return self.peers.verify(headers, method, target)

    async def ask(self, room: str, message: Any, via: Via) -> Any:
        """The room's reply to ``message``, asked where the room lives: its reply here, or
        the owner's answer (`Relayed`) when another node serves it. Failures and refusals
        as `ApiError`."""
        stub = self.system.get(ROOMS, room)

        async def remote(peers: Peers, where: Elsewhere) -> Relayed:
            return await peers.forward(
                where.address, via.method, via.target, via.headers(), via.client, via.body
            )

        try:
            reply = await self.placement.call(room, lambda: stub.ask(message), remote, via.hop)
        except RuntimeFailure as exc:
            answer = runtime_failure(exc)
            if answer is None:
                raise
            if isinstance(exc, StorageError):
                log.error("storage error in room %s: %s", stub.id, exc)
            raise answer from exc
        taken = None
        if isinstance(reply, PartlyRefused):  # a batch: say how many of it were taken
            taken, reply = {"accepted": reply.accepted}, reply.refused
        if isinstance(reply, Refused):
            extra = {} if reply.retry_after is None else {"Retry-After": str(reply.retry_after)}
            raise ApiError(reply.status, reply.reason, extra, taken)
        return reply

    async def _post(
        self,
        room: str,
        message: Any,
        via: Via,
        body_of: Callable[[Any], bytes] = lambda _: SUCCESS,
    ) -> PostAnswer:
        """A POST's message to its room, and the answer's body (``body_of`` the room's
        reply) and headers beyond the usual; forwarded, the owner's body and headers."""
        reply = await self.ask(room, message, via)
        if isinstance(reply, Relayed):
            return await _answer_of(reply)
        return body_of(reply), {}

    # -- the POST routes (served through `POST_ROUTES`) --------------------------------------
    async def signal(
        self, room: str, body: Mapping[str, Any], headers: HeaderLookup, via: Via
    ) -> PostAnswer:
        sender, token = post_credentials(body, headers)
        if "signals" in body:  # the batch form (an extension)
            batch = SignalBatch(sender, token, batch_fields(body))
            taken = dumps({"success": True, "accepted": len(batch.signals)})
            return await self._post(room, batch, via, lambda _: taken)
        to, payload, request_id = signal_fields(body)
        return await self._post(room, Signal(sender, token, to, payload, request_id), via)

    async def leave(
        self, room: str, body: Mapping[str, Any], headers: HeaderLookup, via: Via
    ) -> PostAnswer:
        sender, token = post_credentials(body, headers)
        return await self._post(room, Leave(sender, token), via)

    async def ice_servers(
        self, room: str, body: Mapping[str, Any], headers: HeaderLookup, via: Via
    ) -> PostAnswer:
        """Fresh ICE servers (new TURN credentials) for a session, proven as for a leave:
        ``{"ice_servers": [...], "ttl": seconds}``."""
        session_id, token = ice_credentials(body, headers)
        return await self._post(room, GetIceServers(session_id, token), via, _ice_answer)

    # -- GET /api/connect -----------------------------------------------------------------
    async def connect(
        self,
        room: str,
        query: Mapping[str, str],
        target: str,
        headers: HeaderLookup,
        forwarded: list[str],
        remote_addr: str | None,
        http_version: str,
        *,
        head: bool = False,
        items: Callable[[], Iterable[tuple[str, str]]] = list,
    ) -> StreamAnswer:
        """A connect to ``room`` with its parsed ``query``; ``target`` is its path and
        query as they came (a forwarded connect is signed over it), ``forwarded`` its
        ``X-Forwarded-For`` values, ``items`` its headers (read only to forward)."""
        session_id, token = connect_credentials(query, headers)
        lei = last_event_id(query, headers)
        ticket = ticket_from(query, headers)
        if head:
            # The headers a GET would get, and no session: a HEAD's body is never sent, so
            # a stream behind it would hold a ghost session in the roster (and the
            # connection) for as long as the client keeps the connection open.
            return StreamAnswer(200, sse_headers(http_version), b"")
        hop = self.hop(headers, "GET", target)
        if hop is not None:  # the node the client is on applied the per-address limits
            address = address_key(hop.client)
            slot = None
        else:
            address = self.addresses(remote_addr, forwarded)
            slot = self.limits.open_stream(address)
            if slot is None:
                self.addresses.refused(remote_addr)
                reason = f"{self.settings.streams_per_address} streams are open from this address"
                raise ApiError(
                    429, f"Too Many Requests: {reason}", {"Retry-After": str(STREAMS_RETRY_AFTER)}
                )
        via = Via("GET", target, address, hop, items)
        try:
            joined = await self._join(
                room, ticket, address, remote_addr, via, session_id, token, lei
            )
            if isinstance(joined, Stream):
                stream_id = joined.stream_id
                if slot is not None:
                    slot.bind(lambda: self.system.streams.get(stream_id) is not None)
        except ApiError as exc:
            if slot is not None:
                slot.release()
            if exc.status == 503:  # a stream is answered 200 and told to come back
                return self._come_back(exc, http_version)
            raise
        except BaseException:
            if slot is not None:
                slot.release()
            raise
        if isinstance(joined, Relayed):
            return StreamAnswer(joined.status, joined.headers, joined.body, slot)
        return StreamAnswer(200, sse_headers(http_version), joined, slot)

    def _come_back(self, exc: ApiError, http_version: str) -> StreamAnswer:
        """The answer to a connect the room cannot take now (storage down, overloaded,
        moving between nodes, shutting down): a browser's EventSource gives up for good on
        any non-200, so a 200 stream that says why and ends, and ``retry:`` brings the
        client back."""
        body = self.system.streams.codec.preamble() + comment(exc.message)
        return StreamAnswer(200, sse_headers(http_version), body)

    async def _join(
        self,
        room: str,
        ticket: str | None,
        address: str,
        remote_addr: str | None,
        via: Via,
        session_id: str | None,
        token: str | None,
        lei: int | None,
    ) -> Stream | Relayed:
        """The room's stream for this connect (or the owner's, relayed); a new session
        spends one of the address's budget, given back if the connect resumed a session,
        was refused or failed."""
        refuse_new, spent = self._admit(room, ticket, address, remote_addr, via.hop)
        try:
            joined = await self.ask(room, Connect(session_id, token, lei, refuse_new), via)
        except ApiError:
            if spent:
                self.limits.refund_session(address)
            raise
        if isinstance(joined, Relayed):
            return joined  # the owner's node made or resumed the session
        if spent and joined.resumed:
            self.limits.refund_session(address)
        stream = self.system.streams.get(joined.stream_id)
        if stream is None:
            raise ApiError(503, "Service Unavailable: stream closed", {"Retry-After": "1"})
        return stream

    def _admit(
        self,
        room: str,
        ticket: str | None,
        address: str,
        remote_addr: str | None,
        hop: Hop | None,
    ) -> tuple[Refused | None, bool]:
        """What a connect that would make a new session gets instead, if anything, and
        whether it spent one of its address's new sessions (to give back if it resumes).
        A forwarded connect spent its address's budget on the node the client is on."""
        if self.admission is not None:
            reason = self.admission.refusal(room, ticket)
            if reason is not None:
                return Refused(403, f"Forbidden: {reason}"), False
        if hop is not None:
            return None, False
        wait = self.limits.take_session(address)
        if wait is not None:
            self.addresses.refused(remote_addr)
            reason = "Too Many Requests: too many new sessions from this address"
            return Refused(429, reason, wait), False
        return None, True


PostAnswer = tuple[bytes, dict[str, str]]
"""A POST's ``200`` answer: its JSON body, and headers beyond the usual."""

PostHandler = Callable[[Api, str, Mapping[str, Any], HeaderLookup, Via], Awaitable[PostAnswer]]

POST_ROUTES: Mapping[str, PostHandler] = {
    "/api/signal": Api.signal,
    "/api/leave": Api.leave,
    "/api/ice-servers": Api.ice_servers,
}
"""The POST routes: path -> handler of (room, JSON body, headers, how it came). Each
answers ``200`` with the body and headers it returns, or raises `ApiError`."""


def _ice_answer(reply: Any) -> bytes:
    assert isinstance(reply, IceConfig)
    return dumps({"ice_servers": reply.ice_servers, "ttl": reply.ttl})


async def _answer_of(relayed: Relayed) -> PostAnswer:
    """A forwarded POST's outcome: the owner's body, and its headers to pass on, after its
    200; else its error, as it was."""
    body = b"".join([chunk async for chunk in relayed.body])
    passed = {k: v for k, v in relayed.headers.items() if k.lower() in _PASSED_ON}
    if relayed.status == 200:
        return body, passed
    try:
        fields = loads_untrusted(body)
        message = fields.pop("error", None)
    except Exception:
        fields, message = {}, None
    reason = message if isinstance(message, str) else "Bad Gateway: the room's node failed"
    raise ApiError(relayed.status, reason, passed, fields)


_PASSED_ON = ("retry-after", NODE_HEADER.lower())
