"""The storage an actor sees: reads from a cache, writes buffered until the message ends."""

from __future__ import annotations

from typing import Any

from ...jsonutil import dumps, loads
from .base import UNCHANGED, WriteSet


def encode(value: Any) -> bytes:
    """JSON text of a value; raises TypeError for anything JSON cannot hold."""
    try:
        # orjson's bytes carry ~4 KB of spare capacity; stored values live long, so copy
        # them to their size.
        return bytes(memoryview(dumps(value)))
    except TypeError as exc:
        raise TypeError(f"storage values must be JSON-serialisable: {exc}") from exc


class Storage:
    """Transactional key-value storage of one actor.

    Everything put or deleted while one message is handled is committed together after
    the handler returns, or dropped if it raises. Values are copied in and out (as JSON),
    so mutating a value read or written does not change what is stored.
    """

    def __init__(self, values: dict[str, bytes], alarm: float | None) -> None:
        self._committed = values
        self._alarm = alarm
        self._writes = WriteSet()

    # -- the actor's API -------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        raw = self._read(key)
        return default if raw is None else loads(raw)

    def put(self, key: str, value: Any) -> None:
        self._writes.puts[key] = encode(value)
        self._writes.deletes.discard(key)

    def put_raw(self, key: str, raw: bytes) -> None:
        """Put a value that is JSON text already, kept as it is (no copy, not parsed)."""
        self._writes.puts[key] = raw
        self._writes.deletes.discard(key)

    def delete(self, key: str) -> None:
        self._writes.puts.pop(key, None)
        self._writes.deletes.add(key)

    def list(self, prefix: str = "") -> dict[str, Any]:
        """Every key starting with ``prefix`` and its value, in key order."""
        keys = {k for k in self._committed if k.startswith(prefix)}
        keys |= {k for k in self._writes.puts if k.startswith(prefix)}
        keys -= self._writes.deletes
        return {k: loads(raw) for k in sorted(keys) if (raw := self._read(k)) is not None}

    def list_raw(self, prefix: str = "") -> dict[str, bytes]:
        """``list``, with each value as its stored JSON text (not parsed)."""
        keys = {k for k in self._committed if k.startswith(prefix)}
        keys |= {k for k in self._writes.puts if k.startswith(prefix)}
        keys -= self._writes.deletes
        return {k: raw for k in sorted(keys) if (raw := self._read(k)) is not None}

    def __len__(self) -> int:
        return len(self.list())

    @property
    def alarm(self) -> float | None:
        pending = self._writes.alarm
        return self._alarm if pending is UNCHANGED else pending  # type: ignore[return-value]

    # -- the runtime's side ----------------------------------------------------------
    def _read(self, key: str) -> bytes | None:
        if key in self._writes.puts:
            return self._writes.puts[key]
        if key in self._writes.deletes:
            return None
        return self._committed.get(key)

    def set_alarm(self, when: float | None) -> None:
        self._writes.alarm = when

    def take(self) -> WriteSet:
        """The pending writes, which the caller commits then ``apply``s; resets the buffer."""
        writes, self._writes = self._writes, WriteSet()
        return writes

    def apply(self, writes: WriteSet) -> None:
        """Fold committed writes into the cache."""
        for k in writes.deletes:
            self._committed.pop(k, None)
        self._committed.update(writes.puts)
        if writes.alarm is not UNCHANGED:
            self._alarm = writes.alarm  # type: ignore[assignment]

    def rollback(self) -> None:
        self._writes = WriteSet()

    @property
    def empty(self) -> bool:
        """Nothing stored, nothing pending and no alarm."""
        return not self._committed and self._alarm is None and not self._writes

    @property
    def pending(self) -> WriteSet:
        return self._writes
