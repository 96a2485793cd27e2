"""The signaling protocol between the HTTP front end and the room actor it asks.

Plain values, below both: ``roomkeeper.http`` (and the simulator's peers) send these
messages to the actors of the ``rooms`` namespace and read their answers; the application
(``actors/signaling/room.py``, loaded through ``roomkeeper.application``) handles them.
``SessionView`` is what a room lists of each session in its ``describe()`` view.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from .jsonutil import dumps

__all__ = [
    "MAX_BATCH",
    "Connect",
    "Done",
    "GetIceServers",
    "IceConfig",
    "Joined",
    "Leave",
    "Outbound",
    "PartlyRefused",
    "Refused",
    "SessionView",
    "Signal",
    "SignalBatch",
]

MAX_BATCH = 32
"""The most signals one ``POST /api/signal`` may carry in its batch form (an extension,
announced as ``max_batch`` in the ``session`` event)."""


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
class Outbound:
    """One signal of a batch: its recipient, payload (encoded, as in `Signal`) and id."""

    to: str
    payload: bytes = attrs.field(converter=_encoded, repr=lambda p: f"<{len(p)} bytes>")
    request_id: str | None = None


@attrs.frozen
class SignalBatch:
    """Several signals of one sender, taken in order up to the first the room refuses;
    answered `Done` (all taken) or `PartlyRefused`."""

    sender: str
    token: str = attrs.field(repr=False)
    signals: tuple[Outbound, ...]


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
class IceConfig:
    """The answer to ``GetIceServers``: an ``RTCConfiguration.iceServers`` list and how
    many seconds its TURN credentials stay valid."""

    ice_servers: list[dict[str, Any]] = attrs.field(repr=False)
    ttl: int


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


@attrs.frozen
class PartlyRefused:
    """A batch not taken whole: its first ``accepted`` signals were taken, the next was
    refused as ``refused`` says, and the ones after it were not looked at."""

    accepted: int
    refused: Refused


@attrs.frozen
class SessionView:
    """What a room shows of one session (``describe()["sessions"]``): never its token,
    nor any event id, since ``Last-Event-ID`` alone resumes a session.

    ``expires_at``: when a disconnected session ends (epoch seconds); ``queued``: signals
    waiting for it; ``join_seq``: its place in join order; ``replayable``: signals kept
    for ``Last-Event-ID`` replay."""

    session_id: str
    connected: bool
    expires_at: float | None
    queued: int
    join_seq: int
    replayable: int

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SessionView:
        return cls(**{f.name: data[f.name] for f in attrs.fields(cls)})
