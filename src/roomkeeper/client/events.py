"""What a `Peer` yields while iterating, and the errors it raises."""

from __future__ import annotations

from typing import Any, TypeAlias

import attrs

__all__ = [
    "Bye",
    "ClientError",
    "ConnectionLost",
    "Event",
    "IceServersUnsupported",
    "Reconnected",
    "RequestRejected",
    "Roster",
    "SignalReceived",
]


@attrs.frozen
class Roster:
    """The room's sessions changed: every session id in join order, yours included."""

    peers: tuple[str, ...]


@attrs.frozen
class SignalReceived:
    """A peer sent you ``signal`` (the JSON object it posted, unchanged)."""

    from_: str
    signal: Any
    event_id: int | None = None


@attrs.frozen
class Bye:
    """The server ended the stream on purpose: ``"left"`` or ``"replaced"`` (the last
    event: iteration stops), or ``"shutdown"`` (the client reconnects)."""

    reason: str


@attrs.frozen
class Reconnected:
    """The stream came back after a drop. ``resumed`` is False when the server had
    expired the session meanwhile: you have a new ``session_id`` (and lost what was
    sent to the old one)."""

    session_id: str
    resumed: bool


Event: TypeAlias = Roster | SignalReceived | Bye | Reconnected


class ClientError(Exception):
    """Base of the client's errors."""


class RequestRejected(ClientError):
    """The server answered with an error status (``{"error": reason}``)."""

    def __init__(
        self,
        status: int,
        reason: str,
        retry_after: float | None = None,
        accepted: int | None = None,
    ) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason
        self.retry_after = retry_after
        self.accepted = accepted
        """For `Peer.send_batch`: how many of its signals were taken before this one."""


class IceServersUnsupported(RequestRejected):
    """The server has no ``POST /api/ice-servers`` (it answered 404): it cannot refresh
    ICE servers, and ``Peer.ice_servers`` stays what the ``session`` event gave."""


class ConnectionLost(ClientError):
    """The server could not be reached, after the retries the client allows itself."""
