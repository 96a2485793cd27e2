"""Typed errors the runtime raises to callers of ``ask``."""

from __future__ import annotations


class RuntimeFailure(Exception):
    """Base class of every error the actor runtime raises."""


class Overloaded(RuntimeFailure):
    """The request could not be queued; the caller may retry after ``retry_after`` seconds."""

    retry_after: float = 1.0


class MailboxFull(Overloaded):
    """The actor's mailbox is at capacity."""


class ShuttingDown(Overloaded):
    """The system is stopping and takes no more messages."""


class HandlerError(RuntimeFailure):
    """The actor's handler raised; ``__cause__`` is the original exception."""


class StorageError(RuntimeFailure):
    """The storage backend failed; nothing of the message was committed."""


class UnknownNamespace(RuntimeFailure, KeyError):
    """``system.get`` named a namespace that is not configured."""
