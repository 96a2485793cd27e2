"""The HTTP front end (the Worker's ``fetch``): parse, check, ask the room, shape the answer.

No room logic lives here. Every request reaches its room's actor through the runtime by
name hash; errors are JSON with the protocol's statuses; CORS headers go on every answer.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Mapping
from importlib import resources
from typing import Any

import attrs
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from roomkeeper_actors.signaling.messages import Connect, Leave, Refused, Signal

from ..jsonutil import dumps
from ..observe import install as install_observability
from ..runtime import ActorSystem, HandlerError, Overloaded, StorageError
from .admission import Admission, ticket_from
from .cors import CorsPolicy
from .errors import ApiError, error_response
from .ice_route import install as install_ice_servers
from .limits import (
    STREAMS_RETRY_AFTER,
    AddressLimits,
    ClientAddresses,
    StreamSlot,
)
from .parsing import (
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

log = logging.getLogger("roomkeeper.http")

ROOMS = "rooms"
JSON = {"Content-Type": "application/json"}
SUCCESS = b'{"success":true}'


@attrs.frozen
class AppSettings:
    cors_origins: tuple[str, ...] = ("*",)
    max_body: int = 102_400
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
    except Overloaded as exc:
        raise ApiError(503, f"Service Unavailable: {exc}", {"Retry-After": "1"}) from exc
    except StorageError as exc:
        log.error("storage error in room %s: %s", system.get(ROOMS, room).id, exc)
        raise ApiError(503, "Service Unavailable: storage failed", {"Retry-After": "1"}) from exc
    except HandlerError as exc:
        raise ApiError(500, "Internal Server Error: the room failed") from exc
    if isinstance(reply, Refused):
        extra = {} if reply.retry_after is None else {"Retry-After": str(reply.retry_after)}
        raise ApiError(reply.status, reply.reason, extra)
    return reply


async def relay_signal(
    system: ActorSystem, room: str, body: Mapping[str, Any], headers: HeaderLookup
) -> None:
    """``POST /api/signal`` once its body is read: check it, hand it to the room."""
    sender, token = post_credentials(body, headers)
    to, payload, request_id = signal_fields(body)
    await ask_room(system, room, Signal(sender, token, to, payload, request_id))


def create_app(system: ActorSystem, settings: AppSettings | None = None) -> QuartTrio:
    """The Quart-Trio application serving the signaling API on top of ``system``."""
    settings = settings or AppSettings()
    app = QuartTrio(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body
    app.config["BODY_TIMEOUT"] = settings.body_timeout
    addresses = ClientAddresses(settings.trust_proxy)
    limits = AddressLimits(
        per_minute=settings.new_sessions_per_minute,
        burst=settings.new_sessions_burst,
        streams=settings.streams_per_address,
    )
    admission = settings.admission
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    cors = CorsPolicy(settings.cors_origins)
    openapi = resources.files("roomkeeper.http").joinpath("openapi.json").read_bytes()

    async def ask(room: str, message: Any) -> Any:
        return await ask_room(system, room, message)

    def admit(room: str, query: Mapping[str, str], address: str) -> tuple[Refused | None, bool]:
        """What a connect that would make a new session gets instead, if anything, and
        whether it spent one of its address's new sessions (to give back if it resumes)."""
        if admission is not None:
            reason = admission.refusal(room, ticket_from(query, request.headers))
            if reason is not None:
                return Refused(403, f"Forbidden: {reason}"), False
        wait = limits.take_session(address)
        if wait is not None:
            addresses.refused(request.remote_addr)
            reason = "Too Many Requests: too many new sessions from this address"
            return Refused(429, reason, wait), False
        return None, True

    async def post_body() -> tuple[str, dict[str, Any]]:
        """The room and JSON body of a POST, checked in the protocol's order.

        A body left unread on a keep-alive connection can stall the next request on it, so
        the (bounded) body is read before the room is checked, and a request refused
        from its headers alone (411, 413) is answered with ``Connection: close``."""
        post_body_size(request.headers, settings.max_body)
        body = await request.get_data(cache=False)
        assert isinstance(body, bytes)
        room = room_from(parse_query(request.query_string))
        return room, parse_json_object(body)

    @app.get("/api/connect")
    async def connect() -> Response:
        query = parse_query(request.query_string)
        room = room_from(query)
        session_id, token = connect_credentials(query, request.headers)
        lei = last_event_id(query, request.headers)
        if request.method == "HEAD":
            # The headers a GET would get, and no session: a HEAD's body is never sent, so
            # a stream behind it would hold a ghost session in the roster (and the
            # connection) for as long as the client keeps the connection open.
            return Response(b"", headers=sse_headers(request.http_version))
        address = addresses(request.remote_addr, request.headers.getlist("X-Forwarded-For"))
        slot = limits.open_stream(address)
        if slot is None:
            addresses.refused(request.remote_addr)
            reason = f"{settings.streams_per_address} streams are open from this address"
            raise ApiError(
                429, f"Too Many Requests: {reason}", {"Retry-After": str(STREAMS_RETRY_AFTER)}
            )
        try:
            refuse_new, spent = admit(room, query, address)
            try:
                joined = await ask(room, Connect(session_id, token, lei, refuse_new))
            except ApiError:
                if spent:  # refused or failed: no session was made
                    limits.refund_session(address)
                raise
            if spent and joined.resumed:
                limits.refund_session(address)
            stream_id = joined.stream_id
            stream = system.streams.get(stream_id)
            if stream is None:
                raise ApiError(503, "Service Unavailable: stream closed", {"Retry-After": "1"})
            slot.bind(lambda: system.streams.get(stream_id) is not None)
        except BaseException:
            slot.release()
            raise
        response = Response(
            _counted(system.streams.consume(stream), slot),
            headers=sse_headers(request.http_version),
        )
        response.timeout = None
        return response

    @app.post("/api/signal")
    async def signal() -> Response:
        # Served by SignalFastPath (fastpath.py) in the server; this route is the same
        # answer for apps mounted without it (Quart's test client, say).
        room, body = await post_body()
        await relay_signal(system, room, body, request.headers)
        return _json(SUCCESS)

    @app.post("/api/leave")
    async def leave() -> Response:
        room, body = await post_body()
        sender, token = post_credentials(body, request.headers)
        await ask(room, Leave(sender, token))
        return _json(SUCCESS)

    install_ice_servers(app, post_body, ask, cors)

    @app.route("/api/connect", methods=["OPTIONS"])
    @app.route("/api/signal", methods=["OPTIONS"])
    @app.route("/api/leave", methods=["OPTIONS"])
    async def preflight() -> Response:
        headers = cors.preflight_headers(
            request.headers.get("Origin"),
            request.headers.get("Access-Control-Request-Method"),
            request.headers.get("Access-Control-Request-Headers"),
        )
        return Response(b"", status=204, headers=headers)

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json(dumps({"status": "ok" if not system.closing else "stopping"}))

    @app.get("/openapi.json")
    async def openapi_document() -> Response:
        return _json(openapi)

    @app.errorhandler(ApiError)
    async def api_error(exc: ApiError) -> Response:
        return _error(exc)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        headers: dict[str, str] = {}
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        if status == 408:  # the body did not arrive in time (--body-timeout): never read
            headers["Connection"] = "close"
        reason = (
            f"{exc.name}: {exc.description}"
            if status != 413
            else (f"Payload Too Large: body exceeds {settings.max_body} bytes")
        )
        return _error(ApiError(status, reason, headers))

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        log.exception("unexpected error")
        return _error(ApiError(500, "Internal Server Error"))

    @app.after_request
    async def add_cors(response: Response) -> Response:
        response.headers.update(cors.headers_for(request.headers.get("Origin")))
        return response

    install_observability(app, system, namespace=ROOMS)
    install_static(app)
    return app
