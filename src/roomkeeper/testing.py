"""An embedded roomkeeper server for other projects' test suites.

``serve()`` runs a real server (the same storage, actor system and Hypercorn as
``roomkeeper serve``) in a background thread with its own ``trio.run``; ``serve_async()``
runs one in the caller's trio loop. Both listen on a free loopback port, keep rooms in
memory and use short timings (see ``TEST_DEFAULTS``); any `Config` field can be
overridden by keyword. On exit every stream gets ``bye`` ``shutdown`` and the port is
closed. The pytest fixtures in ``roomkeeper.pytest_plugin`` are built on ``serve()``.

This module imports the server lazily: importing it starts nothing.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import asynccontextmanager, contextmanager, suppress
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import trio

from .config import Config
from .groups import reraise_single, unwrap
from .signaling import SessionView

if TYPE_CHECKING:
    from .runtime import ActorSystem, NamespaceSnapshot
    from .server import RunningServer

T = TypeVar("T")

__all__ = [
    "TEST_DEFAULTS",
    "AsyncEmbeddedServer",
    "EmbeddedServer",
    "embedded_config",
    "serve",
    "serve_async",
]

TEST_DEFAULTS: Mapping[str, Any] = {
    "host": "127.0.0.1",
    "port": 0,
    "storage": "memory",
    "heartbeat": 1.0,
    "grace": 2.0,
    "retry_ms": 200,
}
"""What the embedded server changes from `Config`'s defaults: a free loopback port, rooms
in memory, a heartbeat every second, sessions expiring 2 s after their stream drops, and
a 200 ms reconnection delay (well inside the grace period)."""


def embedded_config(config: Config | None = None, **overrides: Any) -> Config:
    """``TEST_DEFAULTS`` over `Config`'s defaults (or over ``config``), then ``overrides``.

    Raises `TypeError` for a name that is not a `Config` field, and `ConfigError` for a
    bad value.
    """
    names = {field.name for field in attrs.fields(Config)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"not roomkeeper settings: {', '.join(unknown)} (known: {sorted(names)})")
    if config is not None:
        return attrs.evolve(config, **overrides)
    return Config(**{**TEST_DEFAULTS, **overrides})


async def _sessions(system: ActorSystem, *, room: str) -> list[SessionView]:
    """The room's sessions as its ``describe()`` view lists them."""
    from .http.app import ROOMS

    view = await system.get(ROOMS, room).describe()
    return [SessionView.from_json(s) for s in (view or {}).get("sessions", [])]


