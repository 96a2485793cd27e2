"""``POST /api/signal`` served straight from ASGI: the hot route (every ICE candidate).

Every other request goes on to the Quart app. This path gives the answers the Quart route
gives, with the same helpers (parsing, the room call, errors, CORS, metrics, request ids
and the access log), without Quart's per-request machinery: a request context, a nursery
and two tasks (quart-trio), URL matching, Request and Response objects. That machinery
was a fifth of the server's CPU per relayed signal (docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import trio
from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope
from werkzeug.exceptions import RequestTimeout

from ..observe.hooks import SIGNAL_ROUTE, Observability
from ..observe.logs import new_request_id, request_id_var, sane_request_id
from ..runtime import ActorSystem
from .app import SUCCESS, relay_signal
from .cors import CorsPolicy
from .errors import ApiError, error_response
from .parsing import parse_json_object, parse_query, post_body_size, room_from

__all__ = ["SignalFastPath"]

log = logging.getLogger("roomkeeper.http")

_TIMEOUT = f"{RequestTimeout().name}: {RequestTimeout.description}"


class AsgiHeaders:
    """Case-insensitive ``get`` over an ASGI scope's headers (names arrive lowercase)."""

    __slots__ = ("_raw",)

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        self._raw = raw  # Hypercorn's list: read as it is, not copied

    def get(self, key: str, /) -> str | None:
        name = key.lower().encode("latin-1")
        for raw_name, value in self._raw:
            if raw_name == name:
                return value.decode("latin-1")
        return None


class SignalFastPath:
    """ASGI middleware: answers ``POST /api/signal`` itself, passes the rest to ``app``."""

    def __init__(
        self,
        app: ASGIFramework,
        system: ActorSystem,
        observability: Observability,
        cors: CorsPolicy,
        *,
        max_body: int,
        body_timeout: float,
    ) -> None:
        self.app = app
        self.system = system
        self.observability = observability
        self.cors = cors
        self.max_body = max_body
        self.body_timeout = body_timeout

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != SIGNAL_ROUTE
            or scope["method"] != "POST"
            or scope.get("root_path")
        ):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        extra: dict[str, str] = {}
        headers = AsgiHeaders(scope["headers"])
        request_id = sane_request_id(headers.get("X-Request-Id")) or new_request_id()
        request_id_var.set(request_id)
        try:
            body = await self._body(headers, receive)
            if body is None:  # the client went away before its body arrived
                return
            room = room_from(parse_query(scope["query_string"]))
            await relay_signal(self.system, room, parse_json_object(body), headers)
            status, payload = 200, SUCCESS
        except ApiError as exc:
            payload, status, extra = error_response(exc)
        except Exception:
            log.exception("unexpected error")
            payload, status, extra = error_response(ApiError(500, "Internal Server Error"))
        response = {
            "Content-Type": "application/json",
            **extra,
            **self.cors.headers_for(headers.get("Origin")),
            "X-Request-Id": request_id,
            "Content-Length": str(len(payload)),
        }
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.lower().encode(), v.encode()) for k, v in response.items()],
            }
        )
        self.observability.record(
            SIGNAL_ROUTE, "POST", status, time.perf_counter() - started, scope["query_string"]
        )
        with trio.CancelScope(shield=True):  # see ShieldFinalSend (server.py)
            await send({"type": "http.response.body", "body": payload, "more_body": False})

    async def _body(self, headers: AsgiHeaders, receive: ASGIReceiveCallable) -> bytes | None:
        """The body, checked as the Quart route checks it: 411/413/400 from the headers
        alone (then the connection closes), 408 if it is not in within the timeout."""
        try:
            size = post_body_size(headers, self.max_body)
        except ApiError:
            if headers.get("Content-Length") is None and headers.get("Transfer-Encoding") is None:
                # No body by HTTP's rules: take its (immediate) end first. An answer sent
                # before Hypercorn has read the request's end can be lost when more bytes
                # follow on the connection.
                await receive()
            raise
        chunks: list[bytes] = []
        received = 0
        with trio.move_on_after(self.body_timeout):
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return None
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > size:  # h11 frames by Content-Length; never read past it
                    raise ApiError(400, "body longer than its Content-Length")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
        raise ApiError(408, _TIMEOUT, {"Connection": "close"})
