"""What the HTTP front end asks a room, and what the room answers.

The protocol's messages live below both, in ``roomkeeper.signaling`` (the front end must
not import the application); they are named here too for the room's code. ``Inspect`` is
the room's own: a full view of its sessions for in-process tests.
"""

from __future__ import annotations

import attrs

from roomkeeper.signaling import (
    Connect,
    Done,
    GetIceServers,
    IceConfig,
    Joined,
    Leave,
    Outbound,
    PartlyRefused,
    Refused,
    Signal,
    SignalBatch,
)

__all__ = [
    "Connect",
    "Done",
    "GetIceServers",
    "IceConfig",
    "Inspect",
    "Joined",
    "Leave",
    "Outbound",
    "PartlyRefused",
    "Refused",
    "Signal",
    "SignalBatch",
]


@attrs.frozen
class Inspect:
    """Every session's ``SessionInfo`` (event ids included, never tokens), for tests."""
