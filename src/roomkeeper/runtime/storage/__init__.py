"""Storage backends and the transactional view actors use."""

from typing import TYPE_CHECKING

from .base import UNCHANGED, ActorRecord, StorageBackend, StoredStream, WriteSet
from .memory import MemoryBackend
from .shared import ClusterNode, MemoryCluster
from .sqlite import SQLiteBackend
from .view import Storage

if TYPE_CHECKING:
    from .postgres import PostgresBackend


def __getattr__(name: str) -> object:
    # Imported on first use: psycopg takes ~0.2 s to import, which one node never needs.
    if name == "PostgresBackend":
        from .postgres import PostgresBackend

        return PostgresBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "UNCHANGED",
    "ActorRecord",
    "ClusterNode",
    "MemoryBackend",
    "MemoryCluster",
    "PostgresBackend",
    "SQLiteBackend",
    "Storage",
    "StorageBackend",
    "StoredStream",
    "WriteSet",
]
