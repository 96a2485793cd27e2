"""The admin view in process: off by default, bearer-protected, paged; it shows what the
runtime knows and what an actor's ``describe()`` allows, never its storage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from httpx import AsyncClient as Client
from quart_trio import QuartTrio

from roomkeeper.http.app import ROOMS, Application, create_app
from roomkeeper.http.codec import SseCodec
from roomkeeper.jsonutil import dumps
from roomkeeper.observe import ActivityTracker, AdminView
from roomkeeper.runtime import (
    Actor,
    ActorSystem,
    Binding,
    MemoryBackend,
    WallClock,
    open_actor_system,
)
from roomkeeper.runtime.ids import ActorId
from roomkeeper.runtime.storage import MemoryCluster, WriteSet
from roomkeeper.signaling import Connect, Joined

from ..support.asgi import asgi_client

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
def app(system: ActorSystem) -> Application:
    return create_app(system)


@pytest.fixture
async def client(app: Application) -> AsyncIterator[Client]:
    async with asgi_client(app) as client:
        yield client


async def body(response: Any) -> Any:
    return orjson.loads(response.content)


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
    response = await client.request(method, path, headers=AUTH)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    assert "error" in await body(response)


async def test_missing_token_is_401_with_a_challenge(app: Application, client: Client) -> None:
    app.observability.enable_admin(TOKEN)
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer"}):
        response = await client.get("/admin/rooms", headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "error" in await body(response)


async def test_wrong_token_is_403(app: Application, client: Client) -> None:
    app.observability.enable_admin(TOKEN)
    for wrong in (TOKEN + "x", TOKEN[:-1], "é" * 20):
        for path in ("/admin/rooms", "/admin/rooms/r"):
            bearer = f"Bearer {wrong}".encode()  # UTF-8 on the wire, as a browser sends it
            response = await client.get(path, headers={"Authorization": bearer})
            assert response.status_code == 403
            assert TOKEN not in response.content.decode()


async def test_disabling_again_hides_the_routes(app: Application, client: Client) -> None:
    obs = app.observability
    obs.enable_admin(TOKEN)
    assert (await client.get("/admin/rooms", headers=AUTH)).status_code == 200
    obs.enable_admin("")
    assert (await client.get("/admin/rooms", headers=AUTH)).status_code == 404


async def test_rooms_are_paged_by_name(
    app: Application, client: Client, system: ActorSystem
) -> None:
    app.observability.enable_admin(TOKEN)
    for room in ("c", "a", "b/with slash", "d"):
        await join(system, room)
    await join(system, "a")
    first = await body(await client.get("/admin/rooms?limit=2", headers=AUTH))
    assert [r["name"] for r in first["actors"]] == ["a", "b/with slash"]
    assert first["next"] == "b/with slash"
    a = first["actors"][0]
    assert a == {"name": "a", "live": True, "streams": 2, "last_activity": None}
    rest = await body(
        await client.get("/admin/rooms", headers=AUTH, params={"after": first["next"]})
    )
    assert [r["name"] for r in rest["actors"]] == ["c", "d"]
    assert rest["next"] is None


@pytest.mark.parametrize(
    "limit", ["0", "1001", "x", "-1", "1.5", "²", "\u0661\u0660", "\uff11", " 5", "0" * 5000 + "1"]
)
async def test_bad_limits_are_400(app: Application, client: Client, limit: str) -> None:
    app.observability.enable_admin(TOKEN)
    response = await client.get("/admin/rooms", headers=AUTH, params={"limit": limit})
    assert response.status_code == 400
    assert "limit" in (await body(response))["error"]


async def test_a_room_shows_its_described_sessions_without_tokens(
    app: Application, client: Client, system: ActorSystem
) -> None:
    app.observability.enable_admin(TOKEN)
    one, token_one = await join(system, "room/1")
    two, token_two = await join(system, "room/1")
    response = await client.get("/admin/rooms/room%2F1", headers=AUTH)
    assert response.status_code == 200
    raw = response.content.decode()
    assert token_one not in raw and token_two not in raw and "token" not in raw
    data = orjson.loads(raw)
    assert data["name"] == "room/1" and data["live"] is True and data["streams"] == 2
    sessions = data["view"]["sessions"]
    assert [s["session_id"] for s in sessions] == [one, two]
    assert sessions[0] == {
        "session_id": one,
        "connected": True,
        "expires_at": None,
        "queued": 0,
        "join_seq": 0,
        "replayable": 0,
    }  # no token, and no event id: an event id resumes a session


SECRET = "hunter2-" + "s" * 24


async def test_a_secret_stored_under_any_name_is_never_shown(
    app: Application, client: Client, system: ActorSystem
) -> None:
    """A room whose storage holds a secret under names nobody filters for (an extra field
    of a session record, a key of its own) shows none of it: the view lists what the
    room's ``describe()`` allows, and reads nothing of its storage."""
    app.observability.enable_admin(TOKEN)
    sid, token = "0b7d901d-0000-4000-8000-000000000001", "tok-" + "t" * 32
    record = {"token": token, "key": "7", "seq": 0, "expires_at": system.clock.now() + 60}
    stored = WriteSet(
        puts={
            f"s/{sid}": dumps({**record, "hwm": "0", "pw": SECRET}),
            "x/credential": dumps({"passphrase": SECRET, "k": [SECRET]}),
        }
    )
    await system.backend.commit(ActorId(ROOMS, "vault"), stored)
    for path in ("/admin/rooms", "/admin/rooms/vault"):
        response = await client.get(path, headers=AUTH)
        assert response.status_code == 200
        raw = response.content.decode()
        assert SECRET not in raw and "hunter2" not in raw and token not in raw
    detail = await body(await client.get("/admin/rooms/vault", headers=AUTH))
    assert [s["session_id"] for s in detail["view"]["sessions"]] == [sid]  # it was read


