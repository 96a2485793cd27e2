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

__all__ = ["Connect", "Done", "Joined", "Leave", "Refused", "SessionView", "Signal"]


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
