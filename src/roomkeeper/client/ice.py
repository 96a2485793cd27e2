"""The ``ice_servers`` list that the server may send (in the ``session`` event and from
``POST /api/ice-servers``): an RTCConfiguration ``iceServers`` list,
``[{"urls": [...], "username": ..., "credential": ...}]``."""

from __future__ import annotations

from typing import Any

__all__ = ["parse_ice_servers"]


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
