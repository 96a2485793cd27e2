"""A real ``roomkeeper serve`` process on a free port, and clients that talk to it.

Servers run with short timings (heartbeat 1 s, grace 2 s, hibernation after 1 s of quiet)
so that time-based behaviour shows within a test's budget. Modules share one server
through ``shared_server`` (every test uses its own room names; a module that needs other
flags overrides the fixture); tests that need a restart or a signal start their own
through ``server_factory``.

Clients: ``httpx`` for ordinary requests and event streams (``EventStream`` reads SSE
strictly: every event must carry exactly one ``id``, ``event`` and ``data`` line, and ids
must grow), and ``RawConnection`` for what httpx cannot send (chunked or lying bodies,
missing ``Content-Length``, raw bytes in the request target, pipelining).

With ROOMKEEPER_TEST_CLUSTER=1 (CI's second pass), every shared server (``start_shared``)
is a 3-node cluster on PostgreSQL behind nginx (docs/nginx/cluster.conf) instead of one
process, and only the tests that reach the API through a shared server run: see
``pytest_collection_modifyitems`` for what is left out, and why.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import attrs
import httpx
import pytest
import trio

FAST = {"--heartbeat": "1", "--grace": "2", "--hibernate-after": "1"}
# Every test client is 127.0.0.1: the per-address abuse limits would refuse a suite's worth
# of sessions. Tests of those limits pass their own values (flags given win).
MANY_CLIENTS = {
    "--new-sessions-burst": "100000",
    "--new-sessions-per-minute": "1000000",
    "--streams-per-address": "100000",
}
HEARTBEAT = 1.0
GRACE = 2.0

CLUSTER = os.environ.get("ROOMKEEPER_TEST_CLUSTER") == "1"
# The modules whose tests talk to the API through a shared server: the cluster pass runs
# these. The others inspect one process (metrics, admin view, logs, faults injected in it,
# restarts and signals of it, its per-address limits), run no server of this file, or test
# the HTTP front door (raw framing, floods, slow clients: test_abuse, test_fuzz), which is
# nginx in front of a cluster.
CLUSTER_MODULES = {
    "test_connect",
    "test_http",
    "test_leave",
    "test_presence",
    "test_reconnect",
    "test_scenario",
    "test_security",
    "test_signal",
    "test_signal_batch",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In the cluster pass: skip what cannot run against a cluster, saying why."""
    if not CLUSTER:
        return
    for item in items:
        if item.path.parent.name != "integration":
            continue
        module = item.path.stem
        marker = item.get_closest_marker("single_process")
        if module not in CLUSTER_MODULES:
            reason = "inspects or controls one process (module not in CLUSTER_MODULES)"
        elif "server_factory" in getattr(item, "fixturenames", ()):
            reason = "starts its own process, with flags of its own, to restart or signal it"
        elif marker is not None:
            reason = str(marker.args[0] if marker.args else "holds for one process only")
        else:
            continue
        item.add_marker(pytest.mark.skip(reason=f"cluster pass: {reason}"))


# --- the server process --------------------------------------------------------------------


