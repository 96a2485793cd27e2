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


class Fenced(StorageError):
    """A commit was refused because this node no longer holds the actor's lease (another
    node took it over); nothing was written. The activation must be dropped."""


class Elsewhere(RuntimeFailure):
    """The actor is live on another node: ``address`` is where that node serves, and the
    lease runs ``expires_in`` seconds more unless renewed (by the store's clock)."""

    def __init__(self, owner: str, address: str, expires_in: float) -> None:
        super().__init__(f"actor is served by node {owner} at {address}")
        self.owner = owner
        self.address = address
        self.expires_in = expires_in


class UnknownNamespace(RuntimeFailure, KeyError):
    """``system.get`` named a namespace that is not configured."""
