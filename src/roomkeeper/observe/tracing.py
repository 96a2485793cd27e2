"""``--trace FILE``: the runtime's lifecycle trace, written while the server runs."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

import trio

from ..config import ConfigError
from ..runtime import ActorSystem, Observer, TraceEvent
from ..runtime.tracefile import TraceWriter

__all__ = ["FLUSH_EVERY", "Guarded", "trace_to_file"]

log = logging.getLogger("roomkeeper.trace")

FLUSH_EVERY = 1.0
"""Seconds between flushes: a reader following the file lags at most this much."""


@asynccontextmanager
async def trace_to_file(
    system: ActorSystem, path: str | Path, *, flush_every: float = FLUSH_EVERY
) -> AsyncIterator[TraceWriter | None]:
    """Write every lifecycle event of ``system`` to ``path`` (emptied first) as JSON
    lines for the duration of the block; flushed every ``flush_every`` seconds and on
    exit, when the observer is removed before the file is closed. An empty ``path``
    writes nothing (and yields None)."""
    if not str(path):
        yield None
        return
    target, out = _open(path)
    writer = TraceWriter(out)
    observer = Guarded(writer)
    system.observers.append(observer)
    log.info("writing the lifecycle trace", extra={"trace": str(target)})
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_flush_periodically, out, flush_every)
            try:
                yield writer
            finally:
                nursery.cancel_scope.cancel()
    finally:
        if observer in system.observers:
            system.observers.remove(observer)
        try:
            out.close()  # flushes
        except OSError as exc:
            log.error("cannot finish the trace file: %s", exc.strerror or exc)
        log.info("trace closed", extra={"trace_events": writer.count})


def _open(path: str | Path) -> tuple[Path, IO[bytes]]:
    """The trace file, emptied, its folder made; a ``ConfigError`` if that fails."""
    target = Path(path).expanduser()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return target, target.open("wb", buffering=1 << 16)
    except OSError as exc:
        raise ConfigError(f"--trace: cannot write {target}: {exc.strerror or exc}") from exc


class Guarded:
    """An observer that never raises into the runtime: the first error (a full disk,
    say) is logged and the inner observer is called no more. The runtime calls observers
    inline, in the middle of its own bookkeeping, so an exception there would fail the
    actor's message instead of the trace."""

    def __init__(self, inner: Observer) -> None:
        self.inner = inner
        self.failed = False

    def __call__(self, event: TraceEvent) -> None:
        if self.failed:
            return
        try:
            self.inner(event)
        except Exception:
            self.failed = True
            log.exception("the trace observer failed; no more trace events are written")


async def _flush_periodically(out: IO[bytes], every: float) -> None:
    while True:
        await trio.sleep(every)
        try:
            out.flush()
        except (OSError, ValueError) as exc:  # a full disk must not stop the server
            log.warning("cannot flush the trace file: %s", exc)
