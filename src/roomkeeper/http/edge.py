"""The API on the wire: one small ASGI layer serves ``GET``/``HEAD /api/connect``, the POST
routes and the preflights of all of them; every other request goes on to ``rest`` (the
Quart app: the demo, /openapi.json, /healthz, /readyz, /metrics, /admin/).

Each API route is served here and only here, without Quart's per-request machinery (a
request context, a nursery and two tasks in quart-trio, URL matching, Request and Response
objects): that machinery was a fifth of the server's CPU per relayed signal, and most of
the memory of an idle event stream beyond the stack's own (docs/benchmarks.md). An event
stream costs the one task Hypercorn runs the request in: it writes the stream's bytes as
they come and, in between, waits for the connection's end (`StreamRegistry.pump`); on
roomkeeper's own server, what comes while it waits is written by the task that sends it
(`direct.DirectWrite`), and it is not woken.

A POST refused from its headers alone (411, 413, 400) gets its whole answer at once, but
the connection closes only once its body has been read and dropped (up to `drain_limit`
bytes, within the body timeout): closing on unread data resets the connection, and the
answer, still in flight, is lost with it; nginx, which streams bodies on, then answered
its own HTML 502.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio
from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGISendCallable,
    HTTPScope,
    Scope,
    WebsocketScope,
)
from werkzeug.exceptions import RequestTimeout

from ..observe.hooks import Observability
from ..observe.logs import new_request_id, request_id_var, sane_request_id
from ..runtime.streams import Stream
from .api import CONNECT_ROUTE, POST_ROUTES, Api, Via
from .direct import WRITE_NOW, DirectWrite
from .errors import ApiError, error_response, method_not_allowed
from .guard import DISCONNECT, Departure
from .parsing import parse_json_object, parse_query, post_body_size, room_from

__all__ = ["DRAIN_LIMIT", "ROUTES", "ApiEdge", "AsgiHeaders"]

log = logging.getLogger("roomkeeper.http")

ROUTES: Mapping[str, tuple[str, ...]] = {
    CONNECT_ROUTE: ("GET", "HEAD"),
    **{path: ("POST",) for path in POST_ROUTES},
}
"""The paths this layer serves, and their methods (``OPTIONS`` too, on every one)."""

DRAIN_LIMIT = 1 << 20
"""Bytes of a refused body read and dropped before answering, at least (`--max-body` if
larger): nginx's ``client_max_body_size`` in the shipped config is 1 MiB."""

_TIMEOUT = f"{RequestTimeout().name}: {RequestTimeout.description}"
_HANDSHAKE_ANSWER = "websocket.http.response"
"""The ASGI extension that lets an app answer a WebSocket handshake with an HTTP response."""
_POLICY_VIOLATION = 1008
_NOT_A_WEBSOCKET = (
    f"Bad Request: {CONNECT_ROUTE} is an event stream (text/event-stream on a plain GET), "
    "not a WebSocket"
)
_HTTP1 = ("1.0", "1.1")


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

    def getlist(self, key: str, /) -> list[str]:
        name = key.lower().encode("latin-1")
        return [value.decode("latin-1") for raw_name, value in self._raw if raw_name == name]

    def items(self) -> list[tuple[str, str]]:
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self._raw]


