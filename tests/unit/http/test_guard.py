"""The guards on Hypercorn's connections act for roomkeeper's server only: a plain
Hypercorn server in the same process keeps Hypercorn's own behaviour."""

from __future__ import annotations

import logging
from typing import Any

import h11
import pytest
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config
from hypercorn.events import Closed, RawData
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypothesis import given
from hypothesis import strategies as st

from roomkeeper.http.guard import (
    _CHUNKED,
    DISCONNECT,
    Departure,
    GuardedConfig,
    LastRequestConnection,
    install_guard,
    send_h11_event,
)


class _Boom(RuntimeError):
    pass


class _Socket:
    family = 2

    def getpeername(self) -> Any:
        raise _Boom("a connection's handler failed")


class _Stream:
    """A connection whose handling raises inside ``TCPServer.run`` (no SSL attributes)."""

    socket = _Socket()

    async def send_eof(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


def _server(config: Config) -> Any:
    return TCPServer(None, config, None, {}, _Stream())  # type: ignore[arg-type]


async def test_a_plain_hypercorn_server_is_unaffected(caplog: pytest.LogCaptureFixture) -> None:
    install_guard()
    install_guard()  # idempotent
    with pytest.raises(_Boom):  # as without roomkeeper: the error ends its serve()
        await _server(Config()).run()
    with caplog.at_level(logging.WARNING, "roomkeeper.http"):
        await _server(GuardedConfig()).run()  # roomkeeper's: logged, that connection only
    assert "a connection failed inside Hypercorn" in caplog.text


def _protocol(config: Config, sent: list[Any] | None = None) -> Any:
    async def send(event: Any) -> None:
        if sent is not None:
            sent.append(event)

    context = WorkerContext(None)
    return H11Protocol(None, config, context, None, None, False, None, None, send)  # type: ignore[arg-type]


async def _refusal(config: Config) -> bytes:
    """What a connection with ``config`` sends for a malformed request line."""
    install_guard()
    sent: list[Any] = []
    await _protocol(config, sent).handle(RawData(data=b"GET / HTTP/1.1 x\r\nHost: x\r\n\r\n"))
    assert isinstance(sent[-1], Closed)
    return b"".join(event.data for event in sent if isinstance(event, RawData))


async def test_only_roomkeepers_connections_answer_what_h11_refuses_as_json() -> None:
    plain = await _refusal(Config())  # Hypercorn's own: an empty 400
    assert plain.startswith(b"HTTP/1.1 400 ") and plain.endswith(b"\r\n\r\n")
    assert b"content-length: 0\r\n" in plain and b"access-control" not in plain

    guarded = await _refusal(GuardedConfig())
    assert guarded.startswith(b"HTTP/1.1 400 ")
    assert b"access-control-allow-origin: *\r\n" in guarded
    assert guarded.endswith(b'\r\n\r\n{"error":"Bad Request: malformed request line"}')


def test_only_roomkeepers_connections_hold_back_what_follows_a_last_request() -> None:
    install_guard()
    assert type(_protocol(Config()).connection) is h11.Connection
    guarded = _protocol(GuardedConfig()).connection
    assert isinstance(guarded, LastRequestConnection)
    assert guarded._max_incomplete_event_size == GuardedConfig().h11_max_incomplete_size


def test_bytes_after_an_http10_request_wait_for_its_answer() -> None:
    request = b"POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}"
    behind = b"GET / HTTP/1.0\r\n\r\n"
    plain = h11.Connection(h11.SERVER)
    plain.receive_data(request + behind)
    assert isinstance(plain.next_event(), h11.Request)
    assert isinstance(plain.next_event(), h11.Data)
    assert isinstance(plain.next_event(), h11.EndOfMessage)
    with pytest.raises(h11.RemoteProtocolError):  # Hypercorn answers an empty 400
        plain.next_event()

    conn = LastRequestConnection(h11.SERVER)
    conn.receive_data(request + behind)
    assert isinstance(conn.next_event(), h11.Request)
    assert isinstance(conn.next_event(), h11.Data)
    assert isinstance(conn.next_event(), h11.EndOfMessage)
    assert conn.next_event() is h11.PAUSED  # while the answer is owed
    conn.send(h11.Response(status_code=200, headers=[("Content-Length", "2")]))
    assert conn.next_event() is h11.PAUSED
    conn.send(h11.Data(data=b"{}"))
    conn.send(h11.EndOfMessage())
    with pytest.raises(h11.RemoteProtocolError):  # answered: now refused, and closed
        conn.next_event()


def _answering(method: bytes = b"GET") -> LastRequestConnection:
    conn = LastRequestConnection(h11.SERVER)
    conn.receive_data(method + b" / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(conn.next_event(), h11.Request)
    assert isinstance(conn.next_event(), h11.EndOfMessage)
    return conn


def test_a_length_framed_answer_goes_out_in_one_write_with_its_head() -> None:
    conn = _answering()
    head = [("Content-Length", "2")]
    assert conn.send(h11.Response(status_code=200, headers=head, reason=b"OK")) == b""
    answer = conn.send(h11.Data(data=b"{}"))
    assert answer == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    assert conn.send(h11.EndOfMessage()) == b""
    # a HEAD (no body): the head goes with the answer's end
    conn = _answering(b"HEAD")
    assert conn.send(h11.Response(status_code=200, headers=head, reason=b"OK")) == b""
    assert conn.send(h11.EndOfMessage()) == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"


def test_a_streaming_answers_head_goes_out_at_once() -> None:
    conn = _answering()
    head = conn.send(h11.Response(status_code=200, headers=[("Content-Type", "text/plain")]))
    assert head is not None and head.startswith(b"HTTP/1.1 200 ")
    assert b"Transfer-Encoding: chunked" in head
    assert conn.send(h11.Data(data=b"x")) == b"1\r\nx\r\n"


def _answer(conn: h11.Connection, version: bytes, method: bytes, framing: list[Any]) -> bytes:
    conn.receive_data(method + b" / HTTP/" + version + b"\r\nHost: x\r\n\r\n")
    assert isinstance(conn.next_event(), h11.Request)
    assert isinstance(conn.next_event(), h11.EndOfMessage)
    return conn.send(h11.Response(status_code=200, headers=framing, reason=b"OK")) or b""


@given(
    version=st.sampled_from([b"1.1", b"1.0"]),
    method=st.sampled_from([b"GET", b"HEAD"]),
    chunks=st.lists(st.binary(max_size=300), max_size=6),
    length_framed=st.booleans(),
)
def test_a_guarded_connection_frames_a_body_as_h11_does(
    version: bytes, method: bytes, chunks: list[bytes], length_framed: bool
) -> None:
    """Byte for byte, head and chunks and end together, whoever frames the chunks."""
    if method == b"HEAD":
        chunks = []  # h11 refuses any body bytes
    framing = [("Content-Length", str(sum(map(len, chunks))))] if length_framed else []
    plain, guarded = h11.Connection(h11.SERVER), LastRequestConnection(h11.SERVER)
    wire = {id(conn): _answer(conn, version, method, framing) for conn in (plain, guarded)}
    for event in [h11.Data(data=chunk) for chunk in chunks] + [h11.EndOfMessage()]:
        for conn in (plain, guarded):
            wire[id(conn)] += conn.send(event) or b""
    assert wire[id(guarded)] == wire[id(plain)]


def test_a_chunk_of_a_chunked_answer_is_framed_without_h11_by_the_installed_h11() -> None:
    assert _CHUNKED is not None  # else h11 frames every chunk, at 9 µs each
    conn = _answering()
    conn.send(h11.Response(status_code=200, headers=[]))
    assert conn.frame(b"hello") == b"5\r\nhello\r\n" and conn.frame(b"") is None
    length_framed = _answering()
    length_framed.send(h11.Response(status_code=200, headers=[("Content-Length", "5")]))
    assert length_framed.frame(b"hello") is None  # h11 counts what it sends


async def test_nothing_is_sent_when_h11_has_nothing_to_send() -> None:
    sent: list[Any] = []

    class Protocol:
        connection = _answering()

        async def send(self, event: Any) -> None:
            sent.append(event)

    protocol = Protocol()
    await send_h11_event(protocol, h11.Response(status_code=204, headers=[("Content-Length", "0")]))
    assert sent == []  # the head waits for the end
    await send_h11_event(protocol, h11.EndOfMessage())
    assert len(sent) == 1 and isinstance(sent[0], RawData)
    assert sent[0].data.startswith(b"HTTP/1.1 204 ")


def test_a_departure_runs_its_callbacks_once_and_at_once_if_it_has_happened() -> None:
    departure, calls = Departure(), []

    def ended_first() -> None:
        calls.append("forgotten")

    departure.on_gone(lambda: calls.append("stream"))
    departure.on_gone(ended_first)
    departure.forget(ended_first)  # its block ended before the client left
    departure.gone()
    departure.gone()
    assert calls == ["stream"]
    # registered after the client went away (while the room was still answering, say)
    departure.on_gone(lambda: calls.append("late"))
    assert calls == ["stream", "late"]


async def test_only_a_get_or_head_on_roomkeepers_server_is_given_a_departure() -> None:
    """A request with a body sees its client leave in ``receive``: its messages go to it
    unwrapped, and it has no `Departure`."""
    install_guard()
    seen: dict[tuple[str, bool], Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen[(scope["method"], scope["guarded"])] = scope["extensions"].get(DISCONNECT)

    async def send(message: Any) -> None:
        pass

    async with TaskGroup() as group:
        for guarded in (True, False):
            config = GuardedConfig() if guarded else Config()
            for method in ("GET", "HEAD", "POST", "OPTIONS"):
                scope = {"type": "http", "method": method, "extensions": {}, "guarded": guarded}
                await group.spawn_app(ASGIWrapper(app), config, scope, send)  # type: ignore[arg-type]
    assert {key for key, departure in seen.items() if isinstance(departure, Departure)} == {
        ("GET", True),
        ("HEAD", True),
    }
    assert len(seen) == 8
