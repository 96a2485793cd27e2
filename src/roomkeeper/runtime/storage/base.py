"""The storage backend interface: what a SQLite file, memory or a shared database provide."""

from __future__ import annotations

from typing import Protocol

import attrs

from ..ids import ActorId


class _Unchanged:
    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED = _Unchanged()
"""The alarm field of a ``WriteSet`` that leaves the stored alarm as it is."""


@attrs.define
class WriteSet:
    """Everything one message wrote, committed atomically or not at all.

    Values and attachments are JSON text (bytes); ``alarm`` is epoch seconds, None to
    delete it, or ``UNCHANGED``.
    """

    puts: dict[str, bytes] = attrs.Factory(dict)
    deletes: set[str] = attrs.Factory(set)
    alarm: float | _Unchanged | None = UNCHANGED
    streams_added: dict[str, bytes] = attrs.Factory(dict)
    streams_removed: set[str] = attrs.Factory(set)

    def __bool__(self) -> bool:
        return bool(
            self.puts
            or self.deletes
            or self.alarm is not UNCHANGED
            or self.streams_added
            or self.streams_removed
        )


@attrs.frozen
class StoredStream:
    """A stream that was open when its actor last committed (found again at start-up)."""

    actor: ActorId
    stream_id: str
    attachment: bytes
    last_id: int = 0


@attrs.frozen
class ActorRecord:
    """An actor's stored state as loaded on activation. ``streams``: streams stored as
    open by a node that no longer serves the actor; only a backend shared between nodes
    returns any (one process reports its own at start-up, through ``streams()``)."""

    values: dict[str, bytes]
    alarm: float | None
    streams: tuple[StoredStream, ...] = ()


class StorageBackend(Protocol):
    """Durable state of every actor. Each call is atomic; ``commit`` returns only once
    the writes are durable (the output gate waits on it). Errors raise ``StorageError``."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def load(self, actor: ActorId) -> ActorRecord: ...

    async def commit(self, actor: ActorId, writes: WriteSet) -> None: ...

    async def alarms(self) -> list[tuple[ActorId, float]]:
        """Every stored alarm, so that they fire after a restart."""
        ...

    async def streams(self) -> list[StoredStream]:
        """Streams left open by the previous process: their actors are told they closed."""
        ...

    async def save_positions(self, positions: list[tuple[ActorId, str, int]]) -> None:
        """Record the last event id sent on each still-open stream (at shutdown, after
        the goodbye), so a restarted actor's ids continue above it."""
        ...

    async def names(self, namespace: str, *, after: str = "", limit: int = 100) -> list[str]:
        """Names of stored actors of a namespace, in order, those after ``after`` (paging)."""
        ...
