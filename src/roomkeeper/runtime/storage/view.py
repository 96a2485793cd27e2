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
        self._writes: WriteSet | None = None  # made on the first write of a message

    # -- the actor's API -------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        raw = self._read(key)
        return default if raw is None else loads(raw)

    def put(self, key: str, value: Any) -> None:
        self.put_raw(key, encode(value))

    def put_raw(self, key: str, raw: bytes) -> None:
        """Put a value that is JSON text already, kept as it is (no copy, not parsed)."""
        writes = self.pending
        writes.puts[key] = raw
        writes.deletes.discard(key)

    def delete(self, key: str) -> None:
        writes = self.pending
        writes.puts.pop(key, None)
        writes.deletes.add(key)

    def list(self, prefix: str = "") -> dict[str, Any]:
        """Every key starting with ``prefix`` and its value, in key order."""
        return {k: loads(raw) for k, raw in self.list_raw(prefix).items()}

    def list_raw(self, prefix: str = "") -> dict[str, bytes]:
        """``list``, with each value as its stored JSON text (not parsed)."""
        keys = {k for k in self._committed if k.startswith(prefix)}
        writes = self._writes
        if writes is not None:
            keys |= {k for k in writes.puts if k.startswith(prefix)}
            keys -= writes.deletes
        return {k: raw for k in sorted(keys) if (raw := self._read(k)) is not None}

    def __len__(self) -> int:
        return len(self.list_raw())

    @property
    def alarm(self) -> float | None:
        writes = self._writes
        if writes is None or writes.alarm is UNCHANGED:
            return self._alarm
        return writes.alarm  # type: ignore[return-value]

    # -- the runtime's side ----------------------------------------------------------
    def _read(self, key: str) -> bytes | None:
        writes = self._writes
        if writes is not None:
            if key in writes.puts:
                return writes.puts[key]
            if key in writes.deletes:
                return None
        return self._committed.get(key)

    def set_alarm(self, when: float | None) -> None:
        self.pending.alarm = when

    def take(self) -> WriteSet | None:
        """The pending writes, which the caller commits then ``apply``s, or None if the
        message wrote nothing (no `WriteSet` is made for it); resets the buffer."""
        writes, self._writes = self._writes, None
        return writes if writes else None

    def apply(self, writes: WriteSet) -> None:
        """Fold committed writes into the cache."""
        for k in writes.deletes:
            self._committed.pop(k, None)
        self._committed.update(writes.puts)
        if writes.alarm is not UNCHANGED:
            self._alarm = writes.alarm  # type: ignore[assignment]

    def rollback(self) -> None:
        self._writes = None

    @property
    def empty(self) -> bool:
        """Nothing stored, nothing pending and no alarm."""
        return not self._committed and self._alarm is None and not self._writes

    @property
    def pending(self) -> WriteSet:
        """The writes of the message in hand (made on first use)."""
        writes = self._writes
        if writes is None:
            writes = self._writes = WriteSet()
        return writes
