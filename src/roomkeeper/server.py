"""Assembly: storage, actor system, HTTP app and Hypercorn, with graceful shutdown."""

from __future__ import annotations

import errno
import gc
import logging
import signal
import socket
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import attrs
import trio
from hypercorn.config import Sockets
from hypercorn.trio import serve
from hypercorn.typing import (
    ASGIFramework,
)

from .admission import Admission, AdmissionError, load_admission
from .application import load_application
from .cluster import NodeHeader, NodeIdentity, node_identity
from .config import MEMORY, Config, ConfigError
from .gcpolicy import FrozenGenerations
from .groups import unwrap
from .http.app import ROOMS, AppSettings, create_app
from .http.codec import SseCodec
from .http.forward import Peers
from .http.guard import GuardedConfig, install_guard
from .http.placement import Placement
from .observe import TimedBackend, setup_logging, trace_to_file
from .observe.metrics import ExtraCounters
from .runtime import (
    ActorSystem,
    LeaseStore,
    MemoryBackend,
    RuntimeConfig,
    SQLiteBackend,
    StorageBackend,
    StorageError,
    StreamLimits,
    open_actor_system,
)

log = logging.getLogger("roomkeeper")

MAX_REQUEST_HEAD = 64 * 1024
"""Bytes of an incomplete request head held per connection (Hypercorn reads 64 KiB at
once): a longer head is answered 431."""


def make_backend(config: Config, node: NodeIdentity | None = None) -> StorageBackend:
    """In-memory for ``memory``, PostgreSQL for a ``postgresql://`` URL (shared with other
    nodes, ``node`` being this one), else a SQLite file (its folder is created)."""
    if config.storage == MEMORY:
        return MemoryBackend()
    if config.clustered:
        from .runtime.storage.postgres import PostgresBackend  # psycopg: only when used

        node = node or node_identity(config)
        return PostgresBackend(
            config.storage, node_id=node.owner, address=node.advertise, lease_ttl=config.lease_ttl
        )
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
        streams=StreamLimits(max_bytes=config.stream_buffer, heartbeat=config.heartbeat),
    )


def app_settings(config: Config) -> AppSettings:
    return AppSettings(
        cors_origins=config.cors_origins,
        max_body=config.max_body,
        body_timeout=config.body_timeout,
        new_sessions_per_minute=config.new_sessions_per_minute,
        new_sessions_burst=config.new_sessions_burst,
        streams_per_address=config.streams_per_address,
        trust_proxy=config.trust_proxy,
        admission=admission(config),
    )


def admission(config: Config) -> Admission | None:
    """The ticket policy of ``--admission``, its key files read; `ConfigError` if unusable."""
    try:
        return load_admission(config.admission, config.jwt_rules)
    except AdmissionError as exc:
        raise ConfigError(f"--admission: {exc}") from None


class _HypercornConfig(GuardedConfig):
    """Hypercorn's settings, and ``TCP_USER_TIMEOUT`` on the listening sockets (accepted
    connections inherit it): data a client leaves unacknowledged, such as the events of a
    stream it does not read, gets its connection aborted by the kernel after
    ``send_timeout`` seconds. Without it a client that never reads holds a connection,
    and a graceful shutdown (Hypercorn shields its writes), for ever."""

    send_timeout: float = 0.0

    def create_sockets(self) -> Sockets:
        sockets = super().create_sockets()
        option = getattr(socket, "TCP_USER_TIMEOUT", None)  # Linux
        if self.send_timeout > 0 and option is not None:
            for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    sock.setsockopt(socket.IPPROTO_TCP, option, int(self.send_timeout * 1000))
        return sockets


