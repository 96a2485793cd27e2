"""ICE servers on the wire: the ``session`` event's ``ice_servers`` and ``POST
/api/ice-servers``, with a real server whose TURN secret comes from the environment."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from roomkeeper.ice import turn_credential

from .conftest import (
    ServerProcess,
    assert_error,
    join,
    leave,
    new_room,
    post,
    start_shared,
)

TURN_SECRET = "turn-shared-secret-for-tests-0123"
ADMIN = "admin-token-for-ice-tests-0123"
TTL = 600


@pytest.fixture(scope="module")
def ice_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    patch = pytest.MonkeyPatch()
    patch.setenv("ROOMKEEPER_TURN_SECRET", TURN_SECRET)
    try:
        server = start_shared(
            tmp_path_factory.mktemp("ice"),
            stun_uris="stun:127.0.0.1:3478",
            turn_uris="turn:127.0.0.1:3478?transport=udp,turns:127.0.0.1:5349",
            turn_ttl=str(TTL),
            admin_token=ADMIN,
        )
    finally:
        patch.undo()
    yield server
    server.kill()


def check_servers(servers: list[dict[str, str]], session_id: str, since: float) -> None:
    stun, turn = servers
    assert stun == {"urls": ["stun:127.0.0.1:3478"]}
    assert turn["urls"] == ["turn:127.0.0.1:3478?transport=udp", "turns:127.0.0.1:5349"]
    expiry_text, _, who = turn["username"].partition(":")
    assert who == session_id
    assert since + TTL - 1 <= int(expiry_text) <= time.time() + TTL
    assert (turn["username"], turn["credential"]) == turn_credential(
        TURN_SECRET, session_id, int(expiry_text)
    )


async def test_the_session_event_and_the_endpoint_give_credentials(
    client: httpx.AsyncClient, ice_server: ServerProcess
) -> None:
    base, room = ice_server.url, new_room()
    since = time.time()
    async with join(client, base, room) as peer:
        check_servers(peer.first[0].data["ice_servers"], peer.session_id, since)
        sid, token = peer.session_id, peer.token
        ways = [
            ({"session_id": sid, "token": token}, {}),
            ({"sender": sid, "token": token}, {}),
            ({"session_id": sid, "sender": sid.upper()}, {"X-Token": token}),
            ({"session_id": sid}, {"Authorization": f"Bearer {token}"}),
        ]
        for body, headers in ways:
            response = await post(client, base, "ice-servers", room, body, headers=headers)
            assert response.status_code == 200, response.text
            answer = response.json()
            assert set(answer) == {"ice_servers", "ttl"} and answer["ttl"] == TTL
            check_servers(answer["ice_servers"], sid, since)
        assert (await leave(client, base, peer)).status_code == 200
        gone = await post(client, base, "ice-servers", room, {"session_id": sid, "token": token})
        assert "unknown sender or wrong token" in assert_error(gone, 403)["error"]


async def test_wrong_credentials(client: httpx.AsyncClient, ice_server: ServerProcess) -> None:
    base, room = ice_server.url, new_room()
    async with join(client, base, room) as a, join(client, base, room) as b:
        sid = a.session_id
        for body, status in [
            ({"session_id": sid, "token": b.token}, 403),  # another session's token
            ({"session_id": b.session_id, "token": a.token}, 403),
            ({"session_id": "00000000-0000-4000-8000-000000000000", "token": a.token}, 403),
            ({"session_id": sid}, 400),  # no token
            ({"token": a.token}, 400),  # no session
            ({"session_id": sid, "sender": b.session_id, "token": a.token}, 400),
            ({"session_id": "not-a-uuid", "token": a.token}, 400),
        ]:
            response = await post(client, base, "ice-servers", room, body)
            error = assert_error(response, status)["error"]
            assert a.token not in error and b.token not in error
        other_room = await post(
            client, base, "ice-servers", new_room(), {"session_id": sid, "token": a.token}
        )
        assert_error(other_room, 403)
        differ = await post(
            client,
            base,
            "ice-servers",
            room,
            {"session_id": sid, "token": a.token},
            headers={"X-Token": b.token},
        )
        assert_error(differ, 403)
        missing_room = await client.post(
            f"{base}/api/ice-servers", json={"session_id": sid, "token": a.token}
        )
        assert_error(missing_room, 400)


async def test_the_preflight(client: httpx.AsyncClient, ice_server: ServerProcess) -> None:
    response = await client.options(
        f"{ice_server.url}/api/ice-servers",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-token",
        },
    )
    assert response.status_code == 204
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "X-Token" in response.headers["access-control-allow-headers"]


async def test_the_secret_shows_nowhere(
    client: httpx.AsyncClient, ice_server: ServerProcess
) -> None:
    base, room = ice_server.url, new_room()
    async with join(client, base, room) as peer:
        await post(
            client, base, "ice-servers", room, {"session_id": peer.session_id, "token": peer.token}
        )
        auth = {"Authorization": f"Bearer {ADMIN}"}
        views = [
            await client.get(f"{base}/metrics"),
            await client.get(f"{base}/admin/rooms", headers=auth),
            await client.get(f"{base}/admin/rooms/{room}", headers=auth),
        ]
        for view in views:
            assert view.status_code == 200 and TURN_SECRET not in view.text
    assert TURN_SECRET not in ice_server.log()


async def test_without_settings_the_list_is_empty(
    client: httpx.AsyncClient, shared_server: ServerProcess
) -> None:
    room = new_room()
    async with join(client, shared_server.url, room) as peer:
        assert peer.first[0].data["ice_servers"] == []
        response = await post(
            client,
            shared_server.url,
            "ice-servers",
            room,
            {"session_id": peer.session_id, "token": peer.token},
        )
        assert response.json() == {"ice_servers": [], "ttl": 3600}
