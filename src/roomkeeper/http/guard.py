"""Guards on the connections of roomkeeper's own Hypercorn server, and one extension.

- **One bad connection must never stop the server.** Hypercorn 0.18's trio worker lets an
  exception from one connection's protocol handler escape into the server's nursery,
  which ends ``serve()`` for everyone. The known case is HTTP/2 request data arriving for
  a stream already answered (a 413 decided from the header: pgjones/hypercorn#329). Such
  an error closes that connection only, and is logged.
- **A connection's last request gets its answer.** When a request is the last its
  connection may carry (HTTP/1.0, ``Connection: close``, or an answer that closes), h11
  refuses any byte after it; Hypercorn then answered bytes pipelined behind it with an
  empty ``400`` in place of the answer, or closed while the answer was being sent. Those
  bytes are now left unread until the answer is out; then the connection closes.
- **An answer framed by its length goes out in one write**, head and body, not one for
  each and a third, empty, for its end (`LastRequestConnection`, `send_h11_event`); so
  does an event stream's head, with its first bytes (`DirectWrite.hold_head`).
- **A chunk is framed without h11's state machine** (`LastRequestConnection.frame`): a
  heartbeat or a signal to an idle stream is one chunk, which h11 took 9 µs to frame.
- **A status line has its reason phrase** (``HTTP/1.1 200 OK``, as Cloudflare sends
  it): Hypercorn sent none, and a browser's ``fetch`` then gives an empty
  ``statusText``.
- **What h11 refuses is answered as the API answers.** Hypercorn answered a request h11
  could not parse (malformed, a head too large) with an empty body; it is now the
  protocol's JSON error (`roomkeeper.http.refusal`) with the server's CORS headers and a
  request id (a sane incoming ``X-Request-Id`` of a parsed head is kept). Without a
  parsed head the ``Origin`` is unknown: with a list of origins the answer then allows
  none (``Vary: Origin`` only).
- **The application is told when a client goes away** (`DISCONNECT`), without a task
  waiting in ``receive`` for ``http.disconnect``: an idle event stream then costs one
  task, woken only when it has bytes to write (a wake by cancellation, the only other
  way out of ``receive``, cost 16 to 29 % more CPU per heartbeat: bench/heartbeat_cpu.py).
- **The idle timer is a deadline on the connection's reading, not a task**
  (`roomkeeper.http.reader`): it costs no task and no lock per request; a connection
  with a request waiting is not idle (a server behind in a reconnect storm closed such
  connections unanswered); a connection whose client closed is let go at once (it was
  held, socket and all, until its timer ended).
- **A GET's body may be written straight to its socket** (`direct.WRITE_NOW`), by
  whichever task has its bytes, so that an idle event stream's task is not woken even
  for those, unless the socket's buffer is full.

Hypercorn builds each connection's ``TCPServer`` and ``H11Protocol`` inside ``serve()``,
and each request's task in ``TaskGroup.spawn_app``, so the guards wrap the server's
``run`` and reading, the protocol's ``__init__`` and two sends, and ``spawn_app``. They
are installed once per process and act only for a server whose config is a
`GuardedConfig`: any other Hypercorn server in the process (a host application's own,
say) runs Hypercorn's code unchanged.
"""

from __future__ import annotations

import contextvars
import http
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import h11
from hypercorn.config import Config
from hypercorn.events import RawData
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio import tcp_server
from hypercorn.trio.task_group import TaskGroup

from ..observe.logs import new_request_id, sane_request_id
from . import reader
from .cors import CorsPolicy
from .direct import WRITE_NOW, DirectWrite
from .refusal import explanation, refusal

__all__ = [
    "DISCONNECT",
    "Departure",
    "GuardedConfig",
    "LastRequestConnection",
    "install_guard",
    "send_h11_event",
    "send_refusal",
]

log = logging.getLogger("roomkeeper.http")

DISCONNECT = "roomkeeper.disconnect"
"""The ASGI scope extension of a GET or HEAD request on roomkeeper's server: its
`Departure`. (A request with a body reads it from ``receive``, where its client's
departure shows; its messages then go to it unwrapped.)"""

_DEPARTURE_METHODS = frozenset({"GET", "HEAD"})


class Departure:
    """A request's client going away (Hypercorn tells the request's task
    ``http.disconnect``: the client closed, or the connection broke). Callbacks run once,
    when it happens, or at once if it has happened already."""

    __slots__ = ("_callbacks", "happened")

    def __init__(self) -> None:
        self._callbacks: list[Callable[[], None]] = []
        self.happened = False

    def on_gone(self, callback: Callable[[], None]) -> None:
        if self.happened:
            callback()
        else:
            self._callbacks.append(callback)

    def forget(self, callback: Callable[[], None]) -> None:
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def gone(self) -> None:
        self.happened = True
        while self._callbacks:
            self._callbacks.pop()()


