"""In-memory storage for tests and embedding; same semantics as SQLite, nothing on disk."""

from __future__ import annotations

import trio

from ..errors import StorageError
from ..ids import ActorId
from .base import UNCHANGED, ActorRecord, StoredStream, WriteSet


class MemoryBackend:
    """Keeps every actor's committed state in dicts. ``fail`` simulates an outage."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, bytes]] = {}
        self.alarm_at: dict[str, tuple[ActorId, float]] = {}
        self.open_streams: dict[str, dict[str, bytes]] = {}
        self.ids: dict[str, ActorId] = {}
        self.positions: dict[tuple[str, str], int] = {}
        self.commits = 0
        self.fail = False

    async def open(self) -> None:
        await trio.lowlevel.checkpoint()

    async def close(self) -> None:
        await trio.lowlevel.checkpoint()

    def _check(self) -> None:
        if self.fail:
            raise StorageError("storage unavailable (simulated)")

    async def load(self, actor: ActorId) -> ActorRecord:
        await trio.lowlevel.checkpoint()
        self._check()
        alarm = self.alarm_at.get(actor.hex)
        return ActorRecord(dict(self.values.get(actor.hex, {})), alarm[1] if alarm else None)

    async def commit(self, actor: ActorId, writes: WriteSet) -> None:
        await trio.lowlevel.checkpoint()
        self._check()
        key = actor.hex
        self.ids[key] = actor
        values = self.values.setdefault(key, {})
        for k in writes.deletes:
            values.pop(k, None)
        values.update(writes.puts)
        if writes.alarm is None:
            self.alarm_at.pop(key, None)
        elif writes.alarm is not UNCHANGED:
            assert isinstance(writes.alarm, float | int)
            self.alarm_at[key] = (actor, float(writes.alarm))
        streams = self.open_streams.setdefault(key, {})
        for s in writes.streams_removed:
            streams.pop(s, None)
            self.positions.pop((key, s), None)
        streams.update(writes.streams_added)
        if not values and not streams and key not in self.alarm_at:
            # Nothing stored, no alarm, no stream: no entry (as SQLite keeps no row).
            del self.values[key], self.open_streams[key], self.ids[key]
        self.commits += 1

    async def alarms(self) -> list[tuple[ActorId, float]]:
        await trio.lowlevel.checkpoint()
        return list(self.alarm_at.values())

    def actors_with_streams(self) -> list[ActorId]:
        """The actors with a stream recorded open."""
        return [self.ids[key] for key, streams in self.open_streams.items() if streams]

    async def streams(self) -> list[StoredStream]:
        await trio.lowlevel.checkpoint()
        return [
            StoredStream(self.ids[key], sid, att, self.positions.get((key, sid), 0))
            for key, streams in self.open_streams.items()
            for sid, att in streams.items()
        ]

    async def save_positions(self, positions: list[tuple[ActorId, str, int]]) -> None:
        await trio.lowlevel.checkpoint()
        self._check()
        for actor, stream_id, last_id in positions:
            if stream_id in self.open_streams.get(actor.hex, {}):
                self.positions[(actor.hex, stream_id)] = last_id

    async def names(self, namespace: str, *, after: str = "", limit: int = 100) -> list[str]:
        await trio.lowlevel.checkpoint()
        found = sorted(
            a.name
            for key, a in self.ids.items()
            if a.namespace == namespace and a.name > after and self.values.get(key)
        )
        return found[:limit]
