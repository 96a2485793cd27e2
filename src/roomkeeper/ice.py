"""ICE servers for clients: STUN URIs, and TURN URIs with short-lived credentials.

TURN credentials follow the TURN REST API convention that coturn implements with
``use-auth-secret`` and ``static-auth-secret``: the username is ``<expiry>:<session id>``
(expiry in whole Unix seconds), the password is base64(HMAC-SHA1(secret, username)).
coturn recomputes the password from the username and refuses it after the expiry, so the
secret never leaves the server and a credential copied from a page dies with its TTL.

The lists are shaped as ``RTCConfiguration.iceServers``: ``{"urls": [...]}`` for STUN,
``{"urls": [...], "username": ..., "credential": ...}`` for TURN. Nothing here reads a
clock or does I/O: the time comes in as an argument.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
from typing import Any

import attrs

__all__ = [
    "MAX_TTL",
    "STUN_SCHEMES",
    "TURN_SCHEMES",
    "IceServers",
    "parse_uris",
    "turn_credential",
    "uri_problem",
]

STUN_SCHEMES = ("stun:",)
TURN_SCHEMES = ("turn:", "turns:")
MAX_TTL = 86_400
"""The longest credential lifetime a server may hand out (one day)."""
_MAX_URI = 512


def parse_uris(text: str) -> tuple[str, ...]:
    """Comma-separated URIs, trimmed, empty entries dropped."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def uri_problem(uri: object, schemes: tuple[str, ...]) -> str | None:
    """What is wrong with ``uri`` as an ICE server URI of one of ``schemes`` (RFC 7064,
    RFC 7065: ``scheme:host[:port][?transport=udp|tcp]``), or None."""
    if not isinstance(uri, str) or not uri:
        return f"{uri!r} is not a URI"
    names = " or ".join(s.rstrip(":") for s in schemes)
    scheme = uri.split(":", 1)[0].lower() + ":"
    if scheme not in schemes:
        return f"{uri[:60]!r} must start with {names}:"
    rest = uri[len(scheme) :]
    if len(uri) > _MAX_URI or not rest or "/" in rest or any(c.isspace() for c in uri):
        return f"{uri[:60]!r} is not a {names} URI like {schemes[0]}host:3478"
    return None


def turn_credential(secret: str, session_id: str, expiry: int) -> tuple[str, str]:
    """``(username, password)`` for the TURN REST API: the username names the expiry and
    the session, the password is the base64 HMAC-SHA1 of the username under ``secret``."""
    username = f"{expiry}:{session_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


@attrs.frozen
class IceServers:
    """What a server hands its clients: STUN URIs, TURN URIs and the TURN secret (kept
    out of the repr), and how long TURN credentials live, in seconds."""

    stun_uris: tuple[str, ...] = ()
    turn_uris: tuple[str, ...] = ()
    secret: str = attrs.field(default="", repr=False)
    ttl: int = 3600

    def __attrs_post_init__(self) -> None:
        if self.turn_uris and not self.secret:
            raise ValueError("TURN URIs need the TURN secret")
        if not 1 <= self.ttl <= MAX_TTL:
            raise ValueError(f"the TURN credential lifetime must be 1 to {MAX_TTL} seconds")

    def for_session(self, session_id: str, now: float) -> list[dict[str, Any]]:
        """The ``iceServers`` list for ``session_id`` at Unix time ``now``: STUN first, then
        TURN with a credential valid for ``ttl`` seconds. Empty when nothing is set."""
        servers: list[dict[str, Any]] = []
        if self.stun_uris:
            servers.append({"urls": list(self.stun_uris)})
        if self.turn_uris:
            expiry = math.floor(now) + self.ttl
            username, password = turn_credential(self.secret, session_id, expiry)
            servers.append(
                {"urls": list(self.turn_uris), "username": username, "credential": password}
            )
        return servers