class EmbeddedServer:
    """A server running in a background thread; made by `serve`.

    ``url`` and ``config`` are plain values. The actor system lives in the server's own
    trio loop, so it is not exposed: ``stats()`` and ``sessions()`` fetch a view of it
    through ``trio.from_thread`` and are safe to call from any other thread (not from
    the server's own).
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.url = ""
        self._running: RunningServer | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._error: BaseException | None = None
        self._nursery: trio.Nursery | None = None
        self._scope: trio.CancelScope | None = None
        self._abandoned = False  # start-up timed out: the thread must end, not serve
        self._lock = threading.Lock()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="roomkeeper-embedded", daemon=True)

    # -- the server's thread ---------------------------------------------------------------
    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:
            self._error = exc
        finally:
            self._started.set()

    async def _serve(self) -> None:
        from .server import run

        with trio.CancelScope() as scope:
            with self._lock:
                if self._abandoned:
                    return
                self._token = trio.lowlevel.current_trio_token()
                self._scope = scope
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                running: RunningServer = await nursery.start(
                    partial(run, self.config, handle_signals=False)
                )
                self._running = running
                self.url = running.url
                self._started.set()

    # -- other threads ---------------------------------------------------------------------
    # trio.from_thread refuses to run in a thread that runs a trio loop of its own (a
    # trio test using serve()), so calls into the server go through the thread-safe
    # TrioToken.run_sync_soon and a concurrent.futures.Future.

    def _start(self, timeout: float, stop_timeout: float = 30.0) -> None:
        """Start the thread and wait for the server to listen. If it does not within
        ``timeout``, its start-up is cancelled and its thread joined (no thread, no port
        left behind) before `TimeoutError` is raised."""
        self._thread.start()
        if not self._started.wait(timeout):
            self._abandon(stop_timeout)
            raise TimeoutError(
                f"the embedded roomkeeper server did not start in {timeout} s; "
                "its start-up was cancelled"
            )
        if self._error is not None:
            raise unwrap(self._error)

    def _abandon(self, timeout: float) -> None:
        """Cancel whatever the server's thread is doing and wait for it to end."""
        with self._lock:
            self._abandoned = True
            token, scope = self._token, self._scope
        if token is not None and scope is not None:
            with suppress(trio.RunFinishedError):  # it ended meanwhile
                token.run_sync_soon(scope.cancel)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(
                f"the embedded roomkeeper server did not start, and did not stop in {timeout} s"
            )
        self._error = None  # the cancellation, or a failure that came too late

    def stop(self, timeout: float = 30.0) -> None:
        """Stop gracefully (every stream gets ``bye shutdown``) and wait for the thread.
        Idempotent; raises `RuntimeError` if the server had died of an error."""
        running, token = self._running, self._token
        if running is not None and token is not None and self._thread.is_alive():
            with suppress(trio.RunFinishedError):  # it stopped meanwhile
                token.run_sync_soon(running.stop)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the embedded roomkeeper server did not stop in {timeout} s")
        error, self._error = self._error, None
        if error is not None:
            raise RuntimeError("the embedded roomkeeper server failed") from unwrap(error)

    def _in_server(self, fn: Callable[[ActorSystem], Awaitable[T]], timeout: float = 10.0) -> T:
        """Run ``fn(system)`` in the server's loop and wait for its result; after
        ``timeout`` seconds, cancel it there and raise `TimeoutError`."""
        running, token, nursery = self._running, self._token, self._nursery
        if running is None or token is None or nursery is None or not self._thread.is_alive():
            raise RuntimeError("the embedded roomkeeper server is not running")
        if threading.current_thread() is self._thread:
            raise RuntimeError("call this from a thread other than the server's")
        future: Future[T] = Future()
        scope = trio.CancelScope()

        async def call() -> None:
            try:
                with scope:
                    future.set_result(await fn(running.system))
            except Exception as exc:
                future.set_exception(exc)
            finally:
                if not future.done():  # cancelled: timed out, or the server is stopping
                    future.set_exception(RuntimeError("the embedded server stopped"))

        try:
            token.run_sync_soon(nursery.start_soon, call)
        except trio.RunFinishedError:
            raise RuntimeError("the embedded roomkeeper server is not running") from None
        try:
            return future.result(timeout)
        except FutureTimeout:
            with suppress(trio.RunFinishedError):
                token.run_sync_soon(scope.cancel)
            raise TimeoutError(
                f"the embedded roomkeeper server did not answer in {timeout} s; "
                "the call was cancelled"
            ) from None

    def stats(self) -> list[NamespaceSnapshot]:
        """The runtime's per-namespace counters (live rooms, streams, messages...)."""

        async def snapshot(system: ActorSystem) -> list[NamespaceSnapshot]:
            return system.snapshot()

        return self._in_server(snapshot)

    def sessions(self, room: str) -> list[SessionView]:
        """The sessions of ``room`` in join order: connected or not, queued signals...
        (no tokens)."""
        return self._in_server(partial(_sessions, room=room))

    def __repr__(self) -> str:
        return f"<EmbeddedServer {self.url or 'not started'}>"


@contextmanager
def serve(
    config: Config | None = None, *, start_timeout: float = 30.0, **overrides: Any
) -> Iterator[EmbeddedServer]:
    """Run a roomkeeper server in a background thread for the duration of the block.

    ``with serve(grace=5) as server: ... server.url ...``. Settings are `TEST_DEFAULTS`
    (or ``config``) with ``overrides``. Errors during start-up (a busy fixed port, a bad
    setting) are raised here. On exit the server stops gracefully and its thread is
    joined. Usable from synchronous code; inside a trio test, prefer `serve_async`,
    since this blocks the calling thread while the server starts and stops.
    """
    server = EmbeddedServer(embedded_config(config, **overrides))
    server._start(start_timeout)
    try:
        yield server
    finally:
        server.stop()


@attrs.define(eq=False)
class AsyncEmbeddedServer:
    """A server running in the caller's trio loop; made by `serve_async`.

    ``system`` is the live `ActorSystem`, safe to use from that loop (read-only use is
    advised). ``stop()`` begins a graceful stop; leaving the block waits for it.
    """

    url: str
    config: Config
    system: ActorSystem
    stop: Callable[[], None] = attrs.field(repr=False)

    def stats(self) -> list[NamespaceSnapshot]:
        """The runtime's per-namespace counters (live rooms, streams, messages...)."""
        return self.system.snapshot()

    async def sessions(self, room: str) -> list[SessionView]:
        """The sessions of ``room`` in join order (no tokens)."""
        return await _sessions(self.system, room=room)


@asynccontextmanager
async def serve_async(
    config: Config | None = None, **overrides: Any
) -> AsyncIterator[AsyncEmbeddedServer]:
    """``async with serve_async() as server:`` runs a server in the current trio loop.

    Same settings and guarantees as `serve`. An error in the block is raised as itself,
    not wrapped in an exception group.
    """
    from .server import run

    settings = embedded_config(config, **overrides)
    try:
        async with trio.open_nursery() as nursery:
            running: RunningServer = await nursery.start(
                partial(run, settings, handle_signals=False)
            )
            try:
                yield AsyncEmbeddedServer(running.url, settings, running.system, running.stop)
            finally:
                running.stop()
    except BaseExceptionGroup as group:
        reraise_single(group)
