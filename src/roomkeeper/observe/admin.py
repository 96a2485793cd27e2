"""The admin view: which actors of a namespace exist and what each shows of itself, for
operators. Off by default.

``GET /admin/rooms?after=&limit=`` pages through the names with stored state, in name
order, waking none: for each, what the runtime knows (in memory or hibernated, open
streams, last API activity). ``GET /admin/rooms/NAME`` adds the actor's own view, its
``describe()`` (see `roomkeeper.runtime.Actor.describe`), which wakes it if it was
hibernated. Both need ``Authorization: Bearer <admin token>``.

The view never reads what an actor stored, only whether it stored anything: an actor
shows what it chooses to, so a secret can only leak if the actor names it. It knows
nothing of rooms, nor of ``roomkeeper.http``; its errors have the API's shape,
``{"error": "..."}``.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from quart import Response, request

from ..answers import failure_answer, page_size
from ..jsonutil import dumps
from ..runtime import ActorSystem, Elsewhere, RuntimeFailure, StorageError, WallClock
from ..runtime.ids import ActorId

__all__ = ["DEFAULT_PAGE", "MAX_PAGE", "ActivityTracker", "AdminError", "AdminView"]

DEFAULT_PAGE = 100
MAX_PAGE = 1000
REALM = 'Bearer realm="roomkeeper admin"'
JSON = {"Content-Type": "application/json"}


class AdminError(Exception):
    """An admin request refused: its status, message and extra headers."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class ActivityTracker:
    """The wall-clock time of the last successful API request (connect, signal, leave)
    that named each actor, as the HTTP layer saw it; admin requests never count. Bounded:
    the actors least recently used are forgotten first."""

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


class AdminView:
    """The admin endpoints over one namespace of an actor system; ``token`` empty means
    disabled. ``rooms`` and ``room`` are Quart view functions."""

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
    def authorize(self, authorization: str | None) -> None:
        """401 without a bearer token, 403 with a wrong one (compared in constant time)."""
        scheme, _, given = (authorization or "").strip().partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given:
            raise AdminError(
                401, "Unauthorized: an admin bearer token is required", {"WWW-Authenticate": REALM}
            )
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            raise AdminError(403, "Forbidden: wrong admin token")

    # -- views -------------------------------------------------------------------------
    async def rooms(self) -> Response:
        return await _answer(self._list)

    async def room(self, name: str) -> Response:
        return await _answer(lambda: self._describe(name))

    async def _list(self) -> dict[str, Any]:
        self.authorize(request.headers.get("Authorization"))
        after, limit = page(request.args)
        try:
            names = await self.system.backend.names(self.namespace, after=after, limit=limit)
        except StorageError as exc:
            raise _failed(exc, "storage failed") from exc
        actors = [self._facts(self.system.get(self.namespace, name).id) for name in names]
        more = len(names) == limit
        return {"actors": actors, "next": names[-1] if more and names else None}

    async def _describe(self, name: str) -> dict[str, Any]:
        self.authorize(request.headers.get("Authorization"))
        stub = self.system.get(self.namespace, name)
        facts = self._facts(stub.id)
        try:
            if not facts["live"] and not facts["streams"]:
                record = await self.system.backend.load(stub.id)
                if not record.values and record.alarm is None:
                    raise AdminError(404, "nothing stored under that name")
            view = await stub.describe()
        except Elsewhere as exc:  # ask the node that serves it
            raise AdminError(421, f"Misdirected Request: {exc}") from exc
        except RuntimeFailure as exc:
            raise _failed(exc, "the actor failed to describe itself") from exc
        return {**facts, "view": view}

    def _facts(self, actor: ActorId) -> dict[str, Any]:
        """What the runtime knows of an actor, without waking it or reading its storage."""
        return {
            "name": actor.name,
            "live": self.system.is_live(actor),
            "streams": len(self.system.streams.of(actor)),
            "last_activity": self._last(actor),
        }

    def _last(self, actor: ActorId) -> float | None:
        if self.tracker is None:
            return None
        when = self.tracker.get(actor)
        return None if when is None else round(when, 3)


async def _answer(view: Callable[[], Awaitable[dict[str, Any]]]) -> Response:
    try:
        body, status, headers = await view(), 200, {}
    except AdminError as exc:
        body, status, headers = {"error": exc.message}, exc.status, exc.headers
    return Response(dumps(body), status=status, headers={**JSON, **headers})


def _failed(exc: RuntimeFailure, failed: str) -> AdminError:
    answer = failure_answer(exc, failed)
    if answer is None:
        raise exc
    return AdminError(answer.status, answer.reason, answer.headers)


def page(query: Mapping[str, str]) -> tuple[str, int]:
    """``after`` (default: from the start) and ``limit`` (1 to ``MAX_PAGE``, default
    ``DEFAULT_PAGE``; ASCII digits only, else 400)."""
    try:
        limit = page_size(query.get("limit"), default=DEFAULT_PAGE, maximum=MAX_PAGE)
    except ValueError as exc:
        raise AdminError(400, str(exc)) from None
    return query.get("after", ""), limit
