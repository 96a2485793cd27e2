"""A storage backend decorator that times every operation for the metrics."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from prometheus_client import Counter, Histogram

from ..runtime import StorageBackend
from ..runtime.ids import ActorId
from ..runtime.storage import ActorRecord, StoredStream, WriteSet

__all__ = ["StorageMetrics", "TimedBackend"]

T = TypeVar("T")

_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class StorageMetrics:
    """Latency and failures of storage operations. The metrics belong to no registry
    until an app registers them (``Observability`` does, when the backend is timed)."""

    def __init__(self) -> None:
        self.duration = Histogram(
            "roomkeeper_storage_operation_duration_seconds",
            "Time storage operations take (load, commit, names, ...), failures included.",
            ["operation"],
            buckets=_BUCKETS,
            registry=None,
        )
        self.errors = Counter(
            "roomkeeper_storage_errors",
            "Storage operations that raised.",
            ["operation"],
            registry=None,
        )


class TimedBackend:
    """Wraps any ``StorageBackend``; same protocol, each call timed by operation name.
    Anything else (a backend's own attributes) is read from the wrapped backend."""

    def __init__(self, inner: StorageBackend, metrics: StorageMetrics | None = None) -> None:
        self.inner = inner
        self.metrics = metrics if metrics is not None else StorageMetrics()
        self._durations: dict[str, Any] = {}  # operation: its labelled histogram, looked up once

    async def _timed(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        try:
            return await call()
        except Exception:
            self.metrics.errors.labels(operation).inc()
            raise
        finally:
            duration = self._durations.get(operation)
            if duration is None:
                duration = self._durations[operation] = self.metrics.duration.labels(operation)
            duration.observe(time.perf_counter() - started)

    async def open(self) -> None:
        await self._timed("open", self.inner.open)

    async def close(self) -> None:
        await self._timed("close", self.inner.close)

    async def load(self, actor: ActorId) -> ActorRecord:
        return await self._timed("load", lambda: self.inner.load(actor))

    async def commit(self, actor: ActorId, writes: WriteSet) -> None:
        await self._timed("commit", lambda: self.inner.commit(actor, writes))

    async def alarms(self) -> list[tuple[ActorId, float]]:
        return await self._timed("alarms", self.inner.alarms)

    async def streams(self) -> list[StoredStream]:
        return await self._timed("streams", self.inner.streams)

    async def save_positions(self, positions: list[tuple[ActorId, str, int]]) -> None:
        await self._timed("save_positions", lambda: self.inner.save_positions(positions))

    async def names(self, namespace: str, *, after: str = "", limit: int = 100) -> list[str]:
        return await self._timed(
            "names", lambda: self.inner.names(namespace, after=after, limit=limit)
        )

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (copying, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)
