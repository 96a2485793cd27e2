"""What the HTTP front end asks a room, and what the room answers."""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen
class Connect:
    """Open an event stream: a new session, or the resumption of one. ``refuse_new`` is
    the answer to give if a new session would be made (the front end's admission policy:
    a missing ticket, a spent per-address budget); resuming is not affected."""

    session_id: str | None = None
    token: str | None = attrs.field(default=None, repr=False)
    last_event_id: int | None = None
    refuse_new: Refused | None = None


@attrs.frozen
class Signal:
    sender: str
    token: str = attrs.field(repr=False)
    to: str
    payload: dict[str, Any]
    request_id: str | None = None


@attrs.frozen
class Leave:
    sender: str
    token: str = attrs.field(repr=False)


@attrs.frozen
class GetIceServers:
    """Fresh ICE servers (TURN credentials) for a session that proves itself by its token."""

    session_id: str
    token: str = attrs.field(repr=False)


@attrs.frozen
class Inspect:
    """A view of the room without tokens (admin and tests)."""


@attrs.frozen
class Joined:
    """The connect succeeded; the front end serves ``stream_id``."""

    stream_id: str
    session_id: str
    resumed: bool


@attrs.frozen
class IceConfig:
    """The answer to ``GetIceServers``: an ``RTCConfiguration.iceServers`` list and how
    many seconds its TURN credentials stay valid."""

    ice_servers: list[dict[str, Any]] = attrs.field(repr=False)
    ttl: int


@attrs.frozen
class Done:
    """A signal or leave was accepted (the ``200 {"success": true}`` answer)."""


@attrs.frozen
class Refused:
    """The room said no: the HTTP status, a human readable reason, and Retry-After."""

    status: int
    reason: str
    retry_after: int | None = None
