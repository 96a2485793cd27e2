"""The signaling room: its rules as a pure state machine (``state``), and its actor."""

from .state import (
    ID_SPAN,
    ROOM_FULL,
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
    "ROOM_FULL",
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
