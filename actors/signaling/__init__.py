"""The signaling room: its rules as a pure state machine (``state``), and its actor."""

from .state import (
    ID_SPAN,
    Accepted,
    Connected,
    Effect,
    Emit,
    EndStream,
    FreshSession,
    Outgoing,
    Rejected,
    RoomConfig,
    RoomState,
    SessionInfo,
)

__all__ = [
    "ID_SPAN",
    "Accepted",
    "Connected",
    "Effect",
    "Emit",
    "EndStream",
    "FreshSession",
    "Outgoing",
    "Rejected",
    "RoomConfig",
    "RoomState",
    "SessionInfo",
]