class ApiEdge:
    """ASGI app: the API routes (`ROUTES`), served by ``api``'s handlers; every other
    request passes to ``rest``."""

    def __init__(self, api: Api, observability: Observability, rest: ASGIFramework) -> None:
        self.api = api
        self.observability = observability
        self.rest = rest
        self.max_body = api.settings.max_body
        self.body_timeout = api.settings.body_timeout
        self.drain_limit = max(DRAIN_LIMIT, self.max_body)

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket" and _route_path(scope) in ROUTES:
                await self._refuse_websocket(scope, send)
            else:
                await self.rest(scope, receive, send)
            return
        path = _route_path(scope)
        methods = ROUTES.get(path)
        if methods is None:
            await self.rest(scope, receive, send)
            return
        exchange = _Exchange(self, scope, path, receive, send)
        method = scope["method"]
        if method in methods:
            if path == CONNECT_ROUTE:
                await self._connect(exchange, scope)
            else:
                await self._post(exchange, scope)
        elif method == "OPTIONS":
            headers = exchange.headers
            allowed = self.api.cors.preflight_headers(
                headers.get("Origin"),
                headers.get("Access-Control-Request-Method"),
                headers.get("Access-Control-Request-Headers"),
            )
            await exchange.answer(204, b"", allowed, None)
        else:
            await exchange.fail(method_not_allowed((*methods, "OPTIONS")), None)

    async def _refuse_websocket(self, scope: WebsocketScope, send: ASGISendCallable) -> None:
        """A WebSocket handshake to an API route: a POST route answers what a GET gets (a
        405), the event stream a 400 that names its transport; as the protocol's JSON
        error where the server lets an app answer a handshake in HTTP (Hypercorn does),
        else a bare refusal (the server's 403)."""
        extensions: Mapping[str, Any] = scope.get("extensions") or {}
        if _HANDSHAKE_ANSWER not in extensions:
            await send({"type": "websocket.close", "code": _POLICY_VIOLATION, "reason": None})
            return
        path = _route_path(scope)
        methods = ROUTES[path]
        refusal = (
            ApiError(400, _NOT_A_WEBSOCKET)
            if "GET" in methods
            else method_not_allowed((*methods, "OPTIONS"))
        )
        refusal.headers["Connection"] = "close"  # Hypercorn closes after a handshake
        as_get: Any = {**scope, "method": "GET"}

        async def answer(message: Any) -> None:  # http.response.* -> websocket.http.response.*
            translated: Any = {**message, "type": "websocket." + message["type"]}
            await send(translated)

        await _Exchange(self, as_get, path, _nothing, answer).fail(refusal, None)

    # -- GET /api/connect -----------------------------------------------------------------
    async def _connect(self, exchange: _Exchange, scope: HTTPScope) -> None:
        room: str | None = None
        headers = exchange.headers
        try:
            query = parse_query(scope["query_string"])
            room = room_from(query)
            client = scope.get("client")
            # A client gone before its answer (a request that waited in a frozen node's
            # socket, say) is not connected: its session's live stream, on another
            # connection, would be replaced by one nobody reads.
            with trio.CancelScope() as connecting:
                async with exchange.until_gone(connecting.cancel):
                    await trio.lowlevel.checkpoint_if_cancelled()  # gone already: no ask
                    answer = await self.api.connect(
                        room,
                        query,
                        _target(scope, exchange.path),
                        headers,
                        headers.getlist("X-Forwarded-For"),
                        client[0] if client else None,
                        scope["http_version"],
                        head=scope["method"] == "HEAD",
                        items=headers.items,
                    )
            if connecting.cancelled_caught:
                return
        except Exception as exc:
            await exchange.fail(exc, room)
            return
        # The answer: its head, then its body as it comes, until the body ends or the
        # client goes away.
        body = answer.body
        if isinstance(body, bytes):
            await exchange.answer(answer.status, body, dict(answer.headers), room)
            return
        slot = answer.slot
        streams = self.api.system.streams
        extensions: Mapping[str, Any] = scope.get("extensions") or {}
        direct: DirectWrite | None = extensions.get(WRITE_NOW)
        try:
            if direct is not None and isinstance(body, Stream) and streams.codec.preamble():
                direct.hold_head()  # `pump` writes the preamble at once: the head goes with it
            await exchange.start(answer.status, dict(answer.headers), room)
            if slot is not None:
                slot.start()
            if isinstance(body, Stream):
                async with exchange.until_gone(lambda: streams.disconnect(body)):
                    if direct is None:
                        await streams.pump(body, exchange.write)
                    else:
                        await streams.pump(body, direct.before(exchange.write), direct)
            else:
                with trio.CancelScope() as relaying:
                    async with exchange.until_gone(relaying.cancel):
                        await _relay(body, exchange.write)
        finally:
            if slot is not None:
                slot.release()
        await exchange.end()

    # -- the POST routes ------------------------------------------------------------------
    async def _post(self, exchange: _Exchange, scope: HTTPScope) -> None:
        headers = exchange.headers
        receive = exchange.receive
        try:
            size = post_body_size(headers, self.max_body)
        except ApiError as refusal:
            if scope["http_version"] not in _HTTP1:  # HTTP/2 ends the stream, not the connection
                await exchange.fail(refusal, None)
                return
            # The whole answer goes out at once; the connection closes once the body is
            # read (or the drain gave up), not while the client is still sending it.
            await exchange.fail(refusal, None, final=False)
            await self._drain(headers, receive)
            await exchange.end()
            return
        room: str | None = None
        try:
            body = await self._body(size, receive)
            if body is None:  # the client went away before its body arrived
                return
            room = room_from(parse_query(scope["query_string"]))
            target = _target(scope, exchange.path)
            client = scope.get("client")
            via = Via(
                "POST",
                target,
                client[0] if client else "",
                self.api.hop(headers, "POST", target),
                headers.items,
                body,
            )
            handler = POST_ROUTES[exchange.path]
            payload, extra = await handler(self.api, room, parse_json_object(body), headers, via)
        except Exception as exc:
            await exchange.fail(exc, room)
            return
        await exchange.answer(200, payload, {"Content-Type": "application/json", **extra}, room)

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


