"""The HTTP front end (the Worker's ``fetch``): parse, check, ask the room, shape the answer.

No room logic lives here. Every request reaches its room's actor through the runtime by
name hash; errors are JSON with the protocol's statuses; CORS headers go on every answer.

`Api` holds the handlers, one method per route, each taking what it reads from the request
as arguments. The Quart routes of `create_app` only hand them the request's parts. The two
POST routes are written once, in `POST_ROUTES`: the Quart app serves them (for apps mounted
alone, Quart's test client, say), and so does `PostFastPath` (fastpath.py), which serves
them in the server without Quart's per-request machinery.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from importlib import resources
from typing import Any

import attrs
import trio
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from ..admission import Admission
from ..jsonutil import dumps, loads_untrusted
from ..observe import install as install_observability
from ..observe.hooks import note_room
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
from .errors import ApiError, error_response, runtime_failure
from .forward import NODE_HEADER, Hop, Peers, Relayed
from .parsing import (
    MAX_BODY,
    HeaderLookup,
    batch_fields,
    connect_credentials,
    ice_credentials,
    last_event_id,
    parse_json_object,
    parse_query,
    post_body_size,
    post_credentials,
    room_from,
    signal_fields,
    ticket_from,
)
from .placement import Placement
from .sse import comment, sse_headers
from .static import install as install_static

__all__ = [
    "POST_ROUTES",
    "ROOMS",
    "Api",
    "AppSettings",
    "Via",
    "api_of",
    "ask_room",
    "create_app",
]

log = logging.getLogger("roomkeeper.http")

ROOMS = "rooms"
JSON = {"Content-Type": "application/json"}
SUCCESS = b'{"success":true}'
EXTENSION = "roomkeeper.api"
READY_TIMEOUT = 2.0
"""Seconds the readiness check waits for the shared storage to answer."""


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


def _json(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status=status, headers={**JSON, **(headers or {})})


def _error(exc: ApiError) -> Response:
    body, status, headers = error_response(exc)
    return Response(body, status=status, headers=headers)


async def _counted(
    chunks: AsyncIterator[bytes], slot: StreamSlot | None
) -> AsyncGenerator[bytes, None]:
    """A stream's bytes, holding its address's stream slot (if it has one: a forwarded
    stream's is held by the node the client is on) until the response ends."""
    if slot is not None:
        slot.start()
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        if slot is not None:
            slot.release()
        if isinstance(chunks, AsyncGenerator):
            await chunks.aclose()


async def ask_room(system: ActorSystem, room: str, message: Any) -> Any:
    """The room's reply to ``message``; failures and refusals as `ApiError`."""
    try:
        reply = await system.get(ROOMS, room).ask(message)
    except RuntimeFailure as exc:
        answer = runtime_failure(exc)
        if answer is None:
            raise
        if isinstance(exc, StorageError):
            log.error("storage error in room %s: %s", system.get(ROOMS, room).id, exc)
        raise answer from exc
    if isinstance(reply, Refused):
        extra = {} if reply.retry_after is None else {"Retry-After": str(reply.retry_after)}
        raise ApiError(reply.status, reply.reason, extra)
    return reply


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
        query_string: bytes,
        headers: HeaderLookup,
        forwarded: list[str],
        remote_addr: str | None,
        http_version: str,
        *,
        head: bool = False,
        items: Callable[[], Iterable[tuple[str, str]]] = list,
    ) -> Response:
        query = parse_query(query_string)
        room = room_from(query)
        note_room(room)
        session_id, token = connect_credentials(query, headers)
        lei = last_event_id(query, headers)
        ticket = ticket_from(query, headers)
        if head:
            # The headers a GET would get, and no session: a HEAD's body is never sent, so
            # a stream behind it would hold a ghost session in the roster (and the
            # connection) for as long as the client keeps the connection open.
            return Response(b"", headers=sse_headers(http_version))
        target = "/api/connect?" + query_string.decode("latin-1")
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
            chunks = joined.body
            headers_out = joined.headers
            status = joined.status
        else:
            chunks = self.system.streams.consume(joined)
            headers_out = sse_headers(http_version)
            status = 200
        response = Response(_counted(chunks, slot), status=status, headers=headers_out)
        response.timeout = None
        return response

    def _come_back(self, exc: ApiError, http_version: str) -> Response:
        """The answer to a connect the room cannot take now (storage down, overloaded,
        moving between nodes, shutting down): a browser's EventSource gives up for good on
        any non-200, so a 200 stream that says why and ends, and ``retry:`` brings the
        client back."""
        body = self.system.streams.codec.preamble() + comment(exc.message)
        return Response(body, headers=sse_headers(http_version))

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

    # -- the rest -------------------------------------------------------------------------
    def preflight(self, headers: HeaderLookup) -> Response:
        allowed = self.cors.preflight_headers(
            headers.get("Origin"),
            headers.get("Access-Control-Request-Method"),
            headers.get("Access-Control-Request-Headers"),
        )
        return Response(b"", status=204, headers=allowed)

    def health(self) -> Response:
        """Liveness: the process answers (it never touches storage)."""
        return _json(dumps({"status": "ok" if not self.system.closing else "stopping"}))

    async def readiness(self) -> Response:
        """Readiness: 200 while this node can serve rooms, else 503 with the reasons (the
        node is stopping, cannot reach its shared storage, or cannot renew its leases),
        so a proxy or an orchestrator takes it out of rotation."""
        problems = []
        if self.system.closing:
            problems.append("stopping")
        leases = self.system.leases
        if leases is not None:
            if not leases.healthy():
                problems.append("lease renewals are failing")
            try:
                with trio.fail_after(READY_TIMEOUT):
                    await leases.store.check()
            except (StorageError, trio.TooSlowError):
                problems.append("storage is unreachable")
        if problems:
            body = dumps({"status": "unavailable", "problems": problems})
            return _json(body, 503, {"Retry-After": "1"})
        return _json(dumps({"status": "ready"}))

    def http_error(self, exc: HTTPException) -> Response:
        """Werkzeug's errors (404, 405, 408, 413...) in the protocol's JSON shape."""
        status = exc.code or 500
        headers: dict[str, str] = {}
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        if status == 408:  # the body did not arrive in time (--body-timeout): never read
            headers["Connection"] = "close"
        reason = (
            f"{exc.name}: {exc.description}"
            if status != 413
            else (f"Payload Too Large: body exceeds {self.settings.max_body} bytes")
        )
        return _error(ApiError(status, reason, headers))


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


