"""The embedded test server (roomkeeper.testing) and its pytest plugin."""

from __future__ import annotations

import errno
import json
import socket
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import trio

import roomkeeper.server
from roomkeeper.client.sse import SseDecoder, SseEvent
from roomkeeper.config import Config, ConfigError
from roomkeeper.runtime import MemoryBackend
from roomkeeper.testing import (
    TEST_DEFAULTS,
    AsyncEmbeddedServer,
    EmbeddedServer,
    embedded_config,
    serve,
    serve_async,
)

pytest_plugins = ["pytester"]


class EventReader:
    """Events of a (sync) event stream, read as they come."""

    def __init__(self, response: httpx.Response) -> None:
        self._chunks = response.iter_raw()
        self._decoder = SseDecoder()
        self._pending: list[SseEvent] = []

    def take(self, count: int) -> list[SseEvent]:
        """The next ``count`` events, heartbeats skipped."""
        while len(self._pending) < count:
            chunk = next(self._chunks)
            self._pending += [e for e in self._decoder.feed(chunk) if e.event != "heartbeat"]
        taken, self._pending = self._pending[:count], self._pending[count:]
        return taken

    def rest(self) -> tuple[list[SseEvent], str]:
        """Every event left, and how the stream ended ("clean" or the error's name)."""
        events, end = self._pending, "clean"
        try:
            for chunk in self._chunks:
                events += self._decoder.feed(chunk)
        except httpx.TransportError as exc:
            end = type(exc).__name__
        return events, end


