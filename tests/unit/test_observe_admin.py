"""The admin view in process: off by default, bearer-protected, paged, token-free."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from roomkeeper.http.app import ROOMS, create_app
from roomkeeper.http.codec import SseCodec
from roomkeeper.observe import ActivityTracker, observability
from roomkeeper.runtime import ActorSystem, Binding, MemoryBackend, open_actor_system
from roomkeeper.runtime.ids import ActorId
from roomkeeper_actors.signaling.messages import Connect, Joined

TOKEN = "admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def system() -> AsyncIterator[ActorSystem]:
    async with open_actor_system(
        {ROOMS: Binding("roomkeeper_actors.signaling.room:Room")},
        codec=SseCodec(1000),
        backend=MemoryBackend(),
    ) as system:
        yield system


@pytest.fixture
def app(system: ActorSystem) -> Quart:
    return create_app(system)


@pytest.fixture
async def client(app: Quart) -> AsyncIterator[Client]:
    async with app.test_app() as test_app:
        yield test_app.test_client()


async def body(response: Any) -> Any:
    return orjson.loads(await response.get_data())


async def join(system: ActorSystem, room: str) -> tuple[str, str]:
    """A new session in ``room``: its id and its token (read off its stream)."""
    joined = await system.get(ROOMS, room).ask(Connect())
    assert isinstance(joined, Joined)
    stream = system.streams.get(joined.stream_id)
    assert stream is not None
    first = stream.buffer[0].split(b"data: ", 1)[1].split(b"\n", 1)[0]
    hello = orjson.loads(first)
    return hello["session_id"], hello["token"]


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
@pytest.mark.parametrize("path", ["/admin/rooms", "/admin/rooms/a", "/admin/rooms/a/b"])
async def test_disabled_by_default_every_admin_path_is_404(
    client: Client, path: str, method: str
) -> None:
    response = await client.open(path, method=method, headers=AUTH)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    assert "error" in await body(response)


async def test_missing_token_is_401_with_a_challenge(app: Quart, client: Client) -> None:
    observability(app).enable_admin(TOKEN)
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer"}):
        response = await client.get("/admin/rooms", headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "error" in await body(response)


async def test_wrong_token_is_403(app: Quart, client: Client) -> None:
    observability(app).enable_admin(TOKEN)
    for wrong in (TOKEN + "x", TOKEN[:-1], "é" * 20):
        for path in ("/admin/rooms", "/admin/rooms/r"):
            response = await client.get(path, headers={"Authorization": f"Bearer {wrong}"})
            assert response.status_code == 403
            assert TOKEN not in (await response.get_data()).decode()


async def test_disabling_again_hides_the_routes(app: Quart, client: Client) -> None:
    obs = observability(app)
    obs.enable_admin(TOKEN)
    assert (await client.get("/admin/rooms", headers=AUTH)).status_code == 200
    obs.enable_admin("")
    assert (await client.get("/admin/rooms", headers=AUTH)).status_code == 404


async def test_rooms_are_paged_by_name(app: Quart, client: Client, system: ActorSystem) -> None:
    observability(app).enable_admin(TOKEN)
    for room in ("c", "a", "b/with slash", "d"):
        await join(system, room)
    await join(system, "a")
    first = await body(await client.get("/admin/rooms?limit=2", headers=AUTH))
    assert [r["room"] for r in first["rooms"]] == ["a", "b/with slash"]
    assert first["next"] == "b/with slash"
    a = first["rooms"][0]
    assert (a["peers"], a["connected"], a["streams"], a["live"]) == (2, 2, 2, True)
    rest = await body(
        await client.get("/admin/rooms", headers=AUTH, query_string={"after": first["next"]})
    )
    assert [r["room"] for r in rest["rooms"]] == ["c", "d"]
    assert rest["next"] is None


@pytest.mark.parametrize("limit", ["0", "1001", "x", "-1", "1.5"])
async def test_bad_limits_are_400(app: Quart, client: Client, limit: str) -> None:
    observability(app).enable_admin(TOKEN)
    response = await client.get("/admin/rooms", headers=AUTH, query_string={"limit": limit})
    assert response.status_code == 400


async def test_a_room_shows_its_sessions_without_tokens(
    app: Quart, client: Client, system: ActorSystem
) -> None:
    observability(app).enable_admin(TOKEN)
    one, token_one = await join(system, "room/1")
    two, token_two = await join(system, "room/1")
    response = await client.get("/admin/rooms/room%2F1", headers=AUTH)
    assert response.status_code == 200
    raw = (await response.get_data()).decode()
    assert token_one not in raw and token_two not in raw and "token" not in raw
    data = orjson.loads(raw)
    assert data["room"] == "room/1" and data["live"] is True and data["streams"] == 2
    assert [s["session_id"] for s in data["sessions"]] == [one, two]
    first = data["sessions"][0]
    assert first["connected"] is True and first["expires_at"] is None
    assert first["queued"] == 0 and "id_hwm" not in first  # an event id resumes a session


async def test_an_unknown_room_is_404_and_is_not_woken(
    app: Quart, client: Client, system: ActorSystem
) -> None:
    observability(app).enable_admin(TOKEN)
    response = await client.get("/admin/rooms/nobody-here", headers=AUTH)
    assert response.status_code == 404
    assert not system.is_live(ActorId(ROOMS, "nobody-here"))
    assert system.snapshot()[0].activations == 0


async def test_a_long_room_name_is_400(app: Quart, client: Client) -> None:
    observability(app).enable_admin(TOKEN)
    response = await client.get("/admin/rooms/" + "x" * 257, headers=AUTH)
    assert response.status_code == 400


async def test_last_activity_comes_from_api_requests_only(
    app: Quart, client: Client, system: ActorSystem
) -> None:
    obs = observability(app)
    obs.enable_admin(TOKEN)
    await join(system, "quiet")  # straight to the actor: the HTTP layer saw nothing
    listed = await body(await client.get("/admin/rooms", headers=AUTH))
    assert listed["rooms"][0]["last_activity"] is None
    await client.get("/admin/rooms/quiet", headers=AUTH)  # admin requests do not count
    body_bytes = b'{"sender": "x"}'
    await client.post(
        "/api/leave?room=quiet", data=body_bytes, headers={"Content-Length": str(len(body_bytes))}
    )  # a 400 does not count either
    listed = await body(await client.get("/admin/rooms", headers=AUTH))
    assert listed["rooms"][0]["last_activity"] is None
    assert obs.admin.tracker is not None
    obs.admin.tracker.touch(ActorId(ROOMS, "quiet"))
    listed = await body(await client.get("/admin/rooms", headers=AUTH))
    assert listed["rooms"][0]["last_activity"] == pytest.approx(system.clock.now(), abs=5)


def test_activity_tracker_is_bounded() -> None:
    class Clock:
        t = 0.0

        def now(self) -> float:
            self.t += 1
            return self.t

    tracker = ActivityTracker(Clock(), capacity=3)  # type: ignore[arg-type]
    ids = [ActorId(ROOMS, str(i)) for i in range(4)]
    for actor in ids[:3]:
        tracker.touch(actor)
    tracker.touch(ids[0])  # most recent again
    tracker.touch(ids[3])  # evicts the least recent: ids[1]
    assert tracker.get(ids[1]) is None
    assert [tracker.get(a) for a in (ids[0], ids[2], ids[3])] == [4.0, 3.0, 5.0]
