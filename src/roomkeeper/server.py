"""Assembly: storage, actor system, HTTP app and Hypercorn, with graceful shutdown."""

from __future__ import annotations

import errno
import logging
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from roomkeeper_actors.signaling.room import RoomEnv

from .config import MEMORY, Config, ConfigError
from .http.app import ROOMS, AppSettings, create_app
from .http.codec import SseCodec
from .observe import TimedBackend, observability, setup_logging, trace_to_file
from .runtime import (
    ActorSystem,
    Binding,
    MemoryBackend,
    RuntimeConfig,
    SQLiteBackend,
    StorageBackend,
    StorageError,
    StreamLimits,
    open_actor_system,
)

log = logging.getLogger("roomkeeper")

ROOM_ACTOR = "roomkeeper_actors.signaling.room:Room"


def make_backend(config: Config) -> StorageBackend:
    """In-memory for ``memory``, else a SQLite file (its folder is created)."""
    if config.storage == MEMORY:
        return MemoryBackend()
    path = Path(config.storage).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--storage: cannot create {path.parent}: {exc.strerror}") from exc
    return SQLiteBackend(path)


def runtime_config(config: Config) -> RuntimeConfig:
    return RuntimeConfig(
        mailbox_size=config.mailbox_size,
        hibernate_after=config.hibernate_after,
        streams=StreamLimits(heartbeat=config.heartbeat),
    )


def hypercorn_config(config: Config) -> HypercornConfig:
    hc = HypercornConfig()
    host = f"[{config.host}]" if ":" in config.host else config.host
    hc.bind = [f"{host}:{config.port}"]
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.graceful_timeout = 5.0
    hc.keep_alive_max_requests = 100_000
    return hc


@attrs.define
class RunningServer:
    """What ``run`` hands to ``task_status.started``: the URL and the live system."""

    url: str
    system: ActorSystem
    stop: Callable[[], None]


async def run(
    config: Config,
    *,
    handle_signals: bool = True,
    task_status: trio.TaskStatus[RunningServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until SIGINT/SIGTERM (or ``stop()``): then every stream gets ``bye shutdown``,
    state is persisted, and the function returns."""
    backend = TimedBackend(make_backend(config))
    env = RoomEnv.from_config(config)
    stopping = trio.Event()
    async with open_actor_system(
        {ROOMS: Binding(ROOM_ACTOR, env=env)},
        codec=SseCodec(config.retry_ms),
        backend=backend,
        config=runtime_config(config),
    ) as system:
        app = create_app(system, AppSettings(config.cors_origins, config.max_body))
        observability(app).enable_admin(config.admin_token)

        async def shutdown_trigger() -> None:
            await stopping.wait()
            # Every stream gets bye and ends cleanly; Hypercorn then finishes the
            # responses in flight and returns.
            await system.shutdown()

        async with trace_to_file(system, config.trace), trio.open_nursery() as nursery:
            if handle_signals:
                nursery.start_soon(_on_signals, stopping.set)

            async def serve_until_drained(
                task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
            ) -> None:
                hc = hypercorn_config(config)
                await serve(app, hc, shutdown_trigger=shutdown_trigger, task_status=task_status)
                nursery.cancel_scope.cancel()  # the signal listener

            binds = await nursery.start(serve_until_drained)
            task_status.started(RunningServer(binds[0], system, stopping.set))


async def _on_signals(stop: Callable[[], None]) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            stop()
            return


def serve_forever(config: Config) -> int:
    """Run the server in this process; the exit status (0 after a graceful stop)."""
    setup_logging(config.log_level, config.log_format)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server: RunningServer = await nursery.start(run, config)
            print(f"roomkeeper serving on {server.url}", flush=True)

    try:
        trio.run(main)
    except BaseException as exc:
        cause = _leaf(exc)
        if isinstance(cause, ConfigError | StorageError):
            message = str(cause)
        elif isinstance(cause, OSError) and cause.errno in _LISTEN_ERRORS:
            message = f"cannot listen on {config.host}:{config.port}: {cause.strerror or cause}"
        else:
            raise
        print(f"roomkeeper: error: {message}", file=sys.stderr)
        return 1
    return 0


_LISTEN_ERRORS = (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES, socket.EAI_NONAME)


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
