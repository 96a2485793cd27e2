"""``POST /api/ice-servers?room=R``: fresh ICE servers (new TURN credentials) for a session.

The session proves itself as for ``POST /api/leave``: its id in the body (``session_id``,
or ``sender`` as the other POSTs name it) and its token in the body, ``X-Token`` or
``Authorization: Bearer``. The room checks the token; the answer is
``{"ice_servers": [...], "ttl": seconds}`` (see roomkeeper/ice.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from roomkeeper_actors.signaling.messages import GetIceServers, IceConfig

from ..jsonutil import dumps
from .cors import CorsPolicy
from .errors import ApiError
from .parsing import HeaderLookup, check_uuid, post_credentials

__all__ = ["ROUTE", "ice_credentials", "install"]

ROUTE = "/api/ice-servers"


def ice_credentials(body: Mapping[str, Any], headers: HeaderLookup) -> tuple[str, str]:
    """``(session_id, token)`` of the POST: the id as ``session_id`` or ``sender`` (both
    given must agree, else 400), the token as ``post_credentials`` reads it."""
    ids = [body.get(name) for name in ("session_id", "sender") if body.get(name) is not None]
    if not ids:
        raise ApiError(400, "session_id missing")
    checked = {check_uuid(value, "session_id") for value in ids}
    if len(checked) > 1:
        raise ApiError(400, "session_id and sender differ")
    return post_credentials({**body, "sender": checked.pop()}, headers)


def install(
    app: QuartTrio,
    post_body: Callable[[], Awaitable[tuple[str, dict[str, Any]]]],
    ask: Callable[[str, Any], Awaitable[Any]],
    cors: CorsPolicy,
) -> None:
    """Add the route and its CORS preflight to ``app``. ``post_body`` reads and checks a
    POST's room and JSON body; ``ask`` asks a room (refusals raise `ApiError`)."""

    @app.post(ROUTE)
    async def ice_servers() -> Response:
        room, body = await post_body()
        session_id, token = ice_credentials(body, request.headers)
        reply = await ask(room, GetIceServers(session_id, token))
        assert isinstance(reply, IceConfig)
        answer = dumps({"ice_servers": reply.ice_servers, "ttl": reply.ttl})
        return Response(answer, headers={"Content-Type": "application/json"})

    @app.route(ROUTE, methods=["OPTIONS"])
    async def ice_servers_preflight() -> Response:
        headers = cors.preflight_headers(
            request.headers.get("Origin"),
            request.headers.get("Access-Control-Request-Method"),
            request.headers.get("Access-Control-Request-Headers"),
        )
        return Response(b"", status=204, headers=headers)
