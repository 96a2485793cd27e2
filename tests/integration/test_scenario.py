"""A whole call set-up: five peers in one room negotiate with each other at once (offers,
answers, 32 ICE candidates and an end-of-candidates each way), and every signal arrives
exactly once, unchanged, and in order per sender."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import httpx
import trio

from .conftest import Peer, join, send_ok

PEERS = 5
CANDIDATES = 32


def _sdp(kind: str, frm: int, to: int) -> str:
    lines = [
        "v=0",
        f"o=- {4611731400430051336 + frm} 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=extmap-allow-mixed",
        "a=msid-semantic: WMS",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
        "c=IN IP4 0.0.0.0",
        f"a=ice-ufrag:u{frm}{to}",
        f"a=ice-pwd:{'p' * 22}{frm}{to}",
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
        f"a=setup:{'actpass' if kind == 'offer' else 'active'}",
        "a=rtpmap:111 opus/48000/2",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99",
        "a=rtpmap:96 VP8/90000",
    ]
    return "\r\n".join(lines) + "\r\n"


def _candidate(frm: int, to: int, n: int) -> dict[str, Any]:
    return {
        "type": "candidate",
        "candidate": {
            "candidate": f"candidate:{n} 1 udp {2122260223 - n} 10.0.{frm}.{to} {50000 + n} "
            f"typ host generation 0 ufrag u{frm}{to} network-id 1",
            "sdpMid": str(n % 2),
            "sdpMLineIndex": n % 2,
            "usernameFragment": f"u{frm}{to}",
        },
        "seq": n,
    }


def expected(frm: int, to: int) -> list[dict[str, Any]]:
    """What ``frm`` sends ``to``, in order: the lower index offers, the other answers."""
    kind = "offer" if frm < to else "answer"
    return [
        {"type": kind, "sdp": _sdp(kind, frm, to)},
        *(_candidate(frm, to, n) for n in range(CANDIDATES)),
        {"type": "candidate", "candidate": None},  # end of candidates
    ]


async def test_five_peers_negotiate_at_once(
    client: httpx.AsyncClient, base: str, room: str
) -> None:
    async with AsyncExitStack() as stack:
        peers: list[Peer] = []
        for _ in range(PEERS):
            peers.append(await stack.enter_async_context(join(client, base, room)))
        index = {peer.session_id: n for n, peer in enumerate(peers)}
        ids = [peer.session_id for peer in peers]
        assert peers[-1].roster == ids
        inbox: list[dict[int, list[Any]]] = [{} for _ in peers]
        offered = [[trio.Event() for _ in peers] for _ in peers]  # [to][from]
        per_peer = (PEERS - 1) * (CANDIDATES + 2)

        async def read(n: int) -> None:
            """Everything for peer ``n``: rosters (others joining), then signals only."""
            got = 0
            while got < per_peer:
                event = await peers[n].stream.next(wait=20)
                if event.event == "roster":
                    assert n < PEERS - 1 and event.data["peers"] == ids[: len(event.data["peers"])]
                    continue
                assert event.event == "signal", event
                sender = index[event.data["from"]]
                inbox[n].setdefault(sender, []).append(event.data["signal"])
                if event.data["signal"].get("type") == "offer":
                    offered[n][sender].set()
                got += 1

        async def negotiate(frm: int, to: int) -> None:
            """``frm``'s side towards ``to``: an answerer waits for the offer first."""
            if frm > to:
                await offered[frm][to].wait()
            for signal in expected(frm, to):
                await send_ok(client, base, peers[frm], peers[to], signal)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for n in range(PEERS):
                    nursery.start_soon(read, n)
                for frm in range(PEERS):
                    for to in range(PEERS):
                        if frm != to:
                            nursery.start_soon(negotiate, frm, to)

        for to in range(PEERS):
            assert sorted(inbox[to]) == [frm for frm in range(PEERS) if frm != to]
            for frm, signals in inbox[to].items():
                assert signals == expected(frm, to), (frm, to)
        # Nothing more for anyone: no duplicate came late.
        for peer in peers:
            await send_ok(client, base, peer, peer, {"done": True})
            assert (await peer.stream.next()).data["signal"] == {"done": True}
