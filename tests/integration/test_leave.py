"""POST /api/leave: the session ends at once (bye left, roster to peers, token dead),
from a fetch or a sendBeacon, with the same 411/413/400/403 rules as a signal."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from .conftest import (
    Peer,
    assert_error,
    join,
    leave,
    new_room,
    post,
    send,
    sync,
)


async def _assert_left(client: httpx.AsyncClient, base: str, gone: Peer, *stayed: Peer) -> None:
    """``gone``'s stream ended with ``bye left``; the others got the new roster; ``gone``'s
    token is dead and it is no longer a recipient."""
    bye = await gone.stream.next()
    assert (bye.event, bye.data) == ("bye", {"reason": "left"})
    assert await gone.stream.expect_end() == []  # closed right after bye
    peers = [p.session_id for p in stayed]
    for peer in stayed:
        event = await peer.stream.next()
        assert (event.event, event.data) == ("roster", {"peers": peers})
    if stayed:
        assert_error(await send(client, base, gone, stayed[0], {"x": 1}), 403)
        assert_error(await send(client, base, stayed[0], gone, {"x": 1}), 404)
    assert_error(await leave(client, base, gone), 403)


async def test_leave(client: httpx.AsyncClient, base: str, room: str) -> None:
    async with (
        join(client, base, room) as a,
        join(client, base, room) as b,
        join(client, base, room) as c,
    ):
        for _ in range(2):
            await a.stream.next()
        await b.stream.next()
        response = await leave(client, base, b)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.headers["access-control-allow-origin"] == "*"
        assert response.json() == {"success": True}
        await _assert_left(client, base, b, a, c)
        # Its credentials now make a new session, not a resumed one.
        async with join(client, base, room, session_id=b.session_id, token=b.token) as b2:
            assert not b2.resumed and b2.session_id != b.session_id
            assert b2.roster == [a.session_id, c.session_id, b2.session_id]


async def test_leave_by_beacon(client: httpx.AsyncClient, base: str, room: str) -> None:
    """``navigator.sendBeacon(url, JSON.stringify(body))``: text/plain, with a length."""
    async with join(client, base, room) as a, join(client, base, room) as b:
        await a.stream.next()
        content = json.dumps({"sender": b.session_id, "token": b.token}).encode()
        response = await client.post(
            f"{base}/api/leave",
            params={"room": room},
            content=content,
            headers={"Content-Type": "text/plain;charset=UTF-8", "Origin": "https://app.example"},
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"success": True}
        await _assert_left(client, base, b, a)


async def test_last_one_leaves(client: httpx.AsyncClient, base: str, room: str) -> None:
    async with join(client, base, room) as a:
        assert (await leave(client, base, a)).status_code == 200
        await _assert_left(client, base, a)
    async with join(client, base, room) as fresh:
        assert fresh.roster == [fresh.session_id]


PLACES: list[tuple[str, bool, dict[str, str], int]] = [
    ("x-token", False, {"X-Token": "T"}, 200),
    ("bearer", False, {"Authorization": "Bearer T"}, 200),
    ("body+both", True, {"X-Token": "T", "Authorization": "Bearer T"}, 200),
    ("body-vs-x-token", True, {"X-Token": "OTHER"}, 403),
    ("body-vs-bearer", True, {"Authorization": "Bearer OTHER"}, 403),
    ("x-token-wrong", False, {"X-Token": "OTHER"}, 403),
]


@pytest.mark.parametrize(
    ("in_body", "headers", "status"), [p[1:] for p in PLACES], ids=[p[0] for p in PLACES]
)
async def test_leave_token_places(
    client: httpx.AsyncClient,
    base: str,
    room: str,
    in_body: bool,
    headers: dict[str, str],
    status: int,
) -> None:
    async with join(client, base, room) as a, join(client, base, room) as b:
        await a.stream.next()
        other = str(uuid.uuid4())
        headers = {key: _resolve(value, b.token, other) for key, value in headers.items()}
        body: dict[str, Any] = {"sender": b.session_id}
        if in_body:
            body["token"] = b.token
        response = await post(client, base, "leave", room, body, headers=headers)
        if status == 200:
            assert response.status_code == 200, response.text
            await _assert_left(client, base, b, a)
        else:
            assert_error(response, status)
            assert await sync(client, b) == []  # still there, stream open
            assert await sync(client, a) == []


def _resolve(value: str, token: str, other: str) -> str:
    """``T`` is the session's token, ``OTHER`` another UUID ("Bearer" has no capital T)."""
    return value.replace("OTHER", other) if "OTHER" in value else value.replace("T", token)


async def test_leave_refused(client: httpx.AsyncClient, base: str, room: str) -> None:
    async with join(client, base, room) as a, join(client, base, room) as b:
        await a.stream.next()
        for body, status in (
            ({"sender": b.session_id, "token": str(uuid.uuid4())}, 403),
            ({"sender": b.session_id, "token": a.token}, 403),
            ({"sender": str(uuid.uuid4()), "token": b.token}, 403),
            ({"token": b.token}, 400),
            ({"sender": "b", "token": b.token}, 400),
            ({"sender": b.session_id}, 400),
            ({"sender": b.session_id, "token": "secret"}, 400),
            ([b.session_id, b.token], 400),
        ):
            assert_error(await post(client, base, "leave", room, body), status)
        body = {"sender": b.session_id, "token": b.token}
        assert_error(await client.post(f"{base}/api/leave", json=body), 400)  # no room
        assert_error(await post(client, base, "leave", "", body), 400)
        # A session of this room cannot leave another one.
        assert_error(await post(client, base, "leave", new_room(), body), 403)
        assert await sync(client, b) == []
        assert await sync(client, a) == []


async def test_leave_twice(client: httpx.AsyncClient, base: str, room: str) -> None:
    async with join(client, base, room) as a:
        assert (await leave(client, base, a)).status_code == 200
        assert_error(await leave(client, base, a), 403)
