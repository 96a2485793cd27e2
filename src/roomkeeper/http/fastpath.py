"""The POST routes served straight from ASGI: ``/api/signal`` is the hot route (every ICE
candidate), ``/api/leave`` comes along since its handling is the same.

Every other request goes on to the Quart app. This path serves `POST_ROUTES`, the handlers
the Quart app serves too, with the same helpers (parsing, errors, CORS, metrics, request
ids and the access log), without Quart's per-request machinery: a request context, a
nursery and two tasks (quart-trio), URL matching, Request and Response objects. That
machinery was a fifth of the server's CPU per relayed signal (docs/benchmarks.md).

A request refused from its headers alone (411, 413, 400) gets its whole answer at once,
but the connection closes only once its body has been read and dropped (up to
`drain_limit` bytes, within the body timeout): closing on unread data resets the
connection, and the answer, still in flight, is lost with it; nginx, which streams bodies
on, then answered its own HTML 502.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import trio
from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope
from quart_trio import QuartTrio
from werkzeug.exceptions import RequestTimeout

from ..observe.hooks import Observability, observability
from ..observe.logs import new_request_id, request_id_var, sane_request_id
from .app import POST_ROUTES, SUCCESS, Api, Via, api_of
from .errors import ApiError, error_response
from .parsing import parse_json_object, parse_query, post_body_size, room_from

__all__ = ["DRAIN_LIMIT", "AsgiHeaders", "PostFastPath"]

log = logging.getLogger("roomkeeper.http")

_TIMEOUT = f"{RequestTimeout().name}: {RequestTimeout.description}"
_HTTP1 = ("1.0", "1.1")

DRAIN_LIMIT = 1 << 20
"""Bytes of a refused body read and dropped before answering, at least (`--max-body` if
larger): nginx's ``client_max_body_size`` in the shipped config is 1 MiB."""


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


class PostFastPath:
    """ASGI middleware: answers the POSTs of `POST_ROUTES` itself, passes the rest to
    ``app``."""

    def __init__(self, app: ASGIFramework, api: Api, observability: Observability) -> None:
        self.app = app
        self.api = api
        self.observability = observability
        self.max_body = api.settings.max_body
        self.body_timeout = api.settings.body_timeout
        self.drain_limit = max(DRAIN_LIMIT, self.max_body)

    @classmethod
    def wrap(cls, quart_app: QuartTrio, inner: ASGIFramework | None = None) -> PostFastPath:
        """The fast path in front of ``inner`` (default ``quart_app``), with the handlers
        and metrics `create_app` made for ``quart_app``."""
        return cls(inner or quart_app, api_of(quart_app), observability(quart_app))

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        handler = POST_ROUTES.get(scope["path"])
        if handler is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = AsgiHeaders(scope["headers"])
        request_id = sane_request_id(headers.get("X-Request-Id")) or new_request_id()
        request_id_var.set(request_id)
        answer = _Answer(self, scope["path"], headers, request_id, started)
        try:
            size = post_body_size(headers, self.max_body)
        except ApiError as refusal:
            if scope["http_version"] not in _HTTP1:  # HTTP/2 ends the stream, not the connection
                await answer.send(send, *error_response(refusal), None)
                return
            # The whole answer goes out at once; the connection closes once the body is
            # read (or the drain gave up), not while the client is still sending it.
            await answer.send(send, *error_response(refusal), None, final=False)
            await self._drain(headers, receive)
            with trio.CancelScope(shield=True):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        extra: dict[str, str] = {}
        room: str | None = None
        try:
            body = await self._body(size, receive)
            if body is None:  # the client went away before its body arrived
                return
            query = scope["query_string"]
            room = room_from(parse_query(query))
            target = scope["path"] + ("?" + query.decode("latin-1") if query else "")
            client = scope.get("client")
            via = Via(
                "POST",
                target,
                client[0] if client else "",
                self.api.hop(headers, "POST", target),
                lambda: [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]],
                body,
            )
            extra = await handler(self.api, room, parse_json_object(body), headers, via)
            status, payload = 200, SUCCESS
        except ApiError as exc:
            payload, status, extra = error_response(exc)
        except Exception:
            log.exception("unexpected error")
            payload, status, extra = error_response(ApiError(500, "Internal Server Error"))
        await answer.send(send, payload, status, extra, room)

    async def _body(self, size: int, receive: ASGIReceiveCallable) -> bytes | None:
        """The body of ``size`` bytes (declared), or None if the client left first; 408 if
        it is not in within the timeout."""
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

    async def _drain(self, headers: AsgiHeaders, receive: ASGIReceiveCallable) -> None:
        """Read and drop the body of a refused request, to its end if that comes within
        `drain_limit` bytes and the body timeout. A declared length over the limit is not
        read at all (the answer may then be lost to the close, as HTTP allows)."""
        declared = (headers.get("Content-Length") or "").strip()
        if (
            declared.isascii()
            and declared.isdigit()
            and (len(declared) > len(str(self.drain_limit)) or int(declared) > self.drain_limit)
        ):
            return
        dropped = 0
        with trio.move_on_after(self.body_timeout):
            while dropped <= self.drain_limit:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return
                dropped += len(message.get("body", b""))


class _Answer:
    """The answer to one POST: JSON, CORS, request id and length; counted and logged."""

    __slots__ = ("fast", "headers", "path", "request_id", "started")

    def __init__(
        self, fast: PostFastPath, path: str, headers: AsgiHeaders, request_id: str, started: float
    ) -> None:
        self.fast = fast
        self.path = path
        self.headers = headers
        self.request_id = request_id
        self.started = started

    async def send(
        self,
        send: ASGISendCallable,
        payload: bytes,
        status: int,
        extra: dict[str, str],
        room: str | None,
        *,
        final: bool = True,
    ) -> None:
        response = {"Content-Type": "application/json", **extra}
        self.fast.api.cors.apply(response, self.headers.get("Origin"))
        response["X-Request-Id"] = self.request_id
        response["Content-Length"] = str(len(payload))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.lower().encode(), v.encode()) for k, v in response.items()],
            }
        )
        elapsed = time.perf_counter() - self.started
        self.fast.observability.record(self.path, "POST", status, elapsed, room)
        with trio.CancelScope(shield=True):  # see ShieldFinalSend (server.py)
            await send({"type": "http.response.body", "body": payload, "more_body": not final})
