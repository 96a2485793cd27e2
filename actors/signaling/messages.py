"""What the HTTP front end asks a room, and what the room answers."""

from __future__ import annotations

from typing import Any

import attrs

from roomkeeper.jsonutil import dumps


@attrs.frozen
class Connect:
    """Open an event stream: a new session, or the resumption of one. ``refuse_new`` is
    the answer to give if a new session would be made (the front end's admission policy:
    a missing ticket, a spent per-address budget); resuming is not affected."""

    session_id: str | None = None
    token: str | None = attrs.field(default=None, repr=False)
    last_event_id: int | None = None
    refuse_new: Refused | None = None


def _encoded(payload: dict[str, Any] | bytes) -> bytes:
    """The payload as the JSON text it will be sent as (the room never holds it parsed)."""
    return payload if isinstance(payload, bytes) else bytes(memoryview(dumps(payload)))


@attrs.frozen
class Signal:
    """A signal for a peer; ``payload`` is its JSON object, kept as encoded bytes (an
    already encoded one is taken as it is)."""

    sender: str
    token: str = attrs.field(repr=False)
    to: str
    payload: bytes = attrs.field(converter=_encoded, repr=lambda p: f"<{len(p)} bytes>")
    request_id: str | None = None


@attrs.frozen
class Leave:
    sender: str
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
class Done:
    """A signal or leave was accepted (the ``200 {"success": true}`` answer)."""


@attrs.frozen
class Refused:
    """The room said no: the HTTP status, a human readable reason, and Retry-After."""

    status: int
    reason: str
    retry_after: int | None = None