def hypercorn_config(config: Config) -> GuardedConfig:
    hc = _HypercornConfig()
    host = f"[{config.host}]" if ":" in config.host else config.host
    hc.bind = [f"{host}:{config.port}"]
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.graceful_timeout = 5.0
    hc.keep_alive_max_requests = 100_000
    # A reconnect storm (every client of a restarted server at once) overflows Hypercorn's
    # default listen backlog of 100: the kernel drops SYNs and the clients' retries back
    # off for up to two minutes. The kernel caps this at net.core.somaxconn.
    hc.backlog = 4096
    # Idle connections close after this; a request's headers must arrive within it too
    # (Hypercorn's idle timer runs until a whole request head is in), which ends slowloris
    # headers. Hypercorn's read_timeout is left off: it would end every event stream whose
    # client sends nothing for that long, which is what every event stream does.
    hc.keep_alive_timeout = config.keep_alive_timeout
    # A request head of up to one read (64 KiB) is always taken whole, however it is split
    # on the way: h11's default (16 KiB) refused a 40 KB head only when it came in pieces.
    hc.h11_max_incomplete_size = MAX_REQUEST_HEAD
    hc.send_timeout = config.send_timeout
    hc.cors_origins = config.cors_origins  # for the JSON answers to what h11 refuses
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
    gc_policy: FrozenGenerations | None = None,
    task_status: trio.TaskStatus[RunningServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until SIGINT/SIGTERM (or ``stop()``): then every stream gets ``bye shutdown``,
    state is persisted, and the function returns. ``gc_policy``, the collector's policy of
    a process of our own (``serve_forever`` installs it), is only counted in /metrics."""
    install_guard()
    application = load_application(config.application)
    node = node_identity(config) if config.clustered else None
    storage = make_backend(config, node)
    backend = TimedBackend(storage)
    stopping = trio.Event()
    async with open_actor_system(
        {ROOMS: application.binding(config)},
        codec=SseCodec(config.retry_ms),
        backend=backend,
        config=runtime_config(config),
    ) as system:
        settings = app_settings(config)
        peers = await _peers(system, node, config)
        app = create_app(system, settings, peers)
        app.observability.enable_admin(config.admin_token)
        if peers is not None:
            _count_forwarding(app.observability.metrics.extra, peers, app.api.placement)
        if gc_policy is not None:
            _count_collections(app.observability.metrics.extra, gc_policy)
        asgi: ASGIFramework = app
        if node is not None:
            asgi = NodeHeader(asgi, node.name)

        hc = hypercorn_config(config)

        async def shutdown_trigger() -> None:
            await stopping.wait()
            # Every stream gets bye and ends cleanly; Hypercorn then finishes the
            # responses in flight and returns.
            await system.shutdown()
            hc.idle_connections.close_all()

        async with trace_to_file(system, config.trace), trio.open_nursery() as nursery:
            if handle_signals:
                nursery.start_soon(_on_signals, stopping.set)

            async def serve_until_drained(
                task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
            ) -> None:
                await serve(
                    asgi,
                    hc,
                    shutdown_trigger=shutdown_trigger,
                    task_status=task_status,
                    mode="asgi",
                )
                nursery.cancel_scope.cancel()  # the signal listener

            binds = await nursery.start(serve_until_drained)
            if node is not None and not node.advertise and isinstance(storage, LeaseStore):
                storage.address = binds[0]  # --port 0: the address is known only now
            task_status.started(RunningServer(binds[0], system, stopping.set))
        if peers is not None:
            with trio.CancelScope(shield=True):
                await peers.aclose()


def _count_collections(extra: ExtraCounters, policy: FrozenGenerations) -> None:
    extra.add(
        "roomkeeper_gc_full_scans",
        "Full collections that unfroze and scanned every object (--gc-freeze on).",
        lambda: policy.full_scans,
    )
    extra.add(
        "roomkeeper_gc_frozen_scans",
        "Full collections that scanned only what came since the last (--gc-freeze on).",
        lambda: policy.frozen_scans,
    )


def _count_forwarding(extra: ExtraCounters, peers: Peers, placement: Placement) -> None:
    extra.add(
        "roomkeeper_requests_forwarded",
        "Requests forwarded to the node that serves their room.",
        lambda: peers.forwarded,
    )
    extra.add(
        "roomkeeper_forward_unreachable",
        "Forwards that found the room's node unreachable (the room was then taken over).",
        lambda: peers.unreachable,
    )
    extra.add(
        "roomkeeper_takeover_wait_seconds",
        "Time requests spent waiting for an unreachable node's lease to expire.",
        lambda: placement.waited,
    )


async def _peers(system: ActorSystem, node: NodeIdentity | None, config: Config) -> Peers | None:
    """How this node forwards to the others, when it shares its storage with them."""
    if node is None or system.leases is None:
        return None
    key = await system.leases.store.shared_secret()
    # A POST's owner answers within a TTL or is frozen (its rooms then move); a relayed
    # stream hears a heartbeat every --heartbeat seconds from a live owner.
    return Peers(
        node.name,
        key,
        answer_timeout=config.lease_ttl,
        idle_timeout=2.5 * config.heartbeat,
    )


async def _on_signals(stop: Callable[[], None]) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            stop()
            return


def serve_forever(config: Config) -> int:
    """Run the server in this process; the exit status (0 after a graceful stop)."""
    setup_logging(config.log_level, config.log_format)

    # Only in a process of our own: an embedded server leaves its host's collector alone.
    policy = FrozenGenerations() if config.gc_freeze == "on" else None

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server: RunningServer = await nursery.start(partial(run, config, gc_policy=policy))
            # What start-up made (modules, the app) lives as long as the process: keep it
            # out of the cyclic collector's full scans, which otherwise grow with it.
            if policy is not None:
                policy.install()
            else:
                gc.collect()
                gc.freeze()
            print(f"roomkeeper serving on {server.url}", flush=True)

    try:
        trio.run(main)
    except BaseException as exc:
        cause = unwrap(exc)
        if isinstance(cause, ConfigError | StorageError):
            message = str(cause)
        elif isinstance(cause, OSError) and cause.errno in _LISTEN_ERRORS:
            message = f"cannot listen on {config.host}:{config.port}: {cause.strerror or cause}"
        else:
            raise
        print(f"roomkeeper: error: {message}", file=sys.stderr)
        return 1
    finally:
        if policy is not None:
            policy.uninstall()
    return 0


_LISTEN_ERRORS = (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES, socket.EAI_NONAME)
