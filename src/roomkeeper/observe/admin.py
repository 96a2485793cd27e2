"""The admin view: which rooms exist and who is in them, for operators. Off by default.

``GET /admin/rooms?after=&limit=`` pages through stored rooms (by name) without waking
any; ``GET /admin/rooms/NAME`` shows one room's sessions, asking the room itself, which
wakes it if it was hibernated. Both need ``Authorization: Bearer <admin token>``. No
answer ever holds a session token.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

import attrs
from quart import Response, request

from roomkeeper_actors.signaling.messages import Inspect
from roomkeeper_actors.signaling.storage import SESSION

from ..http.errors import ApiError
from ..http.parsing import MAX_ROOM_BYTES, HeaderLookup, parse_query
from ..jsonutil import dumps, loads
from ..runtime import ActorSystem, HandlerError, Overloaded, StorageError, WallClock
from ..runtime.ids import ActorId

__all__ = ["DEFAULT_PAGE", "MAX_PAGE", "ActivityTracker", "AdminView"]

DEFAULT_PAGE = 100
MAX_PAGE = 1000
REALM = 'Bearer realm="roomkeeper admin"'


class ActivityTracker:
    """The wall-clock time of the last successful API request (connect, signal, leave)
    that named each room, as the HTTP layer saw it; admin requests never count. Bounded:
    the rooms least recently used are forgotten first."""

    def __init__(self, clock: WallClock, capacity: int = 100_000) -> None:
        self.clock = clock
        self.capacity = capacity
        self.last: dict[str, float] = {}

    def touch(self, actor: ActorId) -> None:
        last = self.last
        last.pop(actor.hex, None)  # re-insert: dict order is recency order
        last[actor.hex] = self.clock.now()
        if len(last) > self.capacity:
            del last[next(iter(last))]

    def get(self, actor: ActorId) -> float | None:
        return self.last.get(actor.hex)


def _json(value: Any, status: int = 200) -> Response:
    return Response(dumps(value), status=status, headers={"Content-Type": "application/json"})


class AdminView:
    """The admin endpoints over one actor system; ``token`` empty means disabled."""

    def __init__(self, system: ActorSystem, namespace: str) -> None:
        self.system = system
        self.namespace = namespace
        self.token = ""
        self.tracker: ActivityTracker | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.token)

    def enable(self, token: str) -> None:
        """Turn the view on with ``token`` (empty: off), tracking activity meanwhile."""
        self.token = token
        if not token:
            self.tracker = None
        elif self.tracker is None:
            self.tracker = ActivityTracker(self.system.clock)

    # -- access ------------------------------------------------------------------------
    def authorize(self, headers: HeaderLookup) -> None:
        """401 without a bearer token, 403 with a wrong one (compared in constant time)."""
        value = headers.get("Authorization")
        scheme, _, given = (value or "").strip().partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given:
            raise ApiError(
                401, "Unauthorized: an admin bearer token is required", {"WWW-Authenticate": REALM}
            )
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            raise ApiError(403, "Forbidden: wrong admin token")

    # -- views -------------------------------------------------------------------------
    async def rooms(self) -> Response:
        self.authorize(request.headers)
        after, limit = _page(parse_query(request.query_string))
        backend = self.system.backend
        try:
            names = await backend.names(self.namespace, after=after, limit=limit)
            rooms = [await self._summary(name) for name in names]
        except StorageError as exc:
            raise _storage_failed() from exc
        more = len(names) == limit
        return _json({"rooms": rooms, "next": names[-1] if more and names else None})

    async def room(self, name: str) -> Response:
        self.authorize(request.headers)
        if len(name.encode("utf-8", "surrogatepass")) > MAX_ROOM_BYTES:
            raise ApiError(400, f"room name longer than {MAX_ROOM_BYTES} UTF-8 bytes")
        stub = self.system.get(self.namespace, name)
        live = self.system.is_live(stub.id)
        try:
            if not live:
                record = await self.system.backend.load(stub.id)
                if not _sessions(record.values):
                    raise ApiError(404, "no such room")
            infos = await stub.ask(Inspect())
        except Overloaded as exc:
            raise ApiError(503, f"Service Unavailable: {exc}", {"Retry-After": "1"}) from exc
        except StorageError as exc:
            raise _storage_failed() from exc
        except HandlerError as exc:
            raise ApiError(500, "Internal Server Error: the room failed") from exc
        sessions = [_session(info) for info in infos if info is not None]
        return _json(
            {
                "room": name,
                "live": live,
                "streams": len(self.system.streams.of(stub.id)),
                "last_activity": self._last(stub.id),
                "sessions": sessions,
            }
        )

    async def _summary(self, name: str) -> dict[str, Any]:
        actor = self.system.get(self.namespace, name).id
        record = await self.system.backend.load(actor)
        sessions = _sessions(record.values)
        return {
            "room": name,
            "live": self.system.is_live(actor),
            "peers": len(sessions),
            "connected": sum(1 for s in sessions if s.get("expires_at") is None),
            "streams": len(self.system.streams.of(actor)),
            "last_activity": self._last(actor),
        }

    def _last(self, actor: ActorId) -> float | None:
        if self.tracker is None:
            return None
        when = self.tracker.get(actor)
        return None if when is None else round(when, 3)


def _storage_failed() -> ApiError:
    return ApiError(503, "Service Unavailable: storage failed", {"Retry-After": "1"})


def _page(query: Mapping[str, str]) -> tuple[str, int]:
    after = query.get("after", "")
    text = query.get("limit", "")
    if not text:
        return after, DEFAULT_PAGE
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise ApiError(400, f"limit must be an integer from 1 to {MAX_PAGE}")
    return after, int(text)


def _sessions(values: Mapping[str, bytes]) -> list[dict[str, Any]]:
    """The stored session records of a room (read for their presence only)."""
    out = []
    for key, raw in values.items():
        if key.startswith(SESSION):
            record = loads(raw)
            out.append({"expires_at": record.get("expires_at")})  # nothing else, no token
    return out


def _session(info: Any) -> dict[str, Any]:
    """A session's public facts. Neither its token nor any of its event ids: an event id
    is a credential too (``Last-Event-ID`` alone resumes the session)."""
    return attrs.asdict(info, filter=lambda a, _: "token" not in a.name and a.name != "id_hwm")
