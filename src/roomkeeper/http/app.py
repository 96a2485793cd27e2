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
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from importlib import resources
from typing import Any

import attrs
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from ..jsonutil import dumps
from ..observe import install as install_observability
from ..observe.hooks import note_room
from ..runtime import ActorSystem, RuntimeFailure, StorageError
from ..runtime.streams import Stream
from ..signaling import Connect, Leave, Refused, Signal
from .addresses import ClientAddresses
from .budgets import STREAMS_RETRY_AFTER, AddressLimits, StreamSlot
from .cors import CorsPolicy
from .errors import ApiError, error_response, runtime_failure
from .limits import TICKET_PARAM, Admission
from .parsing import (
    MAX_BODY,
    HeaderLookup,
    connect_credentials,
    last_event_id,
    parse_json_object,
    parse_query,
    post_body_size,
    post_credentials,
    room_from,
    signal_fields,
)
from .sse import sse_headers
from .static import install as install_static

__all__ = ["POST_ROUTES", "ROOMS", "Api", "AppSettings", "api_of", "ask_room", "create_app"]

log = logging.getLogger("roomkeeper.http")

ROOMS = "rooms"
JSON = {"Content-Type": "application/json"}
SUCCESS = b'{"success":true}'
EXTENSION = "roomkeeper.api"


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
    admission_secret: str | None = attrs.field(default=None, repr=False)


def _json(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status=status, headers={**JSON, **(headers or {})})


def _error(exc: ApiError) -> Response:
    body, status, headers = error_response(exc)
    return Response(body, status=status, headers=headers)


async def _counted(
    chunks: AsyncGenerator[bytes, None], slot: StreamSlot
) -> AsyncGenerator[bytes, None]:
    """A stream's bytes, holding its address's stream slot until the response ends."""
    slot.start()
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        slot.release()
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


class Api:
    """The signaling API over one actor system: one method per route."""

    def __init__(self, system: ActorSystem, settings: AppSettings) -> None:
        self.system = system
        self.settings = settings
        self.cors = CorsPolicy(settings.cors_origins)
        self.addresses = ClientAddresses(settings.trust_proxy)
        self.limits = AddressLimits(
            per_minute=settings.new_sessions_per_minute,
            burst=settings.new_sessions_burst,
            streams=settings.streams_per_address,
        )
        secret = settings.admission_secret
        self.admission = Admission(secret) if secret is not None else None

    # -- POST /api/signal and /api/leave (served through `POST_ROUTES`) ---------------------
    async def signal(self, room: str, body: Mapping[str, Any], headers: HeaderLookup) -> None:
        sender, token = post_credentials(body, headers)
        to, payload, request_id = signal_fields(body)
        await ask_room(self.system, room, Signal(sender, token, to, payload, request_id))

    async def leave(self, room: str, body: Mapping[str, Any], headers: HeaderLookup) -> None:
        sender, token = post_credentials(body, headers)
        await ask_room(self.system, room, Leave(sender, token))

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
    ) -> Response:
        query = parse_query(query_string)
        room = room_from(query)
        note_room(room)
        session_id, token = connect_credentials(query, headers)
        lei = last_event_id(query, headers)
        if head:
            # The headers a GET would get, and no session: a HEAD's body is never sent, so
            # a stream behind it would hold a ghost session in the roster (and the
            # connection) for as long as the client keeps the connection open.
            return Response(b"", headers=sse_headers(http_version))
        address = self.addresses(remote_addr, forwarded)
        slot = self.limits.open_stream(address)
        if slot is None:
            self.addresses.refused(remote_addr)
            reason = f"{self.settings.streams_per_address} streams are open from this address"
            raise ApiError(
                429, f"Too Many Requests: {reason}", {"Retry-After": str(STREAMS_RETRY_AFTER)}
            )
        try:
            stream = await self._join(room, query, address, remote_addr, session_id, token, lei)
            stream_id = stream.stream_id
            slot.bind(lambda: self.system.streams.get(stream_id) is not None)
        except BaseException:
            slot.release()
            raise
        response = Response(
            _counted(self.system.streams.consume(stream), slot), headers=sse_headers(http_version)
        )
        response.timeout = None
        return response

    async def _join(
        self,
        room: str,
        query: Mapping[str, str],
        address: str,
        remote_addr: str | None,
        session_id: str | None,
        token: str | None,
        lei: int | None,
    ) -> Stream:
        """The room's stream for this connect; a new session spends one of the address's
        budget, given back if the connect resumed a session, was refused or failed."""
        refuse_new, spent = self._admit(room, query, address, remote_addr)
        try:
            joined = await ask_room(self.system, room, Connect(session_id, token, lei, refuse_new))
        except ApiError:
            if spent:
                self.limits.refund_session(address)
            raise
        if spent and joined.resumed:
            self.limits.refund_session(address)
        stream = self.system.streams.get(joined.stream_id)
        if stream is None:
            raise ApiError(503, "Service Unavailable: stream closed", {"Retry-After": "1"})
        return stream

    def _admit(
        self, room: str, query: Mapping[str, str], address: str, remote_addr: str | None
    ) -> tuple[Refused | None, bool]:
        """What a connect that would make a new session gets instead, if anything, and
        whether it spent one of its address's new sessions (to give back if it resumes)."""
        if self.admission is not None:
            reason = self.admission.refusal(room, query.get(TICKET_PARAM))
            if reason is not None:
                return Refused(403, f"Forbidden: {reason}"), False
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
        return _json(dumps({"status": "ok" if not self.system.closing else "stopping"}))

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


PostHandler = Callable[[Api, str, Mapping[str, Any], HeaderLookup], Awaitable[None]]

POST_ROUTES: Mapping[str, PostHandler] = {"/api/signal": Api.signal, "/api/leave": Api.leave}
"""The POST routes: path -> handler of (room, JSON body, headers). Each answers
``{"success":true}`` or raises `ApiError`."""


def api_of(app: QuartTrio) -> Api:
    """The `Api` that `create_app` made for ``app``."""
    api = app.extensions[EXTENSION]
    assert isinstance(api, Api)
    return api


def create_app(system: ActorSystem, settings: AppSettings | None = None) -> QuartTrio:
    """The Quart-Trio application serving the signaling API on top of ``system``."""
    api = Api(system, settings or AppSettings())
    app = QuartTrio(__name__, static_folder=None)
    app.extensions[EXTENSION] = api
    app.config["MAX_CONTENT_LENGTH"] = api.settings.max_body
    app.config["BODY_TIMEOUT"] = api.settings.body_timeout
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    openapi = resources.files("roomkeeper.http").joinpath("openapi.json").read_bytes()

    @app.get("/api/connect")
    async def connect() -> Response:
        return await api.connect(
            request.query_string,
            request.headers,
            request.headers.getlist("X-Forwarded-For"),
            request.remote_addr,
            request.http_version,
            head=request.method == "HEAD",
        )

    for path, handler in POST_ROUTES.items():
        _post_route(app, api, path, handler)

    @app.route("/api/connect", methods=["OPTIONS"])
    @app.route("/api/signal", methods=["OPTIONS"])
    @app.route("/api/leave", methods=["OPTIONS"])
    async def preflight() -> Response:
        return api.preflight(request.headers)

    @app.get("/healthz")
    async def healthz() -> Response:
        return api.health()

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
        await handler(api, room, parse_json_object(body), request.headers)
        return _json(SUCCESS)

    app.add_url_rule(path, "post_" + path.rsplit("/", 1)[1], serve, methods=["POST"])
