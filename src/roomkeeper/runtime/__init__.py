"""The actor runtime: Durable-Object-style actors on one trio process.

It knows nothing of signaling or HTTP. See docs/architecture.md for the model.
"""

from .actor import Actor, ActorContext
from .clock import WallClock
from .errors import (
    Elsewhere,
    Fenced,
    HandlerError,
    MailboxFull,
    Overloaded,
    RuntimeFailure,
    ShuttingDown,
    StorageError,
    UnknownNamespace,
)
from .ids import ActorId
from .leases import Granted, HeldElsewhere, LeaseStore, LeaseTable
from .stats import NamespaceSnapshot
from .storage import MemoryBackend, SQLiteBackend, Storage, StorageBackend
from .streams import StreamCodec, StreamInfo, StreamLimits, WriteNow, Wrote
from .system import ActorStub, ActorSystem, Binding, RuntimeConfig, open_actor_system
from .trace import Observer, TraceEvent

__all__ = [
    "Actor",
    "ActorContext",
    "ActorId",
    "ActorStub",
    "ActorSystem",
    "Binding",
    "Elsewhere",
    "Fenced",
    "Granted",
    "HandlerError",
    "HeldElsewhere",
    "LeaseStore",
    "LeaseTable",
    "MailboxFull",
    "MemoryBackend",
    "NamespaceSnapshot",
    "Observer",
    "Overloaded",
    "RuntimeConfig",
    "RuntimeFailure",
    "SQLiteBackend",
    "ShuttingDown",
    "Storage",
    "StorageBackend",
    "StorageError",
    "StreamCodec",
    "StreamInfo",
    "StreamLimits",
    "TraceEvent",
    "UnknownNamespace",
    "WallClock",
    "WriteNow",
    "Wrote",
    "open_actor_system",
]