@contextmanager
def connect(url: str, room: str) -> Iterator[EventReader]:
    with (
        httpx.Client(timeout=10) as client,
        client.stream("GET", f"{url}/api/connect", params={"room": room}) as response,
    ):
        assert response.status_code == 200
        yield EventReader(response)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def port_is_closed(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def embedded_threads() -> int:
    return sum(t.name == "roomkeeper-embedded" for t in threading.enumerate())


# --- the fixtures -------------------------------------------------------------------------


def test_fixture_from_a_sync_test(roomkeeper_server: EmbeddedServer) -> None:
    assert roomkeeper_server.url.startswith("http://127.0.0.1:")
    with connect(roomkeeper_server.url, "sync room") as reader:
        session, roster = reader.take(2)
    assert session.event == "session"
    data = json.loads(session.data)
    assert uuid.UUID(data["session_id"]).version == 4
    assert data["resumed"] is False and data["room"] == "sync room"
    assert roster.event == "roster"
    assert json.loads(roster.data) == {"peers": [data["session_id"]]}


async def test_fixture_from_a_trio_test(roomkeeper_server: EmbeddedServer) -> None:
    async with (
        httpx.AsyncClient(timeout=10) as client,
        client.stream("GET", f"{roomkeeper_server.url}/api/connect?room=trio") as response,
    ):
        assert response.status_code == 200
        decoder = SseDecoder()
        async for chunk in response.aiter_raw():
            events = decoder.feed(chunk)
            if events:
                break
    assert events[0].event == "session"
    assert json.loads(events[0].data)["room"] == "trio"


def test_fixture_uses_the_test_defaults(roomkeeper_server: EmbeddedServer) -> None:
    config = roomkeeper_server.config
    assert (config.heartbeat, config.grace, config.storage) == (1.0, 2.0, "memory")
    assert config.host == "127.0.0.1" and config.port == 0
    assert config.retry_ms < config.grace * 1000


@pytest.mark.roomkeeper(grace=7, rate_burst=3)
def test_marker_overrides_settings(roomkeeper_server: EmbeddedServer) -> None:
    assert roomkeeper_server.config.grace == 7
    assert roomkeeper_server.config.rate_burst == 3
    assert roomkeeper_server.config.heartbeat == TEST_DEFAULTS["heartbeat"]


def test_two_servers_side_by_side(
    roomkeeper_server: EmbeddedServer,
    roomkeeper_server_factory: Callable[..., EmbeddedServer],
    roomkeeper_server_session: EmbeddedServer,
) -> None:
    other = roomkeeper_server_factory(grace=5)
    urls = {roomkeeper_server.url, other.url, roomkeeper_server_session.url}
    assert len(urls) == 3
    assert other.config.grace == 5
    for url in urls:
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    # each has its own rooms
    with connect(other.url, "shared name") as reader:
        reader.take(2)
        assert len(other.sessions("shared name")) == 1
        assert roomkeeper_server.sessions("shared name") == []


def test_stats_and_sessions_from_the_test_thread(roomkeeper_server: EmbeddedServer) -> None:
    with connect(roomkeeper_server.url, "introspect") as reader:
        session, _ = reader.take(2)
        [info] = roomkeeper_server.sessions("introspect")
        assert info.session_id == json.loads(session.data)["session_id"]
        assert info.connected
        [rooms] = roomkeeper_server.stats()
        assert rooms.streams == 1


# --- serve() --------------------------------------------------------------------------------


def test_serve_stops_cleanly_and_closes_its_port() -> None:
    before = embedded_threads()
    with serve() as server:
        port = port_of(server.url)
        assert embedded_threads() == before + 1
        assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert embedded_threads() == before
    assert port_is_closed(port)
    with pytest.raises(RuntimeError, match="not running"):
        server.stats()


def test_streams_get_bye_shutdown_on_exit() -> None:
    with serve() as server, connect(server.url, "bye") as reader:
        reader.take(2)
        server.stop()
        server.stop()  # idempotent
        events, _ = reader.rest()
    last = events[-1]
    assert (last.event, json.loads(last.data)) == ("bye", {"reason": "shutdown"})


def test_streams_end_cleanly_after_bye_shutdown() -> None:
    with serve() as server, connect(server.url, "clean end") as reader:
        reader.take(2)
        server.stop()
        events, end = reader.rest()
    assert events[-1].event == "bye"
    assert end == "clean"


def test_start_up_errors_are_raised_in_the_caller() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(OSError) as caught, serve(port=busy.getsockname()[1]):
            pass
    assert caught.value.errno == errno.EADDRINUSE
    with pytest.raises(ConfigError, match="grace"), serve(grace=-1):
        pass
    with pytest.raises(TypeError, match="no_such_setting"), serve(no_such_setting=1):
        pass


class GatedBackend(MemoryBackend):
    """In-memory storage whose opening waits for ``gate``: a start-up that hangs (as on
    a storage that does not answer) until the test lets it go on."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__()
        self.gate = gate

    async def open(self) -> None:
        await trio.to_thread.run_sync(self.gate.wait, abandon_on_cancel=True)
        await super().open()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_a_start_up_that_times_out_leaves_no_thread_and_no_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gate = threading.Event()
    monkeypatch.setattr(roomkeeper.server, "make_backend", lambda config: GatedBackend(gate))
    port = free_port()
    before = embedded_threads()
    with (
        pytest.raises(TimeoutError, match=r"did not start in 0\.5 s"),
        serve(port=port, start_timeout=0.5),
    ):
        pytest.fail("the block must not run")
    gate.set()  # a start-up still going on would now finish and listen
    assert embedded_threads() == before
    with socket.socket() as again:  # nobody listens there, nobody holds it
        again.bind(("127.0.0.1", port))


def test_a_call_into_the_server_that_times_out_is_cancelled_there(
    roomkeeper_server: EmbeddedServer,
) -> None:
    ended = threading.Event()

    async def hang(system: object) -> None:
        try:
            await trio.sleep_forever()
        finally:
            ended.set()

    with pytest.raises(TimeoutError):
        roomkeeper_server._in_server(hang, timeout=0.2)
    assert ended.wait(10), "the call is still running in the server's loop"


def test_embedded_config_layers() -> None:
    assert embedded_config().grace == TEST_DEFAULTS["grace"]
    assert embedded_config(heartbeat=0.5).heartbeat == 0.5
    base = Config(storage="memory", grace=9)
    assert embedded_config(base, port=0) == Config(storage="memory", grace=9, port=0)


# --- serve_async() --------------------------------------------------------------------------


async def test_serve_async_runs_in_the_callers_loop() -> None:
    async with serve_async(grace=4) as server:
        assert isinstance(server, AsyncEmbeddedServer)
        assert server.config.grace == 4
        port = port_of(server.url)
        async with (
            httpx.AsyncClient(timeout=10) as client,
            client.stream("GET", f"{server.url}/api/connect?room=native") as response,
        ):
            decoder = SseDecoder()
            events: list[SseEvent] = []
            async for chunk in response.aiter_raw():
                events += decoder.feed(chunk)
                if len(events) >= 2:
                    break
            [info] = await server.sessions("native")
            assert info.connected
            assert server.stats()[0].streams == 1
            assert server.system.streams.count("rooms") == 1
    assert port_is_closed(port)


async def test_serve_async_raises_the_blocks_error_unwrapped() -> None:
    with pytest.raises(KeyError, match="mine"):
        async with serve_async():
            raise KeyError("mine")


async def test_serve_async_can_run_beside_a_threaded_server() -> None:
    with serve() as threaded:
        async with serve_async() as native, httpx.AsyncClient() as client:
            for url in (threaded.url, native.url):
                assert (await client.get(f"{url}/healthz")).status_code == 200
            await trio.to_thread.run_sync(threaded.stats)


# --- the plugin -----------------------------------------------------------------------------


def test_importing_the_plugin_is_light() -> None:
    code = textwrap.dedent(
        """
        import sys, threading
        before = threading.active_count()
        import roomkeeper.pytest_plugin
        heavy = ["trio", "hypercorn", "quart", "httpx", "roomkeeper.server",
                 "roomkeeper.testing", "roomkeeper.runtime"]
        print([m for m in heavy if m in sys.modules], threading.active_count() - before)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[] 0"


def test_plugin_is_registered_for_other_projects(pytester: Any) -> None:
    """A project that merely installs roomkeeper gets the fixtures (entry point)."""
    pytester.makepyfile(
        test_app="""
        import httpx

        def test_server(roomkeeper_server):
            assert httpx.get(roomkeeper_server.url + "/healthz").status_code == 200

        def test_factory(roomkeeper_server_factory):
            a, b = roomkeeper_server_factory(), roomkeeper_server_factory(grace=3)
            assert a.url != b.url and b.config.grace == 3
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