_ORIGINAL = "_roomkeeper_original"
_SERVER: contextvars.ContextVar[Any] = contextvars.ContextVar("roomkeeper_tcp_server")
"""The connection (Hypercorn's ``TCPServer``) whose task this is."""
_ANSWERING = (h11.SEND_RESPONSE, h11.SEND_BODY)
_REASONS = {status.value: status.phrase.encode() for status in http.HTTPStatus}
_CHUNKED: type | None = getattr(getattr(h11, "_writers", None), "ChunkedWriter", None)
"""h11's writer of a chunked body, whose chunks `LastRequestConnection.frame` frames
itself (h11 spends 9 µs on one); None if h11 no longer has it: h11 frames them all."""


class GuardedConfig(Config):
    """Hypercorn's config for a server whose connections are guarded; ``cors_origins``
    as roomkeeper's ``--cors-origins``, for the answers to what h11 refuses; the idle
    timers of its connections (``idle_connections.close_all()`` as it stops)."""

    cors_origins: tuple[str, ...] = ("*",)

    def __init__(self) -> None:
        super().__init__()
        self.idle_connections = reader.IdleConnections()


class LastRequestConnection(h11.Connection):
    """h11's server connection, holding back what follows a connection's last request
    (``PAUSED``, as h11 does after a request that keeps the connection alive) while its
    answer is being sent, instead of refusing it at once; it keeps why it refused a
    request (``refused``). It gives a head without a reason phrase its status's. The
    head of an answer framed by its length, or of one whose first bytes its application
    sends at once (``hold_head``, set by `DirectWrite`), is held (``held_head``) and goes
    out with the answer's first bytes after it, in one write. It frames a chunk of a
    chunked answer itself (`frame`)."""

    refused: str | None = None
    held_head = b""
    hold_head = False

    def frame(self, data: bytes) -> bytes | None:
        """``data`` framed as the next chunk of a chunked answer, after the held head if
        any, as h11 would frame it; None where h11 must (an answer framed otherwise, no
        answer being sent, no bytes). A chunk changes no state of h11's: only its
        writer, which here is stateless, sees it."""
        if (
            not data
            or _CHUNKED is None
            or type(getattr(self, "_writer", None)) is not _CHUNKED
            or self.our_state is not h11.SEND_BODY
        ):
            return None
        framed = b"%x\r\n%b\r\n" % (len(data), data)
        if self.held_head:
            framed, self.held_head = self.held_head + framed, b""
        return framed

    def send(self, event: Any) -> Any:
        kind = type(event)
        if kind is h11.Data:
            framed = self.frame(event.data)
            if framed is not None:
                return framed
        if (kind is h11.Response or kind is h11.InformationalResponse) and not event.reason:
            event = kind(
                headers=event.headers,  # h11's own, validated: not validated again
                status_code=event.status_code,
                http_version=event.http_version,
                reason=_REASONS.get(event.status_code, b""),
            )
        data = super().send(event)
        if kind is h11.Response and (
            self.hold_head or any(name == b"content-length" for name, _ in event.headers)
        ):
            self.held_head, self.hold_head = data or b"", False
            return b""
        if self.held_head:
            data, self.held_head = self.held_head + (data or b""), b""
        return data

    def next_event(self) -> Any:
        if (
            self.their_state is h11.MUST_CLOSE
            and self.our_state in _ANSWERING
            and self.trailing_data[0]
        ):
            return h11.PAUSED
        try:
            return super().next_event()
        except h11.RemoteProtocolError as exc:
            self.refused = str(exc)
            # Without h11's frames: one of them holds the error, which holds it through
            # its traceback, a cycle that kept the whole connection for the collector.
            raise exc.with_traceback(None)  # noqa: B904 - the same error, re-raised


async def send_h11_event(protocol: Any, event: Any) -> None:
    """``H11Protocol._send_h11_event`` of a guarded connection: as Hypercorn's, but
    nothing is sent when h11 has nothing to send (a held head, a length-framed answer's
    end), which saves the send lock and a checkpoint."""
    try:
        data = protocol.connection.send(event)
    except h11.LocalProtocolError:
        if protocol.connection.their_state is not h11.ERROR:
            raise
    else:
        if data:
            await protocol.send(RawData(data=data))