@attrs.define
class ServerProcess:
    """One server process; ``restart`` keeps its flags (and so its storage). Its stderr
    goes to ``log_path`` (a pipe nobody reads could fill and stall the server)."""

    flags: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[str] | None = None
    url: str = ""

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1].rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def start(self, wait: float = 20) -> None:
        args = [sys.executable, "-m", "roomkeeper", "serve", "--port", "0"]
        for flag, value in self.flags.items():
            args += [flag, value]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(
                args, stdout=subprocess.PIPE, stderr=log, text=True, env=env
            )
        line = self._first_line(wait)
        if "serving on" not in line:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"server did not start: {line!r}\n{self.log()}")
        self.url = line.split("serving on ", 1)[1].strip()

    def _first_line(self, wait: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(wait):
                return ""
        return self.proc.stdout.readline()

    def stop(self, sig: int = signal.SIGTERM, wait: float = 15) -> int:
        """Send ``sig`` and wait for the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(wait)

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class ServerFactory(Protocol):
    def __call__(self, **flags: str) -> ServerProcess: ...


def _flags(flags: Mapping[str, str]) -> dict[str, str]:
    """``rate_burst="5"`` -> ``{"--rate-burst": "5"}``; keys that are flags stay as given."""
    return {(k if k.startswith("--") else "--" + k.replace("_", "-")): v for k, v in flags.items()}


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start servers with FAST timings and SQLite storage in ``tmp_path`` (override with
    ``storage="memory"``); flags as keyword arguments (``rate_burst="5"``)."""
    started: list[ServerProcess] = []

    def make(**flags: str) -> ServerProcess:
        storage = str(tmp_path / "rooms.sqlite3")
        merged = {**FAST, **MANY_CLIENTS, "--storage": storage, **_flags(flags)}
        server = ServerProcess(merged, tmp_path / f"server{len(started)}.log")
        started.append(server)
        server.start()
        return server

    yield make
    for server in started:
        server.kill()


@pytest.fixture
def server(server_factory: ServerFactory) -> ServerProcess:
    return server_factory()


def start_shared(tmp: Path, **flags: str) -> ServerProcess:
    merged = {**FAST, **MANY_CLIENTS, "--storage": "memory", **_flags(flags)}
    if CLUSTER:
        from ..cluster.harness import ClusterServer

        return ClusterServer(tmp, merged)  # type: ignore[return-value]
    server = ServerProcess(merged, tmp / "server.log")
    server.start()
    return server


@pytest.fixture(scope="session")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One in-memory server for every module that does not define its own (with other
    flags): each test must use rooms of its own, and leave the server as it found it."""
    server = start_shared(tmp_path_factory.mktemp("shared"))
    yield server
    server.kill()


@pytest.fixture
def base(shared_server: ServerProcess) -> str:
    """The shared server's URL; fails at once (with its log) if an earlier test killed it."""
    assert shared_server.proc is not None
    status = shared_server.proc.poll()
    if status is not None:
        pytest.fail(f"the shared server has died (exit status {status}):\n{shared_server.log()}")
    return shared_server.url


def new_room(label: str = "room") -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def room() -> str:
    return new_room()


# --- event streams -------------------------------------------------------------------------


@attrs.define
class Event:
    id: int
    event: str
    data: Any
    raw_data: str = attrs.field(repr=False, default="")
    at: float = attrs.field(repr=False, default=0.0)  # trio.current_time() when read


_EOL = re.compile(rb"\r\n|\r|\n")


class EventStream:
    """An open SSE response, read event by event.

    Checks what every event must satisfy as it reads: exactly one ``id`` (a decimal
    integer, strictly above the previous one), one ``event`` and one ``data`` line of JSON
    (parsed with the stdlib, which keeps big integers exact). ``events`` keeps every event
    read, heartbeats included; ``retry_first`` tells whether ``retry:`` came before any event.
    """

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.retry: int | None = None
        self.retry_first: bool | None = None
        self.events: list[Event] = []
        self._lines = self._read_lines()

    async def _read_lines(self) -> AsyncIterator[str]:
        """Lines as SSE defines them: ended by CRLF, LF or CR only. (httpx's
        ``aiter_lines`` also splits at U+2028, U+0085 and the like, which JSON strings
        may hold raw.)"""
        buffer = b""
        async for chunk in self.response.aiter_bytes():
            buffer += chunk
            while match := _EOL.search(buffer):
                if match.group() == b"\r" and match.end() == len(buffer):
                    break  # maybe the first half of a CRLF
                line, buffer = buffer[: match.start()], buffer[match.end() :]
                yield line.decode("utf-8")
        if buffer:
            yield buffer.decode("utf-8")

    @property
    def headers(self) -> httpx.Headers:
        return self.response.headers

    @property
    def last_id(self) -> int:
        return self.events[-1].id

    async def _event(self) -> Event:
        fields: dict[str, str] = {}
        async for line in self._lines:
            if line == "":
                if fields:
                    break
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "retry":
                assert value.isdigit(), f"retry: {value!r}"
                self.retry = int(value)
                if self.retry_first is None:
                    self.retry_first = not self.events
                continue
            assert name in ("id", "event", "data"), f"unexpected SSE field {line!r}"
            assert name not in fields, f"field {name!r} repeated in one event: {line!r}"
            fields[name] = value
        else:
            raise EOFError("stream ended")
        assert set(fields) == {"id", "event", "data"}, f"incomplete event {fields}"
        assert fields["id"].isdigit(), f"id is not a decimal integer: {fields['id']!r}"
        event = Event(
            int(fields["id"]),
            fields["event"],
            json.loads(fields["data"]),
            fields["data"],
            trio.current_time(),
        )
        if self.events:
            assert event.id > self.events[-1].id, f"id did not grow: {self.events[-1]} {event}"
        if self.retry_first is None:
            self.retry_first = False
        self.events.append(event)
        return event

    async def next(self, *, skip_heartbeats: bool = True, wait: float = 5) -> Event:
        with trio.fail_after(wait):
            while True:
                event = await self._event()
                if not (skip_heartbeats and event.event == "heartbeat"):
                    return event

    async def until(self, event: str, **kw: Any) -> Event:
        while True:
            got = await self.next(**kw)
            if got.event == event:
                return got

    async def expect_end(self, wait: float = 5) -> list[Event]:
        """Read to the end of the stream; the events (heartbeats too) that came first."""
        seen: list[Event] = []
        with trio.fail_after(wait):
            while True:
                try:
                    seen.append(await self._event())
                except EOFError:
                    return seen


@attrs.define
class Peer:
    """A session: its stream and credentials."""

    stream: EventStream
    session_id: str
    token: str
    room: str
    first: list[Event]
    base: str = ""

    @property
    def resumed(self) -> bool:
        return bool(self.first[0].data["resumed"])

    @property
    def roster(self) -> list[str]:
        return list(self.first[1].data["peers"])

    def creds(self) -> dict[str, str]:
        return {"session_id": self.session_id, "token": self.token}


STREAM_TIMEOUT = httpx.Timeout(10, read=30)


@asynccontextmanager
async def open_stream(client: httpx.AsyncClient, url: str, **kw: Any) -> AsyncIterator[EventStream]:
    async with client.stream("GET", url, timeout=STREAM_TIMEOUT, **kw) as response:
        yield EventStream(response)


@asynccontextmanager
async def join(
    client: httpx.AsyncClient,
    base: str,
    room: str,
    *,
    headers: Mapping[str, str] | None = None,
    **params: str,
) -> AsyncIterator[Peer]:
    """Connect to ``room`` (extra query parameters as keywords) and read the ``session``
    and ``roster`` events, which must come first."""
    async with open_stream(
        client, f"{base}/api/connect", params={"room": room, **params}, headers=headers
    ) as stream:
        assert stream.response.status_code == 200, await stream.response.aread()
        session = await stream.next()
        roster = await stream.next()
        assert (session.event, roster.event) == ("session", "roster")
        yield Peer(
            stream, session.data["session_id"], session.data["token"], room, [session, roster], base
        )


async def connect_refused(
    client: httpx.AsyncClient,
    base: str,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """A connect that must not open a stream: the whole (error) answer."""
    async with client.stream(
        "GET", f"{base}/api/connect", params=params, headers=headers, timeout=STREAM_TIMEOUT
    ) as response:
        assert response.status_code != 200, "expected an error, got a stream"
        await response.aread()
        return response


async def connect_deferred(
    client: httpx.AsyncClient,
    base: str,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> str:
    """A connect the room cannot take now (storage down, overloaded, moving between nodes,
    shutting down): a 200 event stream holding only ``retry:`` and a comment saying why,
    that ends, so an EventSource comes back (it gives up for good on a non-200). The
    comment's text."""
    async with client.stream(
        "GET", f"{base}/api/connect", params=params, headers=headers, timeout=STREAM_TIMEOUT
    ) as response:
        body = (await response.aread()).decode()
    assert response.status_code == 200, body
    assert response.headers["content-type"] == "text/event-stream"
    retry, _, rest = body.partition("\n\n")
    assert retry.startswith("retry: ") and retry[len("retry: ") :].isdigit(), body
    assert rest.startswith(": ") and rest.endswith("\n\n") and rest.count("\n") == 2, body
    return rest[2:-2]


async def post(
    client: httpx.AsyncClient, base: str, path: str, room: str, body: Any, **kw: Any
) -> httpx.Response:
    return await client.post(f"{base}/api/{path}", params={"room": room}, json=body, **kw)


async def send(
    client: httpx.AsyncClient, base: str, frm: Peer, to: Peer | str, signal: Any, **extra: Any
) -> httpx.Response:
    to_id = to if isinstance(to, str) else to.session_id
    body = {"sender": frm.session_id, "to": to_id, "token": frm.token, "signal": signal, **extra}
    return await post(client, base, "signal", frm.room, body)


async def send_ok(
    client: httpx.AsyncClient, base: str, frm: Peer, to: Peer | str, signal: Any, **extra: Any
) -> None:
    response = await send(client, base, frm, to, signal, **extra)
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True}


async def leave(client: httpx.AsyncClient, base: str, peer: Peer, **kw: Any) -> httpx.Response:
    body = {"sender": peer.session_id, "token": peer.token}
    return await post(client, base, "leave", peer.room, body, **kw)


async def sync(client: httpx.AsyncClient, peer: Peer) -> list[Event]:
    """Everything (but heartbeats) on ``peer``'s stream before a marker it sends itself.

    The marker goes through the room after anything asked of it before, so an event caused
    earlier (a roster change, a signal) is in the returned list or never comes at all.
    """
    marker = {"marker": uuid.uuid4().hex}
    await send_ok(client, peer.base, peer, peer, marker)
    before: list[Event] = []
    while True:
        event = await peer.stream.next()
        if event.event == "signal" and event.data["signal"] == marker:
            return before
        before.append(event)


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """``response`` is ``status`` with a JSON ``{"error": "..."}`` body and CORS."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].split(";")[0] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    assert response.headers.get("access-control-allow-origin") == "*"
    return body  # type: ignore[no-any-return]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    async with httpx.AsyncClient(limits=limits, timeout=10) as c:
        yield c


# --- raw HTTP/1.1 --------------------------------------------------------------------------


@attrs.define
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def json(self) -> Any:
        return json.loads(self.body)


def request_bytes(
    method: str,
    target: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    content_length: bool = True,
) -> bytes:
    """An HTTP/1.1 request; ``Content-Length`` is added for a body unless told not to
    (or given in ``headers``). ``target`` is sent as it is (no encoding)."""
    lines = [f"{method} {target} HTTP/1.1", "Host: roomkeeper.test"]
    given = {k.lower() for k in (headers or {})}
    for key, value in (headers or {}).items():
        lines.append(f"{key}: {value}")
    if body is not None and content_length and "content-length" not in given:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


class RawConnection:
    """One TCP connection to the server, reading HTTP/1.1 responses off it by hand."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.eof = False

    @classmethod
    async def open(cls, server: ServerProcess | str) -> RawConnection:
        url = server if isinstance(server, str) else server.url
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        return cls(await trio.open_tcp_stream(host.strip("[]"), int(port)))

    async def __aenter__(self) -> RawConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stream.aclose()

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            chunk = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buffer += chunk
        return True

    async def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if not await self._fill():
                raise EOFError("connection closed mid-body")
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    async def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if not await self._fill():
                raise EOFError("connection closed mid-line")
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    async def response(self, wait: float = 5, *, head: bool = False) -> RawResponse:
        """The next complete response (Content-Length, chunked, or to the close); the
        answer to a HEAD (``head=True``) has no body whatever its headers say."""
        with trio.fail_after(wait):
            while b"\r\n\r\n" not in self.buffer:
                if not await self._fill():
                    raise EOFError(f"connection closed before a response: {self.buffer!r}")
            top, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            status_line, *header_lines = top.decode("latin-1").split("\r\n")
            status = int(status_line.split(" ", 2)[1])
            headers = [
                (k.strip(), v.strip()) for k, _, v in (h.partition(":") for h in header_lines)
            ]
            response = RawResponse(status, headers, b"")
            length = response.header("content-length")
            if head:
                pass
            elif length is not None:
                response.body = await self._take(int(length))
            elif (response.header("transfer-encoding") or "").lower() == "chunked":
                body = b""
                while size := int((await self._line()).split(b";")[0], 16):
                    body += await self._take(size)
                    await self._take(2)
                await self._line()
                response.body = body
            else:
                while await self._fill():
                    pass
                response.body, self.buffer = self.buffer, b""
            return response

    async def closed_within(self, wait: float) -> bool:
        """Whether the server closes the connection (sending nothing more) within ``wait``."""
        with trio.move_on_after(wait):
            while await self._fill():
                pass
            return True
        return False


async def raw_request(server: ServerProcess | str, data: bytes, *, wait: float = 5) -> RawResponse:
    """Send raw request bytes on a fresh connection and read one response."""
    async with await RawConnection.open(server) as conn:
        await conn.send(data)
        return await conn.response(wait)


def wall_ms() -> int:
    return int(time.time() * 1000)
