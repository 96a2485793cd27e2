"""Values that go into and come out of the room state machine: configuration, inputs,
stream events, effects and results. All frozen; the state machine never mutates them."""

from __future__ import annotations

from typing import Any, TypeAlias

import attrs
from attrs.validators import ge, gt

ID_SPAN = 10**20
"""Event ids of a session lie in ``[key * ID_SPAN, (key + 1) * ID_SPAN)``, so an id alone
names its session (``event_id // ID_SPAN == key``) without being guessable."""


def _redacted(data: dict[str, Any] | bytes) -> str:
    """repr of event data with any token hidden, so effects can be logged safely (encoded
    signal data carries no token: its length is shown, not its bytes)."""
    if isinstance(data, bytes):
        return f"<{len(data)} bytes>"
    return repr({k: "<redacted>" if k == "token" else v for k, v in data.items()})


EventData: TypeAlias = dict[str, Any] | bytes
"""An event's data: a JSON object, or (for signals) the JSON text it is sent as."""


@attrs.frozen
class RoomConfig:
    """Tunable limits of a room (times in seconds)."""

    grace: float = attrs.field(default=30.0, validator=ge(0))
    queue_limit: int = attrs.field(default=256, validator=ge(0))
    rate_burst: float = attrs.field(default=200.0, validator=ge(1))
    rate_refill: float = attrs.field(default=50.0, validator=gt(0))
    replay_limit: int = attrs.field(default=256, validator=ge(0))
    idempotency_window: int = attrs.field(default=256, validator=ge(0))
    max_peers: int = attrs.field(default=64, validator=ge(1))
    session_bytes: int = attrs.field(default=2 << 20, validator=ge(0))
    """Bytes of signals a session may hold (replay history and queue together)."""
    room_bytes: int = attrs.field(default=16 << 20, validator=ge(0))
    """Bytes of signals a room may hold, all its sessions together."""
    durable_history: bool = True
    """Write each replay history entry with its signal's answer; else only through
    ``RoomState.volatile_writes`` (hibernation and shutdown)."""


@attrs.frozen
class FreshSession:
    """Random values for a session, made by the caller; used only if one is created."""

    session_id: str
    token: str = attrs.field(repr=False)
    key: int = attrs.field(validator=ge(0))


@attrs.frozen
class Outgoing:
    """One event for a stream. ``record`` marks a signal that goes into the session's
    replay history once the actor reports its event id with ``RoomState.delivered``;
    ``tag`` is ``<sender>/<request id>`` of a signal posted with an ``id``."""

    event: str
    data: EventData = attrs.field(repr=_redacted)
    record: bool = False
    tag: str | None = None


@attrs.frozen
class Emit:
    """Effect: send an event on the stream of a (connected) session."""

    session_id: str
    event: str
    data: EventData = attrs.field(repr=_redacted)
    record: bool = False
    tag: str | None = None


@attrs.frozen
class EndStream:
    """Effect: send ``bye {"reason": reason}`` on the session's stream and close it."""

    session_id: str
    reason: str


Effect: TypeAlias = Emit | EndStream

ROOM_FULL = 409
"""**extension** The status of a connect that would make a session in a room that holds
``max_peers`` already: the room's state, not the client's rate, is in the way (429 is for
rates), and no credential would help (403 means a wrong token). Resumptions never get it."""


QUEUE_FULL = 503
"""**extension** The status of a signal to a peer without a stream whose queue is full (in
count, or in bytes once no replay history is left to drop); with ``Retry-After``."""


@attrs.frozen
class Connected:
    """A stream was accepted. The actor performs ``effects`` in order (an ``EndStream``
    of a replaced stream comes first), then opens the new stream with ids above
    ``id_floor`` and sends it ``stream_events`` in order."""

    session_id: str
    token: str = attrs.field(repr=False)
    key: int
    resumed: bool
    id_floor: int
    stream_events: list[Outgoing]
    effects: list[Effect]


@attrs.frozen
class Accepted:
    """The request succeeded; perform ``effects`` in order."""

    effects: list[Effect] = attrs.Factory(list)


@attrs.frozen
class Rejected:
    """The request failed with an HTTP status. ``effects`` (roster changes from sessions
    that expired meanwhile) must still be performed."""

    status: int
    reason: str
    retry_after: int | None = None
    effects: list[Effect] = attrs.Factory(list)


@attrs.frozen
class SessionInfo:
    """A read-only view of one session, for introspection."""

    session_id: str
    connected: bool
    expires_at: float | None
    queued: int
    join_seq: int
    id_hwm: int
    replayable: int
    held: int = 0