def api_of(app: QuartTrio) -> Api:
    """The `Api` that `create_app` made for ``app``."""
    api = app.extensions[EXTENSION]
    assert isinstance(api, Api)
    return api


def create_app(
    system: ActorSystem, settings: AppSettings | None = None, peers: Peers | None = None
) -> QuartTrio:
    """The Quart-Trio application serving the signaling API on top of ``system``; with
    ``peers``, a node among several that forwards requests for rooms others serve."""
    api = Api(system, settings or AppSettings(), peers)
    app = QuartTrio(__name__, static_folder=None)
    app.extensions[EXTENSION] = api
    app.config["MAX_CONTENT_LENGTH"] = api.settings.max_body
    app.config["BODY_TIMEOUT"] = api.settings.body_timeout
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    openapi = resources.files("roomkeeper.http").joinpath("openapi.json").read_bytes()

    @app.get("/api/connect")
    async def connect() -> Response:
        headers = request.headers
        return await api.connect(
            request.query_string,
            headers,
            headers.getlist("X-Forwarded-For"),
            request.remote_addr,
            request.http_version,
            head=request.method == "HEAD",
            items=lambda: list(headers.items()),
        )

    for path, handler in POST_ROUTES.items():
        _post_route(app, api, path, handler)

    async def preflight() -> Response:
        return api.preflight(request.headers)

    for path in ("/api/connect", *POST_ROUTES):
        app.add_url_rule(path, "preflight_" + path, preflight, methods=["OPTIONS"])

    @app.get("/healthz")
    async def healthz() -> Response:
        return api.health()

    @app.get("/readyz")
    async def readyz() -> Response:
        return await api.readiness()

    @app.get("/openapi.json")
    async def openapi_document() -> Response:
        return _json(openapi)

    @app.errorhandler(ApiError)
    async def api_error(exc: ApiError) -> Response:
        return _error(exc)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        return api.http_error(exc)

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        log.exception("unexpected error")
        return _error(ApiError(500, "Internal Server Error"))

    @app.after_request
    async def add_cors(response: Response) -> Response:
        api.cors.apply(response.headers, request.headers.get("Origin"))
        return response

    install_observability(app, system, namespace=ROOMS)
    install_static(app)
    return app


def _post_route(app: QuartTrio, api: Api, path: str, handler: PostHandler) -> None:
    """Serve ``handler`` at ``POST path`` through Quart (the server's `PostFastPath`
    answers these before Quart sees them)."""

    async def serve() -> Response:
        # A body left unread on a keep-alive connection can stall the next request on it,
        # so the (bounded) body is read before the room is checked; a request refused from
        # its headers alone (411, 413) is answered with ``Connection: close``.
        post_body_size(request.headers, api.settings.max_body)
        body = await request.get_data(cache=False)
        assert isinstance(body, bytes)
        room = room_from(parse_query(request.query_string))
        note_room(room)
        headers = request.headers
        target = request.full_path if request.query_string else request.path
        via = Via(
            "POST",
            target,
            request.remote_addr or "",
            api.hop(headers, "POST", target),
            lambda: list(headers.items()),
            body,
        )
        answer, extra = await handler(api, room, parse_json_object(body), headers, via)
        return _json(answer, headers=extra)

    app.add_url_rule(path, "post_" + path.rsplit("/", 1)[1], serve, methods=["POST"])
