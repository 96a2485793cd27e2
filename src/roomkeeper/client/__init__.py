"""A Python client for roomkeeper, on httpx and anyio (so under trio or asyncio), for bots
and tests.

    async with join("http://127.0.0.1:8787", "lobby") as peer:
        await peer.send(other_session_id, {"type": "offer", "sdp": "..."})
        async for event in peer:
            match event:
                case SignalReceived(from_=sender, signal=signal): ...
                case Roster(peers=peers): ...

The peer reconnects by itself after a dropped stream, resuming its session with
``Last-Event-ID`` so that no signal is lost or delivered twice; signals carry an ``id``
(the protocol's idempotency extension) so that retried sends are safe. See
docs/testing.md.
"""

from .events import (
    Bye,
    ClientError,
    ConnectionLost,
    Event,
    IceServersUnsupported,
    Reconnected,
    RequestRejected,
    Roster,
    SignalReceived,
)
from .inbox import EndOfEvents
from .peer import Peer, join

__all__ = [
    "Bye",
    "ClientError",
    "ConnectionLost",
    "EndOfEvents",
    "Event",
    "IceServersUnsupported",
    "Peer",
    "Reconnected",
    "RequestRejected",
    "Roster",
    "SignalReceived",
    "join",
]