async def test_an_unknown_room_is_404_and_is_not_woken(
    app: Application, client: Client, system: ActorSystem
) -> None:
    app.observability.enable_admin(TOKEN)
    for name in ("nobody-here", "x" * 300):
        response = await client.get("/admin/rooms/" + name, headers=AUTH)
        assert response.status_code == 404
        assert not system.is_live(ActorId(ROOMS, name))
    assert system.snapshot()[0].activations == 0


async def test_last_activity_comes_from_api_requests_only(
    app: Application, client: Client, system: ActorSystem
) -> None:
    obs = app.observability
    obs.enable_admin(TOKEN)
    await join(system, "quiet")  # straight to the actor: the HTTP layer saw nothing
    listed = await body(await client.get("/admin/rooms", headers=AUTH))
    assert listed["actors"][0]["last_activity"] is None
    await client.get("/admin/rooms/quiet", headers=AUTH)  # admin requests do not count
    body_bytes = b'{"sender": "x"}'
    await client.post("/api/leave?room=quiet", content=body_bytes)  # a 400 does not count either
    listed = await body(await client.get("/admin/rooms", headers=AUTH))
    assert listed["actors"][0]["last_activity"] is None
    assert obs.admin.tracker is not None
    obs.admin.tracker.touch(ActorId(ROOMS, "quiet"))
    listed = await body(await client.get("/admin/rooms", headers=AUTH))
    assert listed["actors"][0]["last_activity"] == pytest.approx(system.clock.now(), abs=5)


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


# --- any namespace: the view knows nothing of rooms ---------------------------------------


class Vault(Actor):
    """Keeps a secret in its storage; describes itself by a count only."""

    async def on_message(self, message: Any) -> Any:
        self.ctx.storage.put("secret", SECRET)
        self.ctx.storage.put("opened", self.ctx.storage.get("opened", 0) + 1)

    def describe(self) -> dict[str, Any]:
        return {"opened": self.ctx.storage.get("opened", 0)}


class Mute(Actor):
    """Shows nothing of itself (the default ``describe``)."""

    async def on_message(self, message: Any) -> Any:
        self.ctx.storage.put("secret", SECRET)


@pytest.mark.parametrize(("actor", "view"), [(Vault, {"opened": 2}), (Mute, None)])
async def test_any_namespace_shows_its_actors_described_views(
    actor: type[Actor], view: Any
) -> None:
    async with open_actor_system({"things": Binding(actor)}, codec=SseCodec(1000)) as system:
        app = QuartTrio(__name__)
        admin = AdminView(system, "things")
        admin.enable(TOKEN)
        app.add_url_rule("/things", "things", admin.rooms)
        app.add_url_rule("/things/<path:name>", "thing", admin.room)
        await system.get("things", "one").ask("open")
        await system.get("things", "one").ask("open")
        async with app.test_app() as test_app:
            client = test_app.test_client()
            listed = orjson.loads(await (await client.get("/things", headers=AUTH)).get_data())
            detail = await (await client.get("/things/one", headers=AUTH)).get_data()
            missing = await client.get("/things/two", headers=AUTH)
    assert [a["name"] for a in listed["actors"]] == ["one"]
    assert orjson.loads(detail)["view"] == view
    assert SECRET not in detail.decode()
    assert missing.status_code == 404


async def test_a_room_served_by_another_node_is_421_naming_it() -> None:
    cluster = MemoryCluster(WallClock())
    a_node, b_node = cluster.node("a", "http://a.example"), cluster.node("b", "http://b.example")
    binding = {ROOMS: Binding("roomkeeper_actors.signaling.room:Room")}
    async with (
        open_actor_system(binding, codec=SseCodec(1000), backend=a_node) as a,
        open_actor_system(binding, codec=SseCodec(1000), backend=b_node) as b,
    ):
        await join(a, "shared")
        app = create_app(b)
        app.observability.enable_admin(TOKEN)
        async with asgi_client(app) as client:
            response = await client.get("/admin/rooms/shared", headers=AUTH)
    assert response.status_code == 421
    assert "http://a.example" in (await body(response))["error"]
