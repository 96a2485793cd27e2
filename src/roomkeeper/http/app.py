"""The whole HTTP application: the API's own layer (`ApiEdge`, edge.py) in front of a
Quart-Trio app that serves everything else: the demo and /client.js, /openapi.json,
/healthz, /readyz, /metrics and /admin/, with the protocol's JSON errors and CORS.
"""

from __future__ import annotations

import logging
from importlib import resources

import trio
from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGISendCallable,
    ASGISendEvent,
    Scope,
)
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from ..jsonutil import dumps
from ..observe import install as install_observability
from ..runtime import ActorSystem, StorageError
from .api import ROOMS, Api, AppSettings
from .edge import ApiEdge
from .errors import ApiError, error_response, method_not_allowed
from .forward import Peers
from .static import install as install_static

__all__ = ["ROOMS", "AppSettings", "Application", "ShieldFinalSend", "create_app"]

log = logging.getLogger("roomkeeper.http")

JSON = {"Content-Type": "application/json"}
READY_TIMEOUT = 2.0
"""Seconds the readiness check waits for the shared storage to answer."""


class Application(ApiEdge):
    """The ASGI application: the API's layer, and ``quart``, the app behind it."""

    def __init__(self, api: Api, quart: QuartTrio) -> None:
        observability = install_observability(quart, api.system, namespace=ROOMS)
        super().__init__(api, observability, ShieldFinalSend(quart))
        self.quart = quart


def create_app(
    system: ActorSystem, settings: AppSettings | None = None, peers: Peers | None = None
) -> Application:
    """The ASGI application serving the signaling API on top of ``system``; with
    ``peers``, a node among several that forwards requests for rooms others serve."""
    api = Api(system, settings or AppSettings(), peers)
    return Application(api, _quart_app(api))


def _quart_app(api: Api) -> QuartTrio:
    app = QuartTrio(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = api.settings.max_body
    app.config["BODY_TIMEOUT"] = api.settings.body_timeout
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    openapi = resources.files("roomkeeper.http").joinpath("openapi.json").read_bytes()

    @app.get("/healthz")
    async def healthz() -> Response:
        """Liveness: the process answers (it never touches storage)."""
        return _json(dumps({"status": "ok" if not api.system.closing else "stopping"}))

    @app.get("/readyz")
    async def readyz() -> Response:
        return await _readiness(api.system)

    @app.get("/openapi.json")
    async def openapi_document() -> Response:
        return _json(openapi)

    @app.errorhandler(ApiError)
    async def api_error(exc: ApiError) -> Response:
        return _error(exc)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        return _error(_api_error(exc, api.settings.max_body))

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        log.exception("unexpected error")
        return _error(ApiError(500, "Internal Server Error"))

    @app.after_request
    async def add_cors(response: Response) -> Response:
        api.cors.apply(response.headers, request.headers.get("Origin"))
        return response

    install_static(app)
    return app


async def _readiness(system: ActorSystem) -> Response:
    """Readiness: 200 while this node can serve rooms, else 503 with the reasons (the
    node is stopping, cannot reach its shared storage, or cannot renew its leases), so a
    proxy or an orchestrator takes it out of rotation."""
    problems = []
    if system.closing:
        problems.append("stopping")
    leases = system.leases
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


def _api_error(exc: HTTPException, max_body: int) -> ApiError:
    """Werkzeug's errors (404, 405, 408, 413...) in the protocol's JSON shape."""
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        return method_not_allowed(exc.valid_methods)
    status = exc.code or 500
    if status == 408:  # the body did not arrive in time (--body-timeout): never read
        return ApiError(408, f"{exc.name}: {exc.description}", {"Connection": "close"})
    if status == 413:
        return ApiError(413, f"Payload Too Large: body exceeds {max_body} bytes")
    return ApiError(status, f"{exc.name}: {exc.description}")


def _json(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status=status, headers={**JSON, **(headers or {})})


def _error(exc: ApiError) -> Response:
    body, status, headers = error_response(exc)
    return Response(body, status=status, headers=headers)


class ShieldFinalSend:
    """ASGI middleware: the last ``send`` of a response is not cancelled.

    Hypercorn re-arms a connection's idle timer (``keep_alive_timeout``) inside that last
    send, on the application's task, and quart-trio cancels that task as the response
    ends: the timer was then never re-armed, so a connection that had served one request
    stayed open, idle or dribbling its next request's headers, for ever. Hypercorn
    already shields its socket writes, so the shield adds no wait of its own.
    """

    def __init__(self, app: ASGIFramework) -> None:
        self.app = app

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        async def final_send_shielded(message: ASGISendEvent) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                with trio.CancelScope(shield=True):
                    await send(message)
            else:
                await send(message)

        await self.app(scope, receive, final_send_shielded)