async def send_refusal(protocol: Any, status_code: int) -> None:
    """``H11Protocol._send_error_response`` of a guarded connection: the JSON refusal,
    in one write (an application answering the same request meanwhile cannot slip a
    byte into it; h11 refuses whatever it sends after)."""
    connection = protocol.connection
    config: GuardedConfig = protocol.config
    refused = getattr(connection, "refused", None)
    scope = getattr(protocol.stream, "scope", None)  # the head was read: an app has it
    request_headers = dict(scope["headers"]) if scope is not None else {}
    origin = request_headers.get(b"origin")
    why = explanation(
        status_code,
        refused,
        config.h11_max_incomplete_size,
        head_read=scope is not None,
    )
    given = request_headers.get(b"x-request-id")
    request_id = sane_request_id(None if given is None else given.decode("latin-1"))
    request_id = request_id or new_request_id()
    extra = {
        **CorsPolicy(config.cors_origins).headers_for(
            None if origin is None else origin.decode("latin-1")
        ),
        "X-Request-Id": request_id,
    }
    head, body = refusal(status_code, why, extra)
    events: list[Any] = [
        h11.Response(status_code=status_code, headers=head + config.response_headers("h11"))
    ]
    if scope is None or scope["method"] != "HEAD":
        events.append(h11.Data(data=body))
    events.append(h11.EndOfMessage())
    data = b""
    for event in events:
        try:
            data += connection.send(event) or b""
        except h11.LocalProtocolError:  # as Hypercorn's: h11 refused to send after an error
            if connection.their_state is not h11.ERROR:
                raise
            break
    if connection.held_head:  # h11 refused what followed the head: the head goes alone
        data, connection.held_head = data + connection.held_head, b""
    log.debug(
        "refused before any route: %d %s",
        status_code,
        why,
        extra={"request_id": request_id, "status": status_code},
    )
    if data:
        await protocol.send(RawData(data=data))


def install_guard() -> None:
    """Wrap Hypercorn's trio ``TCPServer``, ``H11Protocol`` and ``TaskGroup`` once per
    process (idempotent)."""
    server_class: Any = tcp_server.TCPServer
    protocol_class: Any = H11Protocol
    group_class: Any = TaskGroup
    if hasattr(server_class, _ORIGINAL):
        return
    run: Callable[[Any], Awaitable[None]] = server_class.run
    init: Callable[..., None] = protocol_class.__init__
    send_event: Callable[[Any, Any], Awaitable[None]] = protocol_class._send_h11_event
    send_error: Callable[[Any, int], Awaitable[None]] = protocol_class._send_error_response
    spawn_app: Callable[..., Awaitable[Callable[[Any], Awaitable[None]]]] = group_class.spawn_app
    read_data: Callable[[Any], Awaitable[None]] = server_class._read_data

    async def guarded_run(self: Any) -> None:
        if not isinstance(self.config, GuardedConfig):
            await run(self)
            return
        _SERVER.set(self)  # this connection's task, and the tasks it starts, see it
        self.idle_task = reader.IdleTimer(
            self.config.idle_connections, self.config.keep_alive_timeout
        )
        try:
            await run(self)
        except Exception:  # an ExceptionGroup of Exceptions too; Cancelled passes
            log.warning("a connection failed inside Hypercorn and was closed", exc_info=True)
        finally:
            # The connection's protocol sends through this server's bound method: a
            # cycle, left to the cyclic collector (frozen with the heap, under
            # --gc-freeze). Every task of the connection has ended: cut it, and the
            # connection is freed here.
            self.__dict__.pop("protocol", None)

    async def guarded_read_data(self: Any) -> None:
        guarded = isinstance(self.config, GuardedConfig)
        await (reader.read_data if guarded else read_data)(self)

    def guarded_init(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if isinstance(self.config, GuardedConfig):
            self.connection = LastRequestConnection(
                h11.SERVER, max_incomplete_event_size=self.config.h11_max_incomplete_size
            )

    # Methods of the class, not bound partials on each connection (a cycle each).
    async def guarded_send_event(self: Any, event: Any) -> None:
        guarded = isinstance(self.config, GuardedConfig)
        await (send_h11_event if guarded else send_event)(self, event)

    async def guarded_send_error(self: Any, status_code: int) -> None:
        guarded = isinstance(self.config, GuardedConfig)
        await (send_refusal if guarded else send_error)(self, status_code)

    async def guarded_spawn_app(
        self: Any, app: Any, config: Config, scope: Any, send: Any
    ) -> Callable[[Any], Awaitable[None]]:
        if (
            not isinstance(config, GuardedConfig)
            or scope["type"] != "http"
            or scope["method"] not in _DEPARTURE_METHODS
        ):
            return await spawn_app(self, app, config, scope, send)
        departure = Departure()
        scope["extensions"][DISCONNECT] = departure
        direct = DirectWrite.of(_SERVER.get(None), scope)
        if direct is not None:
            scope["extensions"][WRITE_NOW] = direct
        put = await spawn_app(self, app, config, scope, send)

        async def put_and_tell(message: Any) -> None:
            if message["type"] == "http.disconnect":
                departure.gone()  # first: the put waits if the task's queue is full
            await put(message)

        return put_and_tell

    setattr(server_class, _ORIGINAL, run)
    setattr(protocol_class, _ORIGINAL, init)
    setattr(group_class, _ORIGINAL, spawn_app)
    server_class.run = guarded_run
    server_class._read_data = guarded_read_data
    protocol_class.__init__ = guarded_init
    protocol_class._send_h11_event = guarded_send_event
    protocol_class._send_error_response = guarded_send_error
    group_class.spawn_app = guarded_spawn_app
