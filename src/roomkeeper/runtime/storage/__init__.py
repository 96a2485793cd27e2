"""Storage backends and the transactional view actors use."""

from .base import UNCHANGED, ActorRecord, StorageBackend, StoredStream, WriteSet
from .memory import MemoryBackend
from .shared import ClusterNode, MemoryCluster
from .sqlite import SQLiteBackend
from .view import Storage

__all__ = [
    "UNCHANGED",
    "ActorRecord",
    "ClusterNode",
    "MemoryBackend",
    "MemoryCluster",
    "SQLiteBackend",
    "Storage",
    "StorageBackend",
    "StoredStream",
    "WriteSet",
]