class _Exchange:
    """One request to an API route and its answer: JSON errors, CORS and the request id
    on every answer; each answer counted, timed and logged once its head is out."""

    __slots__ = (
        "edge",
        "headers",
        "method",
        "path",
        "receive",
        "request_id",
        "scope",
        "send",
        "started",
    )

    def __init__(
        self,
        edge: ApiEdge,
        scope: HTTPScope,
        path: str,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
    ) -> None:
        self.started = time.perf_counter()
        self.edge = edge
        self.scope = scope
        self.path = path
        self.method: str = scope["method"]
        self.receive = receive
        self.send = send
        self.headers = AsgiHeaders(scope["headers"])
        self.request_id = sane_request_id(self.headers.get("X-Request-Id")) or new_request_id()
        request_id_var.set(self.request_id)

    async def start(self, status: int, headers: dict[str, str], room: str | None) -> None:
        """The answer's head; its body follows in `send` calls, and `end`."""
        self.edge.api.cors.apply(headers, self.headers.get("Origin"))
        headers["X-Request-Id"] = self.request_id
        await self.send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [_encoded(name, value) for name, value in headers.items()],
            }
        )
        elapsed = time.perf_counter() - self.started
        self.edge.observability.record(self.path, self.method, status, elapsed, room)

    async def write(self, chunk: bytes) -> None:
        """More of the answer's body."""
        await self.send({"type": "http.response.body", "body": chunk, "more_body": True})

    @asynccontextmanager
    async def until_gone(self, gone: Callable[[], None]) -> AsyncIterator[None]:
        """Call ``gone`` if the client goes away while in the block: told by roomkeeper's
        server (`DISCONNECT`), with no task of its own, or by a task waiting in
        ``receive`` under any other server, or for a GET that sends a body (read and
        dropped here, so that it never fills the request's queue)."""
        extensions: Mapping[str, Any] = self.scope.get("extensions") or {}
        departure: Departure | None = extensions.get(DISCONNECT)
        if departure is not None and not _has_body(self.headers):
            departure.on_gone(gone)
            try:
                yield
            finally:
                departure.forget(gone)
            return
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                while (await self.receive())["type"] != "http.disconnect":
                    pass
                gone()

            nursery.start_soon(watch)
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()

    async def end(self, body: bytes = b"") -> None:
        """The answer's last bytes. Never cancelled (see ShieldFinalSend, app.py)."""
        with trio.CancelScope(shield=True):
            await self.send({"type": "http.response.body", "body": body, "more_body": False})

    async def answer(
        self,
        status: int,
        body: bytes,
        headers: dict[str, str],
        room: str | None,
        *,
        final: bool = True,
    ) -> None:
        """A whole answer; ``final=False`` leaves the response open for `end`."""
        if self.method != "HEAD" and status != 204:
            headers["Content-Length"] = str(len(body))
        await self.start(status, headers, room)
        if final:
            await self.end(body)
        else:
            await self.write(body)

    async def fail(self, exc: Exception, room: str | None, *, final: bool = True) -> None:
        """The answer to a refused or failed request (`ApiError`, else a 500)."""
        if not isinstance(exc, ApiError):
            log.error("unexpected error", exc_info=exc)
            exc = ApiError(500, "Internal Server Error")
        body, status, headers = error_response(exc)
        await self.answer(status, body, headers, room, final=final)


_ENCODED: dict[tuple[str, str], tuple[bytes, bytes]] = {}
_STABLE = frozenset(
    {
        "Content-Type",
        "Cache-Control",
        "X-Accel-Buffering",
        "Connection",
        "Vary",
        "Access-Control-Allow-Origin",
        "Access-Control-Expose-Headers",
    }
)
"""Headers whose few values are encoded once and shared by every answer: Hypercorn keeps
an event stream's head for as long as the stream lasts (1.2 KB a stream, each encoded)."""


def _encoded(name: str, value: str) -> tuple[bytes, bytes]:
    pair = _ENCODED.get((name, value))
    if pair is None:
        pair = (name.lower().encode(), value.encode())
        if name in _STABLE and len(_ENCODED) < 1024:
            _ENCODED[(name, value)] = pair
    return pair


async def _relay(chunks: AsyncIterator[bytes], write: Callable[[bytes], Awaitable[None]]) -> None:
    """Write the owning node's stream as it comes, until it ends."""
    try:
        async for chunk in chunks:
            await write(chunk)
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            with trio.CancelScope(shield=True):
                await close()


async def _nothing() -> Any:
    raise AssertionError("a refused handshake reads nothing")


def _has_body(headers: AsgiHeaders) -> bool:
    length = headers.get("Content-Length")
    return headers.get("Transfer-Encoding") is not None or length not in (None, "0")


def _route_path(scope: HTTPScope | WebsocketScope) -> str:
    """The request's path below the app's mount point (``root_path``), as Quart reads it."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :]
    return path


def _target(scope: HTTPScope, path: str) -> str:
    """Path and query as they came: what a forwarded request is signed over."""
    query: bytes = scope["query_string"]
    return path + ("?" + query.decode("latin-1") if query else "")
