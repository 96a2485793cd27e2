"""The ``ice_servers`` list that the server may send (in the ``session`` event and from
``POST /api/ice-servers``): an RTCConfiguration ``iceServers`` list,
``[{"urls": [...], "username": ..., "credential": ...}]``."""

from __future__ import annotations

from typing import Any

__all__ = ["expiry", "parse_ice_servers", "refresh_wait"]


def parse_ice_servers(data: dict[str, Any]) -> list[dict[str, Any]] | None:
    """``data["ice_servers"]`` as a list of fresh dicts, or None if it is missing or not
    that shape: each entry has ``urls`` (a string or a list of strings) and, optionally,
    string ``username`` and ``credential``. Other keys are kept as they are."""
    servers = data.get("ice_servers")
    if not isinstance(servers, list) or not all(_valid(s) for s in servers):
        return None
    return [dict(server) for server in servers]


def _valid(server: object) -> bool:
    if not isinstance(server, dict):
        return False
    urls = server.get("urls")
    if isinstance(urls, list):
        urls_ok = bool(urls) and all(isinstance(url, str) for url in urls)
    else:
        urls_ok = isinstance(urls, str)
    return urls_ok and all(
        isinstance(server.get(key, ""), str) for key in ("username", "credential")
    )


REFRESH_AT = 0.8
"""Fresh ICE servers are fetched when this share of the credentials' life has passed."""
MIN_REFRESH_WAIT = 1.0
"""Never refresh sooner than this (seconds), whatever a server says (so never in a loop)."""


def expiry(servers: list[dict[str, Any]]) -> float | None:
    """When the first TURN credential of ``servers`` expires (Unix time), from usernames
    of the TURN REST API form ``<expiry>:<name>``; None if none has that form."""
    times = [
        int(stamp)
        for server in servers
        for stamp, colon, _ in [str(server.get("username", "")).partition(":")]
        if colon and stamp.isascii() and stamp.isdigit()
    ]
    return float(min(times)) if times else None


def refresh_wait(remaining: float) -> float:
    """How long to wait before refreshing credentials that expire in ``remaining`` s."""
    return max(remaining * REFRESH_AT, MIN_REFRESH_WAIT)
