"""One aiortc peer in its own asyncio program, signaling with roomkeeper.client.

    python aiortc_peer.py URL ROOM offer|answer [--gate] [--timeout SECONDS]

The offerer waits for another session in the room, opens a data channel, sends the offer
and waits for the answer; the answerer waits for an offer and answers it. Over the channel
each side sends one message and waits for the other's. Progress goes to stdout as JSON
lines (``{"step": ...}``) for tests/integration/test_aiortc.py to follow: ``joined``,
``ready`` (the offerer sees its peer), ``offer-sent`` and ``answer-sent`` (with the ICE
candidates sent), ``reconnected``, and ``done`` with the message received. With
``--gate`` the offerer waits for a line on stdin after ``ready`` (so a test can break
something first). Exits 0 once done; a wait longer than ``--timeout`` exits with an error.

ICE runs on host candidates on 127.0.0.1 alone: aioice gathers every interface's
addresses but loopback, so this program makes it gather 127.0.0.1 instead (and nothing
else: no packet leaves the machine). The ICE servers are the ones roomkeeper gives in the
session event (none unless the server is configured with STUN or TURN): aiortc would use a
public STUN server if given no list at all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import aioice.ice
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)

from roomkeeper.client import Peer, Reconnected, Roster, SignalReceived, join

GREETING = {"offer": "hello from the offerer", "answer": "hello from the answerer"}


def emit(step: str, **data: Any) -> None:
    print(json.dumps({"step": step, **data}), flush=True)


def candidates(sdp: str) -> list[str]:
    """``address port type`` of each ICE candidate in ``sdp``."""
    lines = (line.split() for line in sdp.splitlines() if line.startswith("a=candidate:"))
    return [" ".join((f[4], f[5], f[7])) for f in lines]


def loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return ["127.0.0.1"] if use_ipv4 else []


class Signaling:
    """The peer's events, sorted: signals queued, the roster watched, reconnections told."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.signals: asyncio.Queue[SignalReceived] = asyncio.Queue()
        self.roster_changed = asyncio.Event()

    async def follow(self) -> None:
        async for event in self.peer:
            if isinstance(event, SignalReceived):
                self.signals.put_nowait(event)
            elif isinstance(event, Roster):
                self.roster_changed.set()
            elif isinstance(event, Reconnected):
                emit("reconnected", resumed=event.resumed, last_event_id=self.peer.last_event_id)

    async def roster_until(self, done: Any) -> None:
        while not done(self.peer.roster):
            self.roster_changed.clear()
            await self.roster_changed.wait()

    async def signal(self, kind: str) -> SignalReceived:
        while True:
            received = await self.signals.get()
            if received.signal.get("type") == kind:
                return received


def channel_events(channel: RTCDataChannel) -> tuple[asyncio.Event, asyncio.Queue[Any]]:
    opened, messages = asyncio.Event(), asyncio.Queue[Any]()
    channel.on("open", opened.set)
    channel.on("message", messages.put_nowait)
    if channel.readyState == "open":
        opened.set()
    return opened, messages


async def offer(signaling: Signaling, pc: RTCPeerConnection, gate: bool) -> str:
    me = signaling.peer.session_id
    await signaling.roster_until(lambda roster: len(roster) >= 2)
    other = next(session for session in signaling.peer.roster if session != me)
    emit("ready", other=other)
    if gate:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    channel = pc.createDataChannel("chat")
    opened, messages = channel_events(channel)
    await pc.setLocalDescription(await pc.createOffer())  # gathers every candidate first
    await signaling.peer.send(other, {"type": "offer", "sdp": pc.localDescription.sdp})
    emit("offer-sent", candidates=candidates(pc.localDescription.sdp))
    answer = await signaling.signal("answer")
    await pc.setRemoteDescription(RTCSessionDescription(answer.signal["sdp"], "answer"))
    await opened.wait()
    channel.send(GREETING["offer"])
    return str(await messages.get())


async def answer(signaling: Signaling, pc: RTCPeerConnection) -> str:
    offered = await signaling.signal("offer")
    arrived: asyncio.Future[tuple[RTCDataChannel, asyncio.Event, asyncio.Queue[Any]]]
    arrived = asyncio.get_running_loop().create_future()

    @pc.on("datachannel")
    def on_datachannel(channel: RTCDataChannel) -> None:
        arrived.set_result((channel, *channel_events(channel)))  # before any message

    await pc.setRemoteDescription(RTCSessionDescription(offered.signal["sdp"], "offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    await signaling.peer.send(offered.from_, {"type": "answer", "sdp": pc.localDescription.sdp})
    emit("answer-sent", candidates=candidates(pc.localDescription.sdp))
    channel, opened, messages = await arrived
    await opened.wait()
    received = str(await messages.get())
    channel.send(GREETING["answer"])
    # The offerer leaves once it has the reply: stay until then, so that it gets it.
    await signaling.roster_until(lambda roster: offered.from_ not in roster)
    return received


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("room")
    parser.add_argument("role", choices=["offer", "answer"])
    parser.add_argument("--gate", action="store_true")
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args()
    aioice.ice.get_host_addresses = loopback_only
    async with asyncio.timeout(args.timeout), join(args.url, args.room) as peer:
        emit("joined", session_id=peer.session_id)
        signaling = Signaling(peer)
        follower = asyncio.create_task(signaling.follow())
        servers = [RTCIceServer(**server) for server in peer.ice_servers]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        try:
            if args.role == "offer":
                received = await offer(signaling, pc, args.gate)
            else:
                received = await answer(signaling, pc)
        finally:
            follower.cancel()
            await pc.close()
        emit("done", received=received)


if __name__ == "__main__":
    asyncio.run(main())
